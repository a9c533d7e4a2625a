"""What every stage of rpo-bench stands on: atomic file writes, fingerprints, locks. Imports nothing above it."""
