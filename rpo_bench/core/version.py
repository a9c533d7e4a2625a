"""The package's version, where every layer can read it (a report records it)."""

__version__ = "0.1.0"
