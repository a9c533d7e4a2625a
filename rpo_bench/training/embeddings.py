"""The RPO embedding cache (METHOD.md, Diffusion-RPO item 2).

The similarity weights need a CLIP text embedding of every caption and image embeddings of every winner and
loser. They do not depend on the model being trained, so they are computed once per dataset, outside the
training step, and kept in one SQLite file keyed by (embedding model identity, sample id): a pair shared by
two datasets is embedded once, two CLIP models never mix, and each batch is its own transaction, so an
interrupted computation resumes where it stopped.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rpo_bench.core.config import home_dir, writable_dir
from rpo_bench.core.errors import BadInputError
from rpo_bench.core.progress import progress_bar, stage
from rpo_bench.core.sqlite_wal import enable_wal, retry_while_locked
from rpo_bench.metrics import make_metric
from rpo_bench.metrics.clip_score import DEFAULT_BACKBONE, HFClipBackbone
from rpo_bench.training.data import PreferenceData

log = logging.getLogger(__name__)

EMBED_MODES = ("text", "image", "joint")
CACHE_FILE = "embeddings.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL,              -- embedding model identity: weights (hub commit / folder hash) and dtype
    sample_id TEXT NOT NULL,          -- content hash of caption + winner bytes + loser bytes
    dim INTEGER NOT NULL,
    text BLOB NOT NULL,               -- float32, projected CLIP features, not normalised
    image_w BLOB NOT NULL,
    image_l BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (model, sample_id)
);
"""


@dataclass(frozen=True)
class EmbeddingTable:
    """Rows aligned with the data's indices: row i belongs to data[i]."""

    text: torch.Tensor
    image_w: torch.Tensor
    image_l: torch.Tensor
    model_identity: str
    sample_ids: tuple[str, ...]
    computed: int = 0
    from_cache: int = 0

    def __len__(self) -> int:
        return len(self.sample_ids)


def default_cache_dir() -> Path:
    return home_dir() / "embeddings"


def embedding_model_source(name: str) -> str:
    """`tiny-clip[:SEED]`, a Hugging Face CLIP id or a local CLIP folder (also accepted as `clip:<that>`)."""
    base, _, arg = name.partition(":")
    if base == "tiny-clip":
        return make_metric(name).backbone_source()
    if base == "clip":
        name = arg or DEFAULT_BACKBONE
    if not name or name.startswith("open_clip:"):
        raise BadInputError(f"embedding model {name!r}: accepted: tiny-clip[:SEED], a Hugging Face CLIP id "
                            "(e.g. openai/clip-vit-large-patch14) or a local CLIP folder")
    return name


def embedding_model_identity(name: str, dtype: torch.dtype = torch.float32) -> str:
    """The clip metric's version (formula + hub commit or folder hash) plus the dtype the features were made in."""
    version = make_metric("clip:" + embedding_model_source(name)).version
    return f"{version}|{str(dtype).removeprefix('torch.')}"


