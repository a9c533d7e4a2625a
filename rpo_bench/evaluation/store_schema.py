"""The results store's schema: its tables, the version that names them, and the checks of what a file holds.

Kept apart from the store (store.py) and its migration (store_migration.py), which both read it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA_VERSION = 2  # PRAGMA user_version; stores of version 1 (0 on disk) are migrated by store_migration
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,          -- hash of the evaluation config: the same command is the same run
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    config TEXT NOT NULL,             -- JSON: models (full specs), protocol settings, prompts, seeds, metrics
    versions TEXT NOT NULL,           -- JSON: python, torch, diffusers, transformers, open_clip, rpo_bench
    git_commit TEXT
);
CREATE TABLE IF NOT EXISTS prompt_sets (
    prompt_set_id TEXT PRIMARY KEY,   -- digest of (source, fingerprint): the set's identity
    name TEXT NOT NULL,               -- the name it was asked for by (registry name or path as given): a label
    source TEXT NOT NULL,             -- the registry name, or the resolved path of the file
    fingerprint TEXT NOT NULL,        -- sha256 of the prompts' texts, in order
    size INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    image_key TEXT PRIMARY KEY,       -- generation key: model + protocol fingerprints, dtype, prompt, seed
    model_fingerprint TEXT NOT NULL,
    protocol TEXT NOT NULL,
    protocol_fingerprint TEXT NOT NULL,
    protocol_settings TEXT NOT NULL,
    dtype TEXT NOT NULL,
    prompt TEXT NOT NULL,
    seed INTEGER NOT NULL,
    image_sha256 TEXT NOT NULL,
    batch_size INTEGER,               -- the batch it was generated in (NULL: taken from the image cache)
    threads INTEGER,                  -- torch's CPU threads then: with batch_size, what moves pixels by a level
    run_id TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    prompt_set_id TEXT NOT NULL,
    model TEXT NOT NULL,              -- the name the model was evaluated as (two names may share weights)
    image_key TEXT NOT NULL,
    prompt_index INTEGER NOT NULL,    -- the prompt's index in its set (its first, for a repeated prompt)
    category TEXT NOT NULL,
    run_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (prompt_set_id, model, image_key)
);
CREATE TABLE IF NOT EXISTS scores (
    image_key TEXT NOT NULL,
    metric TEXT NOT NULL,
    metric_version TEXT NOT NULL,
    value REAL NOT NULL,
    run_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (image_key, metric, metric_version)
);
CREATE INDEX IF NOT EXISTS samples_by_image ON samples (image_key);
CREATE VIEW IF NOT EXISTS scored_samples AS
    SELECT p.name AS prompt_set, m.model, i.protocol, m.prompt_index, m.category, i.prompt, i.seed, s.metric,
           s.metric_version, s.value, i.dtype, i.image_key, i.image_sha256, i.model_fingerprint,
           i.protocol_fingerprint, p.prompt_set_id
    FROM samples m JOIN images i USING (image_key) JOIN scores s USING (image_key)
    JOIN prompt_sets p USING (prompt_set_id);
"""

SCHEMA_COLUMNS = {
    "runs": ("run_id", "created_at", "updated_at", "config", "versions", "git_commit"),
    "prompt_sets": ("prompt_set_id", "name", "source", "fingerprint", "size", "created_at"),
    "images": ("image_key", "model_fingerprint", "protocol", "protocol_fingerprint", "protocol_settings", "dtype",
               "prompt", "seed", "image_sha256", "batch_size", "threads", "run_id", "created_at"),
    "samples": ("prompt_set_id", "model", "image_key", "prompt_index", "category", "run_id", "created_at"),
    "scores": ("image_key", "metric", "metric_version", "value", "run_id", "created_at"),
}
IMAGE_COLUMNS = SCHEMA_COLUMNS["images"]
SAMPLE_COLUMNS = SCHEMA_COLUMNS["samples"]
# The tables of the first schema (PRAGMA user_version 0): what store_migration knows how to move.
SCHEMA_1_COLUMNS = {
    "runs": SCHEMA_COLUMNS["runs"],
    "images": ("image_key", "model", "model_fingerprint", "protocol", "protocol_fingerprint", "protocol_settings",
               "dtype", "prompt_set", "prompt_index", "category", "prompt", "seed", "image_sha256", "run_id",
               "created_at"),
    "scores": ("image_key", "metric", "metric_version", "value", "model", "protocol_fingerprint", "run_id",
               "created_at"),
}


def damaged_store_message(path: Path, reason: str) -> str:
    """The one line for a store SQLite cannot use: what is wrong, and the two ways out (nothing is deleted)."""
    return (f"results store {path} is damaged ({reason}); move it aside and rerun (cached images are reused), "
            f"or recover its rows with: sqlite3 {path} .recover | sqlite3 {path.with_name('recovered.sqlite')}")


def migrate_command(path: Path) -> str:
    return f"rpo-bench store migrate {path}"


def create_schema(db: sqlite3.Connection) -> None:
    """Every table, index and view, statement by statement: unlike executescript, this does not commit a
    transaction the caller holds (the migration creates the new tables inside its own)."""
    statement = ""
    for line in SCHEMA.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            db.execute(statement)
            statement = ""


def check_tables(db: sqlite3.Connection) -> int | None:
    """The schema version of an open database: SCHEMA_VERSION, 1 (the first schema, to migrate) or None (empty);
    anything else raises sqlite3.DatabaseError with what is there."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return None
    ours = tables & (set(SCHEMA_COLUMNS) | set(SCHEMA_1_COLUMNS))
    if not ours:
        raise sqlite3.DatabaseError(f"an SQLite database without rpo-bench tables: it holds "
                                    f"{', '.join(sorted(tables)[:5])}")
    columns = {table: tuple(row[1] for row in db.execute(f"PRAGMA table_info({table})")) for table in sorted(ours)}
    version = db.execute("PRAGMA user_version").fetchone()[0]
    expected = SCHEMA_COLUMNS if version == SCHEMA_VERSION else SCHEMA_1_COLUMNS
    for table, found in columns.items():
        if table in expected and found != expected[table]:
            raise sqlite3.DatabaseError(f"table {table} has columns ({', '.join(found)}), expected "
                                        f"({', '.join(expected[table])})")
    if version == SCHEMA_VERSION:
        return SCHEMA_VERSION
    if version == 0 and ours <= set(SCHEMA_1_COLUMNS):
        return 1
    raise sqlite3.DatabaseError(f"schema version {version} with tables {', '.join(sorted(ours))}, which this "
                                f"rpo-bench (schema {SCHEMA_VERSION}) does not know")


def backup_path(path: Path) -> Path:
    """`results.sqlite` -> `results.schema1-backup.sqlite` (numbered when one is there already)."""
    candidate = path.with_name(f"{path.stem}.schema1-backup{path.suffix}")
    number = 2
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}.schema1-backup-{number}{path.suffix}")
        number += 1
    return candidate
