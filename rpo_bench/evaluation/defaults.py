"""What `rpo-bench evaluate` and EvaluateConfig do when told nothing: one place, light enough (no torch) for the
command line to read at start-up."""

from __future__ import annotations

# The defaults of `rpo-bench evaluate` and of EvaluateConfig, in one place: the embedded micro world, judged by its
# oracle (overall and per attribute) and its CLIP.
DEFAULT_MODELS = ("micro-base",)
DEFAULT_PROMPTS = "micro-test"
DEFAULT_METRICS = ("micro-oracle", "micro-oracle:colour", "micro-oracle:shape", "micro-oracle:size",
                   "micro-oracle:position", "micro-oracle:background", "micro-clip")
DEFAULT_BATCH_SIZE = 16
# The command line runs the micro world under both its protocols by default; from Python, protocol=None runs each
# model under its own (tiny models under `tiny`, SD under `spo-ddim20`), which suits a script naming its models.
CLI_DEFAULT_PROTOCOLS = "micro,micro-fast"
