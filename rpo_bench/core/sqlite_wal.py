"""Opening an SQLite file in WAL mode from several processes at once (torchrun ranks, parallel runs).

Switching a file to WAL takes an exclusive lock for which SQLite does not wait: the busy timeout does not apply,
so the second process to open a new file gets "database is locked" at once. Setting up retries for a few
seconds instead; a file locked for longer than that is a real error for the caller to report.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retry_while_locked(setup: Callable[[], T], attempts: int = 50) -> T:
    """Run `setup` (journal mode, schema, checks), again after a short sleep while the file is locked."""
    for attempt in range(attempts):
        try:
            return setup()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.1 * (1 + attempt % 5))
    raise AssertionError("unreachable: the last attempt returns or raises")


def enable_wal(db: sqlite3.Connection) -> None:
    """WAL lets readers and one writer work together; a file already in WAL mode is left alone, so only the
    first opener ever needs the exclusive lock."""
    if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        db.execute("PRAGMA journal_mode=WAL")