class EmbeddingCache:
    def __init__(self, directory: Path):
        self.path = Path(directory).expanduser() / CACHE_FILE
        writable_dir(self.path.parent, f"the RPO embedding cache {self.path}")
        try:
            self._db = sqlite3.connect(self.path, timeout=120, isolation_level=None)
        except sqlite3.Error as exc:
            raise BadInputError(f"cannot write the embedding cache {self.path}: {exc}") from exc
        try:
            with self._guard():
                columns = retry_while_locked(self._setup)
            if columns != ["model", "sample_id", "dim", "text", "image_w", "image_l", "created_at"]:
                raise BadInputError(self._damaged(f"table embeddings has columns {', '.join(columns)}"))
        except sqlite3.Error as exc:  # what _guard leaves: locked, read-only, cannot open
            self._db.close()
            raise BadInputError(f"cannot write the embedding cache {self.path}: {exc}") from exc
        except BaseException:
            self._db.close()
            raise

    def _setup(self) -> list[str]:
        enable_wal(self._db)
        self._db.executescript(SCHEMA)
        return [row[1] for row in self._db.execute("PRAGMA table_info(embeddings)")]

    def _damaged(self, reason: str) -> str:
        # The cache holds nothing that cannot be recomputed from the preference data.
        return (f"embedding cache {self.path} is damaged ({reason}); delete it (and any {CACHE_FILE}-wal / -shm "
                "beside it) and rerun: it is rebuilt, recomputing the embeddings")

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """"file is not a database" / "malformed" on any statement become the one line that says what to do."""
        try:
            yield
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as exc:
            raise BadInputError(self._damaged(str(exc))) from exc

    def existing(self, model: str, sample_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(sample_ids):
            with self._guard():
                rows = self._db.execute(f"SELECT sample_id FROM embeddings WHERE model = ? AND sample_id IN "
                                        f"({','.join('?' * len(chunk))})", (model, *chunk))
                found.update(row[0] for row in rows)
        return found

    def add(self, model: str, sample_ids: Sequence[str], text: torch.Tensor, image_w: torch.Tensor,
            image_l: torch.Tensor) -> None:
        """One transaction per batch: a kill between batches loses nothing already written."""
        now = time.time()
        blobs = [_blob(t) for t in (text, image_w, image_l)]
        rows = [(model, sid, text.shape[1], blobs[0][i], blobs[1][i], blobs[2][i], now)
                for i, sid in enumerate(sample_ids)]
        with self._guard():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # REPLACE: a row found damaged is overwritten by its recomputation
                self._db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def read(self, model: str, sample_ids: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The intact rows of `sample_ids`. A row with a blob of the wrong length, a dimension unlike the other
        rows of this model, or a non-finite value is deleted and left out, so the caller recomputes it."""
        raw: dict[str, tuple[int, list[bytes]]] = {}
        for chunk in _chunks(sample_ids):
            with self._guard():
                rows = self._db.execute(f"SELECT sample_id, dim, text, image_w, image_l FROM embeddings WHERE "
                                        f"model = ? AND sample_id IN ({','.join('?' * len(chunk))})", (model, *chunk))
                for sample_id, dim, *blobs in rows:
                    raw[sample_id] = (dim, blobs)
        if not raw:
            return {}
        usual_dim = Counter(dim for dim, _ in raw.values()).most_common(1)[0][0]
        found, damaged = {}, []
        for sample_id, (dim, blobs) in raw.items():
            vectors = _decode(blobs, dim, usual_dim)
            if vectors is None:
                damaged.append(sample_id)
            else:
                found[sample_id] = vectors
        if damaged:
            log.warning("embedding cache %s: %d damaged row(s) (wrong length, dimension or non-finite values) "
                        "removed; they are recomputed", self.path, len(damaged))
            self.remove(model, damaged)
        return found

    def remove(self, model: str, sample_ids: Sequence[str]) -> None:
        for chunk in _chunks(sample_ids):
            with self._guard():
                self._db.execute(f"DELETE FROM embeddings WHERE model = ? AND sample_id IN "
                                 f"({','.join('?' * len(chunk))})", (model, *chunk))

    def close(self) -> None:
        self._db.close()


def _decode(blobs: list[bytes], dim: int, usual_dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The three float32 vectors of one row, or None if the row cannot be what `add` wrote."""
    if not isinstance(dim, int) or dim != usual_dim or dim < 1:
        return None
    if any(not isinstance(b, bytes) or len(b) != 4 * dim for b in blobs):
        return None
    vectors = tuple(np.frombuffer(b, dtype=np.float32) for b in blobs)
    if not all(np.isfinite(v).all() for v in vectors):
        return None
    return vectors


def _chunks(items: Sequence[str], size: int = 500) -> list[list[str]]:
    items = list(items)
    return [items[i:i + size] for i in range(0, len(items), size)]


def _blob(features: torch.Tensor) -> list[bytes]:
    array = features.detach().to("cpu", torch.float32).contiguous().numpy()
    return [row.tobytes() for row in array]


def compute_embeddings(data: PreferenceData, model: str = "tiny-clip", *, device: str = "cpu",
                       dtype: torch.dtype = torch.float32, batch_size: int = 16, show_progress: bool = True,
                       cache_dir: Path | None = None) -> EmbeddingTable:
    """T(caption), I(winner), I(loser) for every pair, computing only what the cache lacks."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadInputError(f"embedding batch size {batch_size!r}: accepted: an integer >= 1")
    source = embedding_model_source(model)
    identity = embedding_model_identity(model, dtype)
    cache = EmbeddingCache(cache_dir if cache_dir is not None else default_cache_dir())
    try:
        first_index: dict[str, int] = {}  # a pair that occurs twice is embedded once
        for i, sample_id in enumerate(data.sample_ids):
            first_index.setdefault(sample_id, i)
        vectors = cache.read(identity, list(first_index))  # damaged rows are dropped here and recomputed below
        todo = [i for sid, i in first_index.items() if sid not in vectors]
        if todo:
            # a model folder by its name: the header stays one short line (the bar below names the folder)
            stage("embeddings", f"{Path(model).name if '/' in model else model} features of {len(todo)} pair(s), "
                  "cached for later runs")
            backbone = HFClipBackbone(source, device, dtype)
            with progress_bar(f"embed {model}", len(todo), show_progress) as advance:
                for start in range(0, len(todo), batch_size):
                    pairs = [data[i] for i in todo[start:start + batch_size]]
                    images, text = backbone.features([p.winner for p in pairs] + [p.loser for p in pairs],
                                                     [p.caption for p in pairs])
                    cache.add(identity, [p.sample_id for p in pairs], text, images[:len(pairs)],
                              images[len(pairs):])
                    advance(len(pairs))
            del backbone
            vectors.update(cache.read(identity, [data.sample_ids[i] for i in todo]))
        unusable = [sid for sid in first_index if sid not in vectors]
        if unusable:  # freshly computed and still not finite: the model or dtype, not the cache
            raise BadInputError(f"embedding model {model} ({identity}) gave non-finite features for "
                                f"{len(unusable)} pair(s), e.g. {unusable[0]}; compute the embeddings in float32")
    finally:
        cache.close()
    log.info("embeddings %s: %d computed, %d from the cache %s", model, len(todo), len(first_index) - len(todo),
             cache.path)
    columns = [torch.from_numpy(np.stack([vectors[sid][k] for sid in data.sample_ids])) for k in range(3)]
    return EmbeddingTable(*columns, model_identity=identity, sample_ids=tuple(data.sample_ids),
                          computed=len(todo), from_cache=len(first_index) - len(todo))


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def pair_embeddings(table: EmbeddingTable, indices: Sequence[int] | torch.Tensor,
                    mode: str = "joint") -> tuple[torch.Tensor, torch.Tensor]:
    """(u, v), each [M, d] and L2-normalised, for the weights S_ij = cos(u_i, v_j) of METHOD.md.

    text: u_i = T(c_i), v_j = T(c_j); image: u_i = I(x^w_i), v_j = I(x^l_j);
    joint: u_i = n(n(T(c_i)) + n(I(x^w_i))), v_j = n(n(T(c_j)) + n(I(x^l_j))) with n the L2 normalisation.
    """
    if mode not in EMBED_MODES:
        raise ValueError(f"unknown embedding mode {mode!r}; accepted: {', '.join(EMBED_MODES)}")
    index = torch.as_tensor(indices, dtype=torch.long).cpu()
    text = _normalise(table.text[index])
    if mode == "text":
        return text, text
    image_w, image_l = _normalise(table.image_w[index]), _normalise(table.image_l[index])
    if mode == "image":
        return image_w, image_l
    return _normalise(text + image_w), _normalise(text + image_l)
