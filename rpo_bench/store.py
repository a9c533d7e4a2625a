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


class ResultsStore:
    def __init__(self, path: Path):
        self.path = Path(path).expanduser()
        try:
            if not self.path.parent.is_dir():
                raise OSError(f"folder {self.path.parent} does not exist")
            self._db = sqlite3.connect(self.path, timeout=120, isolation_level=None)
            self._initialise()
        except (OSError, sqlite3.Error) as exc:
            raise BadInputError(f"cannot write the results store {self.path}: {exc}") from exc

    def _initialise(self, attempts: int = 50) -> None:
        """WAL mode and the schema. Switching to WAL takes an exclusive lock for which SQLite does not wait
        (the busy timeout does not apply), so processes opening a new store together retry for a few seconds."""
        for attempt in range(attempts):
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.1 * (1 + attempt % 5))

    @contextmanager
    def transaction(self):
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
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
            rows = self._db.execute(sql.format(",".join("?" * len(chunk))), (*params, *chunk))
            found.extend(row[0] for row in rows)
        return found

    def image_rows(self, keys: Sequence[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        keys = list(keys)
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
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
            cursor = self._db.execute(
                "SELECT image_key, value FROM scores WHERE metric = ? AND metric_version = ? "
                f"AND image_key IN ({','.join('?' * len(chunk))})", (metric, version, *chunk))
            values.update(dict(cursor.fetchall()))
        return values

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        self._db.close()
