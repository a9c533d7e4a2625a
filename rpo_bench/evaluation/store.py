"""The results store: one SQLite file (WAL) with runs, prompt sets, images, samples and scores.

What a row is keyed by is what it is, never the label it was first made under:
- an image by its generation key (model weights' fingerprint, protocol, dtype, prompt text, seed);
- a score by (image, metric, metric version): a property of the picture, whoever asked for it;
- a prompt set by its content and its source (registry name or resolved file path), not its file name;
- a sample (prompt set, model name, image) is the label of an evaluation: which prompt set and index, which
  category, and which model name an image was evaluated as. One image may serve two prompt sets, or two model
  names with the same weights (an alias), without being filed under the first.

Every write is a transaction and every row has a natural primary key written with INSERT OR IGNORE, so an
evaluate that is killed at any point and run again converges to the same rows as an uninterrupted run, and
several processes (sharded evaluation) can write into one store. Every SQL statement of rpo-bench lives in this
module: the other modules read through the typed methods below.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from rpo_bench.core.errors import BadInputError
from rpo_bench.core.sqlite_wal import enable_wal, retry_while_locked
from rpo_bench.evaluation.store_migration import migrate_connection
from rpo_bench.evaluation.store_schema import (
    IMAGE_COLUMNS,
    SAMPLE_COLUMNS,
    SCHEMA_1_COLUMNS,
    SCHEMA_COLUMNS,
    SCHEMA_VERSION,
    check_tables,
    create_schema,
    damaged_store_message,
    migrate_command,
)

log = logging.getLogger(__name__)

_CHUNK = 500  # keys per IN (...) list: below SQLite's host-parameter limit on every build


def is_number(value: object) -> bool:
    """A score the statistics can use: a real, finite number (SQLite may hold text, NULL or inf from outside)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class PromptSetRecord:
    prompt_set_id: str
    name: str
    source: str
    fingerprint: str
    size: int


class ScoredSample(NamedTuple):
    """One score of one image as evaluated in one prompt set under one model name: what every table is made of.
    (A named tuple: a report builds one per score, 100,000 and more, and a frozen dataclass is ~5x slower.)"""

    prompt_set_id: str
    prompt_set: str  # the set's name (a label)
    model: str
    model_fingerprint: str
    protocol: str
    protocol_fingerprint: str
    protocol_settings: str
    dtype: str
    prompt_index: int
    category: str
    prompt: str
    seed: int
    image_key: str
    image_sha256: str
    metric: str
    metric_version: str
    value: Any  # a float when the store was written by rpo-bench; check with is_number before using it


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    config: str  # JSON text, as stored
    versions: str
    git_commit: str | None


