"""User-facing errors: the CLI prints their message as one line and exits non-zero, without a traceback.

Anything else that escapes is a bug in rpo-bench and keeps its traceback.
"""

from __future__ import annotations


class RpoBenchError(Exception):
    """An error caused by the user's input or environment, explained in one line."""

    exit_code = 2


class UnknownNameError(RpoBenchError):
    """A registry name that does not exist; the message lists the closest matches."""


class BadInputError(RpoBenchError):
    """A value the user gave (flag, file, config) that cannot be used."""


class MissingWeightsError(RpoBenchError):
    """Weights or data that are not on this machine and cannot be fetched (offline)."""
