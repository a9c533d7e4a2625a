"""Moving a results store of the first schema (rpo-bench <= 0.1 at c1f45d9) to the current one, in place.

Schema 1 filed every image under the prompt set, prompt index, category and model name it was first evaluated
as, so an image shared by two prompt sets (or two model names with the same weights) was reported under the first
only. The migration keeps every row: images and scores lose those columns, and each old image becomes one sample
labelled as schema 1 had it. What schema 1 never recorded (the second prompt set of a shared image) cannot be
recovered: evaluate again and the new samples are added beside the old ones.

It runs in the opening store's transaction after a full backup beside the store (SQLite's online backup, so rows
still in the WAL are in it), and a process that finds the store already migrated by another does nothing.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from rpo_bench.core.atomic import atomic_path
from rpo_bench.evaluation.prompts import prompt_set_id
from rpo_bench.evaluation.store_schema import SCHEMA_VERSION, backup_path, create_schema

UNKNOWN_FINGERPRINT = "unknown (schema 1)"


def _backup(db: sqlite3.Connection, path: Path) -> Path:
    target = backup_path(path)
    # A second connection reads the last committed state (WAL lets it read beside the write lock `db` holds,
    # which a backup from `db` itself would wait on forever).
    source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        with atomic_path(target) as tmp:
            copy = sqlite3.connect(tmp)
            try:
                source.backup(copy)
            finally:
                copy.close()
    finally:
        source.close()
    return target


def _fingerprints(db: sqlite3.Connection) -> dict[str, tuple[str, int]]:
    """prompt set name -> (fingerprint, size) as the first run that named it recorded."""
    found: dict[str, tuple[str, int]] = {}
    for (config,) in db.execute("SELECT config FROM runs ORDER BY created_at, run_id"):
        try:
            prompt_set = json.loads(config).get("prompt_set") or {}
            name, fingerprint = prompt_set["name"], prompt_set["fingerprint"]
            found.setdefault(str(name), (str(fingerprint), int(prompt_set.get("size", 0))))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return found


def migrate_connection(db: sqlite3.Connection, path: Path) -> Path:
    """Schema 1 -> current, inside the transaction the caller holds (BEGIN IMMEDIATE, after checking that the
    store is still of schema 1); returns the backup's path. The caller commits, or rolls back on an error."""
    backup = _backup(db, path)
    fingerprints = _fingerprints(db)
    for table in ("images", "scores"):
        db.execute(f"ALTER TABLE {table} RENAME TO {table}_schema1")
    create_schema(db)
    for (name,) in db.execute("SELECT DISTINCT prompt_set FROM images_schema1").fetchall():
        fingerprint, size = fingerprints.get(name, (UNKNOWN_FINGERPRINT, 0))
        if not size:
            size = db.execute("SELECT count(DISTINCT prompt_index) FROM images_schema1 WHERE prompt_set = ?",
                              (name,)).fetchone()[0]
        identity = prompt_set_id(name, fingerprint)
        db.execute("INSERT OR IGNORE INTO prompt_sets SELECT ?, ?, ?, ?, ?, min(created_at) FROM images_schema1 "
                   "WHERE prompt_set = ?", (identity, name, name, fingerprint, size, name))
        db.execute("INSERT OR IGNORE INTO samples SELECT ?, model, image_key, prompt_index, category, run_id, "
                   "created_at FROM images_schema1 WHERE prompt_set = ?", (identity, name))
    db.execute("INSERT INTO images SELECT image_key, model_fingerprint, protocol, protocol_fingerprint, "
               "protocol_settings, dtype, prompt, seed, image_sha256, NULL, NULL, run_id, created_at "
               "FROM images_schema1")
    db.execute("INSERT INTO scores SELECT image_key, metric, metric_version, value, run_id, created_at "
               "FROM scores_schema1")
    db.execute("DROP TABLE scores_schema1")
    db.execute("DROP TABLE images_schema1")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return backup