class ResultsStore:
    """The store, opened for writing (created, or migrated from schema 1 with a backup) or, with readonly=True,
    query-only: a reader (report, grid) never creates, migrates or writes anything."""

    def __init__(self, path: Path, readonly: bool = False):
        self.path = Path(path).expanduser()
        self.readonly = readonly
        if readonly:
            self._db = _open_readonly(self.path)
            return
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
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def open(cls, path: Path, readonly: bool = False) -> ResultsStore:
        return cls(path, readonly=readonly)

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _remove_new_side_files(self, existed: dict[str, bool]) -> None:
        """The -wal / -shm files SQLite created while failing to open a damaged store hold nothing; ones that
        were there before may hold the user's rows and stay."""
        for suffix, was_there in existed.items():
            if not was_there:
                self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)

    def _initialise(self) -> None:
        """Check what is there, migrate a schema-1 store, then WAL mode and the schema (retried while another
        process opens it too)."""
        def setup() -> None:
            self._check_existing_tables()  # before anything is written into someone else's file
            enable_wal(self._db)
            if check_tables(self._db) == SCHEMA_VERSION:
                return  # the usual case: nothing to write
            # One transaction: another process opening the same new file sees no table or every table (and
            # the version that says which schema they are), never half a schema.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                version = check_tables(self._db)  # again: another process may have finished first
                backup = None
                if version == 1:
                    backup = migrate_connection(self._db, self.path)
                elif version is None:
                    create_schema(self._db)
                    self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            if backup is not None:
                log.warning("results store %s: migrated from schema 1 to schema %d; the old file is kept as %s",
                            self.path, SCHEMA_VERSION, backup)
        retry_while_locked(setup)

    def _check_existing_tables(self) -> int | None:
        """The schema version of what is there (None: a new, empty file). A file of some other program, or a
        store whose tables are neither this schema nor the first, is refused as it is."""
        return check_tables(self._db)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """A page that turns out to be corrupt mid-run gives the same one line as one found on opening."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if self.readonly:
                raise BadInputError(f"cannot read the results store {self.path}: {exc}") from exc
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

    # -- writes ------------------------------------------------------------------------------------------------
    def record_run(self, run_id: str, config: dict[str, Any], versions: dict[str, str], git_commit: str | None) -> None:
        now = time.time()
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                       (run_id, now, now, json.dumps(config, sort_keys=True), json.dumps(versions, sort_keys=True),
                        git_commit))
            db.execute("UPDATE runs SET updated_at = ? WHERE run_id = ?", (now, run_id))

    def record_prompt_set(self, record: PromptSetRecord) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO prompt_sets VALUES (?, ?, ?, ?, ?, ?)",
                       (record.prompt_set_id, record.name, record.source, record.fingerprint, record.size,
                        time.time()))

    def add_images(self, rows: Iterable[dict[str, Any]], samples: Iterable[dict[str, Any]] = ()) -> None:
        """Images (what they are) and, in the same transaction, the samples that label them."""
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                f"INSERT OR IGNORE INTO images VALUES ({','.join('?' * len(IMAGE_COLUMNS))})",
                [tuple(now if c == "created_at" else row.get(c) for c in IMAGE_COLUMNS) for row in rows])
            _insert_samples(db, samples, now)

    def add_samples(self, rows: Iterable[dict[str, Any]]) -> None:
        with self.transaction() as db:
            _insert_samples(db, rows, time.time())

    def add_scores(self, metric: str, version: str, run_id: str, values: Sequence[tuple[str, float]]) -> int:
        """Store (image key, value) pairs; returns how many rows are new. Only finite numbers are accepted: the
        caller (evaluate) refuses a metric's NaN or inf with one line before it gets here."""
        bad = [(key, value) for key, value in values if not is_number(value)]
        if bad:
            raise ValueError(f"{metric}: score {bad[0][1]!r} of image {bad[0][0]} is not a finite number")
        now = time.time()
        with self.transaction() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO scores SELECT image_key, ?, ?, ?, ?, ? FROM images WHERE image_key = ?",
                [(metric, version, float(value), run_id, now, key) for key, value in values])
            return db.total_changes - before

    def forget_images(self, keys: Sequence[str]) -> None:
        """Drop images (and every score of them) whose cached file was found damaged: they are regenerated and
        rescored, and a score that may have come from the bad file does not survive beside the new ones. Their
        samples stay: the regenerated image has the same key."""
        keys = list(keys)
        with self.transaction() as db:
            for chunk in _chunks(keys):
                marks = ",".join("?" * len(chunk))
                db.execute(f"DELETE FROM scores WHERE image_key IN ({marks})", chunk)
                db.execute(f"DELETE FROM images WHERE image_key IN ({marks})", chunk)

    # -- reads -------------------------------------------------------------------------------------------------
    def has_run(self, run_id: str) -> bool:
        return bool(self._fetch("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)))

    def runs(self) -> list[RunRecord]:
        """Every run, oldest first."""
        rows = self._fetch("SELECT run_id, config, versions, git_commit FROM runs ORDER BY created_at, run_id")
        return [RunRecord(*row) for row in rows]

    def existing_images(self, keys: Sequence[str]) -> set[str]:
        return set(self._select_keys("SELECT image_key FROM images WHERE image_key IN ({})", keys, ()))

    def existing_samples(self, prompt_set_id: str, model: str, keys: Sequence[str]) -> set[str]:
        return set(self._select_keys("SELECT image_key FROM samples WHERE prompt_set_id = ? AND model = ? AND "
                                     "image_key IN ({})", keys, (prompt_set_id, model)))

    def scored_images(self, keys: Sequence[str], metric: str, version: str) -> set[str]:
        return set(self._select_keys(
            "SELECT image_key FROM scores WHERE metric = ? AND metric_version = ? AND image_key IN ({})",
            keys, (metric, version)))

    def _select_keys(self, sql: str, keys: Sequence[str], params: tuple) -> list[str]:
        found: list[str] = []
        for chunk in _chunks(list(keys)):
            found.extend(row[0] for row in self._fetch(sql.format(",".join("?" * len(chunk))), (*params, *chunk)))
        return found

    def image_rows(self, keys: Sequence[str]) -> list[dict[str, Any]]:
        """The images' own columns (what they are: prompt, seed, protocol, dtype, file hash), by key."""
        rows: list[dict[str, Any]] = []
        for chunk in _chunks(list(keys)):
            with self._reading():
                cursor = self._db.execute(
                    f"SELECT * FROM images WHERE image_key IN ({','.join('?' * len(chunk))})", chunk)
                names = [d[0] for d in cursor.description]
                rows.extend(dict(zip(names, row, strict=True)) for row in cursor)
        return rows

    def score_values(self, keys: Sequence[str], metric: str, version: str) -> dict[str, float]:
        values: dict[str, float] = {}
        for chunk in _chunks(list(keys)):
            values.update(self._fetch(
                "SELECT image_key, value FROM scores WHERE metric = ? AND metric_version = ? "
                f"AND image_key IN ({','.join('?' * len(chunk))})", (metric, version, *chunk)))
        return values

    def scored_samples(self, prompt_set_id: str | None = None, models: Sequence[str] | None = None,
                       image_keys: Sequence[str] | None = None) -> list[ScoredSample]:
        """Every (sample, score), optionally of one prompt set, some model names, or some images; in the order the
        scores became visible in their prompt set (a section's order in a report is its first row's)."""
        where, params = [], []
        if prompt_set_id is not None:
            where.append("m.prompt_set_id = ?")
            params.append(prompt_set_id)
        if models is not None:
            where.append(f"m.model IN ({','.join('?' * len(models))})")
            params.extend(models)
        sql = ("SELECT m.prompt_set_id, p.name, m.model, i.model_fingerprint, i.protocol, i.protocol_fingerprint, "
               "i.protocol_settings, i.dtype, m.prompt_index, m.category, i.prompt, i.seed, i.image_key, "
               "i.image_sha256, s.metric, s.metric_version, s.value "
               "FROM samples m JOIN images i USING (image_key) JOIN scores s USING (image_key) "
               "JOIN prompt_sets p USING (prompt_set_id)")
        order = " ORDER BY max(m.created_at, s.created_at), s.rowid, m.rowid"
        if image_keys is None:
            rows = self._fetch(sql + (" WHERE " + " AND ".join(where) if where else "") + order, tuple(params))
        else:
            rows = []
            for chunk in _chunks(list(image_keys)):
                clause = " AND ".join([*where, f"m.image_key IN ({','.join('?' * len(chunk))})"])
                rows.extend(self._fetch(f"{sql} WHERE {clause}{order}", (*params, *chunk)))
        return [ScoredSample(*row) for row in rows]

    def prompt_sets(self) -> list[PromptSetRecord]:
        return [PromptSetRecord(*row) for row in self._fetch(
            "SELECT prompt_set_id, name, source, fingerprint, size FROM prompt_sets ORDER BY created_at, rowid")]

    def models_with_images(self) -> list[str]:
        return [row[0] for row in self._fetch("SELECT DISTINCT model FROM samples ORDER BY model")]

    def image_protocols(self, model: str) -> list[str]:
        """The model's protocols, most recently generated first."""
        rows = self._fetch("SELECT i.protocol, max(i.created_at) AS last FROM samples m JOIN images i USING "
                           "(image_key) WHERE m.model = ? GROUP BY i.protocol ORDER BY last DESC, i.protocol",
                           (model,))
        return [row[0] for row in rows]

    def latest_image(self, model: str, protocol: str, prompt: str, seed: int) -> str | None:
        """The file hash of the model's most recently generated image of (protocol, prompt, seed), or None."""
        rows = self._fetch("SELECT i.image_sha256 FROM samples m JOIN images i USING (image_key) WHERE m.model = ? "
                           "AND i.protocol = ? AND i.prompt = ? AND i.seed = ? ORDER BY i.created_at DESC, "
                           "i.rowid DESC LIMIT 1", (model, protocol, prompt, seed))
        return rows[0][0] if rows else None

    def section_prompts(self, prompt_set_id: str, protocol_fingerprint: str, limit: int) -> list[str]:
        """The first `limit` prompts of a prompt set that have images under a protocol, in prompt-set order."""
        rows = self._fetch("SELECT m.prompt_index, min(i.prompt) FROM samples m JOIN images i USING (image_key) "
                           "WHERE m.prompt_set_id = ? AND i.protocol_fingerprint = ? GROUP BY m.prompt_index "
                           "ORDER BY m.prompt_index LIMIT ?", (prompt_set_id, protocol_fingerprint, limit))
        return [prompt for _index, prompt in rows]

    def images_of(self, model_fingerprint: str, protocol_fingerprint: str,
                  dtype: str | None = None) -> list[tuple[str, int, str]]:
        """(prompt, seed, image sha256) of every image of some weights under one protocol (and dtype)."""
        sql = ("SELECT prompt, seed, image_sha256 FROM images WHERE model_fingerprint = ? AND "
               "protocol_fingerprint = ?")
        params: tuple = (model_fingerprint, protocol_fingerprint)
        if dtype is not None:
            sql, params = sql + " AND dtype = ?", (*params, dtype)
        return [(str(p), int(s), str(sha)) for p, s, sha in self._fetch(sql + " ORDER BY prompt, seed", params)]

    def image_scores(self, metric: str, model_fingerprint: str | None = None, protocol_fingerprint: str | None = None,
                     dtype: str | None = None, version: str | None = None,
                     seeds_below: int | None = None) -> list[tuple[str, str, int, Any, str]]:
        """(image key, prompt, seed, value, image sha256) of every image scored by `metric`, narrowed by the
        optional filters; in key order."""
        where, params = ["s.metric = ?"], [metric]
        for column, value in (("i.model_fingerprint", model_fingerprint), ("i.protocol_fingerprint",
                              protocol_fingerprint), ("i.dtype", dtype), ("s.metric_version", version)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if seeds_below is not None:
            where.append("i.seed < ?")
            params.append(seeds_below)
        return self._fetch("SELECT i.image_key, i.prompt, i.seed, s.value, i.image_sha256 FROM images i JOIN scores s "
                           f"USING (image_key) WHERE {' AND '.join(where)} ORDER BY i.image_key", tuple(params))

    def count(self, table: str) -> int:
        if table not in SCHEMA_COLUMNS:
            raise ValueError(f"no table {table!r}")
        return int(self._fetch(f"SELECT count(*) FROM {table}")[0][0])

    def _fetch(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._reading():
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        self._db.close()


def _insert_samples(db: sqlite3.Connection, rows: Iterable[dict[str, Any]], now: float) -> None:
    """A sample already there keeps its index and run; its category follows the latest evaluation of the set (a
    file whose categories were edited keeps its identity, which hashes the texts only)."""
    db.executemany(
        f"INSERT INTO samples VALUES ({','.join('?' * len(SAMPLE_COLUMNS))}) "
        "ON CONFLICT (prompt_set_id, model, image_key) DO UPDATE SET category = excluded.category",
        [tuple(now if c == "created_at" else row[c] for c in SAMPLE_COLUMNS) for row in rows])


def _chunks(keys: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(keys), _CHUNK):
        yield keys[start:start + _CHUNK]


def _open_readonly(path: Path) -> sqlite3.Connection:
    """The store, query-only, after checking that it is an rpo-bench store of this schema (nothing is created,
    migrated or written)."""
    if not path.exists():
        raise BadInputError(f"results store {path} does not exist; accepted: a store written by rpo-bench "
                            "evaluate (its --store, default $RPO_BENCH_HOME/results.sqlite)")
    if path.is_dir():
        raise BadInputError(f"results store {path} is a folder; accepted: the store's file (e.g. "
                            f"{path / 'results.sqlite'})")
    try:
        # mode=rw creates nothing (a missing file is an error) and falls back to reading a write-protected file;
        # unlike mode=ro, the last connection to close removes the -wal / -shm files it made, so a reader leaves
        # the store's folder as it found it. query_only: nothing is ever written.
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)
        db.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise BadInputError(f"cannot read the results store {path}: {exc}") from exc
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables & (set(SCHEMA_COLUMNS) | set(SCHEMA_1_COLUMNS)):
            held = f"it holds {', '.join(sorted(tables)[:5])}" if tables else "it holds no table"
            raise BadInputError(f"{path} is not an rpo-bench results store: an SQLite database without the "
                                f"{', '.join(SCHEMA_COLUMNS)} tables ({held}); accepted: a store written by "
                                "rpo-bench evaluate")
        try:
            version = check_tables(db)
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise
            raise BadInputError(f"{path} is not a results store of this rpo-bench version: {exc}") from exc
        if version == 1:
            raise BadInputError(f"results store {path} was written by an older rpo-bench (schema 1, which filed an "
                                "image shared by two prompt sets under the first); migrate it in place (a backup is "
                                f"kept) with: {migrate_command(path)}")
        missing = [t for t in SCHEMA_COLUMNS if t not in tables]
        if missing:
            raise BadInputError(f"{path} is not an rpo-bench results store: it lacks the {', '.join(missing)} "
                                "table(s); accepted: a store written by rpo-bench evaluate")
    except sqlite3.OperationalError as exc:
        db.close()
        raise BadInputError(f"cannot read the results store {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        db.close()
        if "not a database" in str(exc):
            raise BadInputError(f"{path} is not an rpo-bench results store (not an SQLite database); accepted: a "
                                "store written by rpo-bench evaluate") from exc
        raise BadInputError(damaged_store_message(path, str(exc))) from exc
    except BaseException:
        db.close()
        raise
    return db


def migrate_store(path: Path) -> Path | None:
    """`rpo-bench store migrate PATH`: open the store for writing, which migrates it; the backup's path, or None
    when it was of the current schema already."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BadInputError(f"results store {path} does not exist or is not a file; accepted: a store written by "
                            "rpo-bench evaluate")
    probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        was_old = check_tables(probe) == 1
    except sqlite3.DatabaseError:
        was_old = False  # opening it below gives the one line for a damaged or foreign file
    finally:
        probe.close()
    before = set(path.parent.glob(f"{path.stem}.schema1-backup*{path.suffix}")) if was_old else set()
    ResultsStore(path).close()
    if not was_old:
        return None
    made = set(path.parent.glob(f"{path.stem}.schema1-backup*{path.suffix}")) - before
    return sorted(made)[0] if made else None
