"""The results store: one SQLite file (WAL) with runs, images and scores.

Every write is a transaction and every row has a natural primary key written with INSERT OR IGNORE, so an
evaluate that is killed at any point and run again converges to the same rows as an uninterrupted run, and
several processes (sharded evaluation) can write into one store.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rpo_bench.errors import BadInputError
from rpo_bench.sqlite_wal import enable_wal, retry_while_locked

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,          -- hash of the evaluation config: the same command is the same run
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    config TEXT NOT NULL,             -- JSON: models (full specs), protocol settings, prompts, seeds, metrics
    versions TEXT NOT NULL,           -- JSON: python, torch, diffusers, transformers, open_clip, rpo_bench
    git_commit TEXT
);
CREATE TABLE IF NOT EXISTS images (
    image_key TEXT PRIMARY KEY,       -- generation key: model + protocol fingerprints, dtype, prompt, seed
    model TEXT NOT NULL,
    model_fingerprint TEXT NOT NULL,
    protocol TEXT NOT NULL,
    protocol_fingerprint TEXT NOT NULL,
    protocol_settings TEXT NOT NULL,
    dtype TEXT NOT NULL,
    prompt_set TEXT NOT NULL,
    prompt_index INTEGER NOT NULL,
    category TEXT NOT NULL,
    prompt TEXT NOT NULL,
    seed INTEGER NOT NULL,
    image_sha256 TEXT NOT NULL,
    run_id TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS scores (
    image_key TEXT NOT NULL REFERENCES images(image_key),
    metric TEXT NOT NULL,
    metric_version TEXT NOT NULL,
    value REAL NOT NULL,
    model TEXT NOT NULL,
    protocol_fingerprint TEXT NOT NULL,
    run_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (image_key, metric, metric_version)
);
"""

IMAGE_COLUMNS = ("image_key", "model", "model_fingerprint", "protocol", "protocol_fingerprint", "protocol_settings",
                 "dtype", "prompt_set", "prompt_index", "category", "prompt", "seed", "image_sha256", "run_id",
                 "created_at")


SCHEMA_COLUMNS = {
    "runs": ("run_id", "created_at", "updated_at", "config", "versions", "git_commit"),
    "images": IMAGE_COLUMNS,
    "scores": ("image_key", "metric", "metric_version", "value", "model", "protocol_fingerprint", "run_id",
               "created_at"),
}


def damaged_store_message(path: Path, reason: str) -> str:
    """The one line for a store SQLite cannot use: what is wrong, and the two ways out (nothing is deleted)."""
    return (f"results store {path} is damaged ({reason}); move it aside and rerun (cached images are reused), "
            f"or recover its rows with: sqlite3 {path} .recover | sqlite3 {path.with_name('recovered.sqlite')}")


class ResultsStore:
    def __init__(self, path: Path):
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            raise BadInputError(f"results store {self.path} is a folder; accepted: a file path (e.g. "
                                f"{self.path / 'results.sqlite'})")
        if not self.path.parent.is_dir():
            raise BadInputError(f"cannot write the results store {self.path}: folder {self.path.parent} "
                                "does not exist")
        existed = {suffix: self.path.with_name(self.path.name + suffix).exists() for suffix in ("-wal", "-shm")}
        try:
            self._db = sqlite3.connect(self.path, timeout=120, isolation_level=None)
        except sqlite3.Error as exc:
            raise BadInputError(f"cannot write the results store {self.path}: {exc}") from exc
        try:
            self._initialise()
        except (OSError, sqlite3.Error) as exc:
            self._db.close()
            if isinstance(exc, OSError) or (isinstance(exc, sqlite3.OperationalError) and any(
                    hint in str(exc) for hint in ("locked", "readonly", "unable to open", "disk I/O"))):
                # Not damage; another process may be using the store, so its -wal / -shm files stay.
                raise BadInputError(f"cannot write the results store {self.path}: {exc}") from exc
            # "file is not a database", "database disk image is malformed", or not our tables
            self._remove_new_side_files(existed)
            raise BadInputError(damaged_store_message(self.path, str(exc))) from exc

    def _remove_new_side_files(self, existed: dict[str, bool]) -> None:
        """The -wal / -shm files SQLite created while failing to open a damaged store hold nothing; ones that
        were there before may hold the user's rows and stay."""
        for suffix, was_there in existed.items():
            if not was_there:
                self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)

    def _initialise(self) -> None:
        """Check what is there, then WAL mode and the schema (retried while another process opens it too)."""
        def setup() -> None:
            self._check_existing_tables()  # before anything is written into someone else's file
            enable_wal(self._db)
            self._db.executescript(SCHEMA)
        retry_while_locked(setup)

    def _check_existing_tables(self) -> None:
        """A file of some other program, or a store whose tables are not the ones this version writes, is refused
        as it is; a new (empty) file passes."""
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and not tables & set(SCHEMA_COLUMNS):
            raise sqlite3.DatabaseError(f"an SQLite database without rpo-bench tables: it holds "
                                        f"{', '.join(sorted(tables)[:5])}")
        for table in sorted(tables & set(SCHEMA_COLUMNS)):
            columns = tuple(row[1] for row in self._db.execute(f"PRAGMA table_info({table})"))
            if columns != SCHEMA_COLUMNS[table]:
                raise sqlite3.DatabaseError(f"table {table} has columns ({', '.join(columns)}), expected "
                                            f"({', '.join(SCHEMA_COLUMNS[table])})")

    @contextmanager
    def _reading(self):
        """A page that turns out to be corrupt mid-run gives the same one line as one found on opening."""
        try:
            yield
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as exc:
            raise BadInputError(damaged_store_message(self.path, str(exc))) from exc

    @contextmanager
    def transaction(self):
        with self._reading():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def record_run(self, run_id: str, config: dict[str, Any], versions: dict[str, str], git_commit: str | None) -> None:
        now = time.time()
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                       (run_id, now, now, json.dumps(config, sort_keys=True), json.dumps(versions, sort_keys=True),
                        git_commit))
            db.execute("UPDATE runs SET updated_at = ? WHERE run_id = ?", (now, run_id))

    def add_images(self, rows: Iterable[dict[str, Any]]) -> None:
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                f"INSERT OR IGNORE INTO images VALUES ({','.join('?' * len(IMAGE_COLUMNS))})",
                [tuple(now if c == "created_at" else row[c] for c in IMAGE_COLUMNS) for row in rows],
            )

    def add_scores(self, metric: str, version: str, run_id: str, values: Sequence[tuple[str, float]]) -> None:
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO scores SELECT image_key, ?, ?, ?, model, protocol_fingerprint, ?, ? "
                "FROM images WHERE image_key = ?",
                [(metric, version, float(value), run_id, now, key) for key, value in values],
            )

    def forget_images(self, keys: Sequence[str]) -> None:
        """Drop images (and every score of them) whose cached file was found damaged: they are regenerated and
        rescored, and a score that may have come from the bad file does not survive beside the new ones."""
        keys = list(keys)
        with self.transaction() as db:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                db.execute(f"DELETE FROM scores WHERE image_key IN ({marks})", chunk)
                db.execute(f"DELETE FROM images WHERE image_key IN ({marks})", chunk)

    def has_run(self, run_id: str) -> bool:
        return bool(self.query("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)))

    def existing_images(self, keys: Sequence[str]) -> set[str]:
        return set(self._select_keys("SELECT image_key FROM images WHERE image_key IN ({})", keys, ()))

    def scored_images(self, keys: Sequence[str], metric: str, version: str) -> set[str]:
        return set(self._select_keys(
            "SELECT image_key FROM scores WHERE metric = ? AND metric_version = ? AND image_key IN ({})",
            keys, (metric, version)))

    def _select_keys(self, sql: str, keys: Sequence[str], params: tuple) -> list[str]:
        found: list[str] = []
        keys = list(keys)
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            with self._reading():
                rows = self._db.execute(sql.format(",".join("?" * len(chunk))), (*params, *chunk))
                found.extend(row[0] for row in rows)
        return found

    def image_rows(self, keys: Sequence[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        keys = list(keys)
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            with self._reading():
                cursor = self._db.execute(
                    f"SELECT * FROM images WHERE image_key IN ({','.join('?' * len(chunk))})", chunk)
                names = [d[0] for d in cursor.description]
                rows.extend(dict(zip(names, row, strict=True)) for row in cursor)
        return rows

    def score_values(self, keys: Sequence[str], metric: str, version: str) -> dict[str, float]:
        values: dict[str, float] = {}
        keys = list(keys)
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            with self._reading():
                cursor = self._db.execute(
                    "SELECT image_key, value FROM scores WHERE metric = ? AND metric_version = ? "
                    f"AND image_key IN ({','.join('?' * len(chunk))})", (metric, version, *chunk))
                values.update(dict(cursor.fetchall()))
        return values

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._reading():
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        self._db.close()
