"""Preference pairs in the Pick-a-Pic v2 layout: `caption`, `jpg_0`, `jpg_1`, `label_0` (+ `label_1`, `model_*`).

Sources: a local `.jsonl` (image paths) or a folder holding `pairs.jsonl`, a local `.parquet` file or folder of
shards (image bytes, Pick-a-Pic's own layout), or a Hugging Face dataset id. Every source goes through the same
checks: labels must be 0, 0.5 or 1; ties are dropped; rows whose image is missing or does not decode are skipped
and counted when loading, so the number of usable pairs is known before training starts.

A pair's `sample_id` hashes its caption and the bytes of both images (winner first), so it names the content,
whatever file, order or side it came from: the embedding cache and checkpoints can rely on it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from rpo_bench.core.atomic import atomic_write
from rpo_bench.core.config import home_dir, is_offline, safe_child
from rpo_bench.core.errors import BadInputError, MissingWeightsError
from rpo_bench.core.progress import progress_bar
from rpo_bench.hub.dataset_cells import image_bytes
from rpo_bench.metrics.preprocess import to_eight_bit

log = logging.getLogger(__name__)

PAIRS_FILE = "pairs.jsonl"
IMAGE_COLUMNS = ("jpg_0", "jpg_1")
REQUIRED_COLUMNS = ("caption", *IMAGE_COLUMNS, "label_0")
LABELS = (0.0, 0.5, 1.0)
# Optional per-image utilities (micro-pickapic writes the judge's; a labelled set writes 0/1): what an unpaired
# method (KTO) can label single images by, with a threshold.
SCORE_COLUMNS = ("score_0", "score_1")
_SAMPLE_ID_DOMAIN = b"rpo-bench preference pair v1\n"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class PreferencePair:
    sample_id: str
    caption: str
    winner: Image.Image
    loser: Image.Image


def pair_sample_id(caption: str, winner: bytes, loser: bytes) -> str:
    """Hash of hashes, so the three parts cannot run into each other."""
    return _pair_id(caption, hashlib.sha256(winner).digest(), hashlib.sha256(loser).digest())


def _pair_id(caption: str, winner_digest: bytes, loser_digest: bytes) -> str:
    digest = hashlib.sha256(_SAMPLE_ID_DOMAIN)
    for part in (hashlib.sha256(caption.encode("utf-8")).digest(), winner_digest, loser_digest):
        digest.update(part)
    return digest.hexdigest()


# -- where an image's bytes live ------------------------------------------------------------------------------
class ImageRef(Protocol):
    def read(self) -> bytes: ...


@dataclass(frozen=True)
class _FileImage:
    path: Path

    def read(self) -> bytes:
        return self.path.read_bytes()


@dataclass(frozen=True)
class _BytesImage:
    data: bytes

    def read(self) -> bytes:
        return self.data


@dataclass(frozen=True, eq=False)
class _HubImage:
    """A cell of a memory-mapped `datasets.Dataset`: read on demand so a big split is not held in memory."""

    dataset: Any
    row: int
    column: str

    def read(self) -> bytes:
        return image_bytes(self.dataset[self.row][self.column])


def decodes(data: bytes) -> bool:
    """Full decode (JPEG at 1/8 scale, which still reads every entropy-coded byte).

    PIL's verify() does not notice a truncated JPEG, and half-downloaded Pick-a-Pic JPEGs are the common case.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
        return True
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False


def _open_rgb(data: bytes, name: str) -> Image.Image:
    """16-bit and float images scaled as the scorers scale them (PIL's convert would clip them to white)."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return to_eight_bit(image, name).convert("RGB")


# -- the loaded data ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _PairRef:
    sample_id: str
    caption: str
    winner: ImageRef
    loser: ImageRef
    image_ids: tuple[str, str]  # sha256 of the winner's and the loser's bytes: the same image in two pairs
    scores: tuple[float | None, float | None]  # the winner's and the loser's utility, where the data has one


class PreferenceData:
    """Indexable pairs, winner first; images decode when an item is read."""

    def __init__(self, pairs: Sequence[_PairRef], source: str, stats: dict[str, int]):
        self._pairs = list(pairs)
        self.source = source
        self.stats = dict(stats)
        self.sample_ids = [p.sample_id for p in self._pairs]
        self.captions = [p.caption for p in self._pairs]
        self.image_ids = [p.image_ids for p in self._pairs]
        self.scores = [p.scores for p in self._pairs]
        self.fingerprint = hashlib.sha256("\n".join(self.sample_ids).encode()).hexdigest()

    def __len__(self) -> int:
        return len(self._pairs)

    def __getitem__(self, index: int) -> PreferencePair:
        ref = self._pairs[index]
        return PreferencePair(ref.sample_id, ref.caption, _open_rgb(ref.winner.read(), f"{ref.sample_id} (winner)"),
                              _open_rgb(ref.loser.read(), f"{ref.sample_id} (loser)"))

    def __iter__(self) -> Iterator[PreferencePair]:
        return (self[i] for i in range(len(self)))

    def image(self, index: int, side: int) -> Image.Image:
        """One decoded image of pair `index`: side 0 the winner, 1 the loser (an unpaired method's view)."""
        ref = self._pairs[index]
        return _open_rgb((ref.winner, ref.loser)[side].read(), f"{ref.sample_id} ({('winner', 'loser')[side]})")

    def image_bytes(self, index: int) -> tuple[bytes, bytes]:
        """The encoded (winner, loser) bytes, for callers that hash or copy without decoding."""
        ref = self._pairs[index]
        return ref.winner.read(), ref.loser.read()

    def __repr__(self) -> str:
        return f"PreferenceData({self.source!r}, {len(self)} pairs, fingerprint {self.fingerprint[:12]})"


# -- rows, validated the same way for every source ----------------------------------------------------------
@dataclass(frozen=True)
class _Row:
    where: str
    caption: str
    label_0: float
    images: tuple[ImageRef, ImageRef]
    scores: tuple[float | None, float | None] = (None, None)  # score_0, score_1 as the row gives them


def _require_columns(found: Iterable[str], where: str) -> None:
    found = list(found)
    for column in REQUIRED_COLUMNS:
        if column not in found:
            raise BadInputError(f"{where}: missing column {column!r}; columns found: {', '.join(found) or 'none'} "
                                f"(required: {', '.join(REQUIRED_COLUMNS)})")


def _label(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or float(value) not in LABELS:
        raise BadInputError(f"{where}: {name} = {value!r}; accepted: 0, 0.5 (a tie, dropped) or 1")
    return float(value)


def _make_row(record: Mapping[str, Any], where: str, images: tuple[ImageRef, ImageRef]) -> _Row:
    caption = record["caption"]
    if not isinstance(caption, str):
        raise BadInputError(f"{where}: caption = {caption!r}; accepted: a string")
    label_0 = _label(record["label_0"], "label_0", where)
    if record.get("label_1") is not None and _label(record["label_1"], "label_1", where) + label_0 != 1.0:
        raise BadInputError(f"{where}: label_0 = {record['label_0']!r} and label_1 = {record['label_1']!r} "
                            "do not sum to 1; accepted: (1, 0), (0, 1) or (0.5, 0.5)")
    return _Row(where, caption, label_0, images, tuple(_score(record.get(c), c, where) for c in SCORE_COLUMNS))


def _score(value: Any, name: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadInputError(f"{where}: {name} = {value!r}; accepted: a finite number (an image's utility or 0/1 "
                            "label) or null")
    return float(value)


def _check_limit(limit: int | None) -> int | None:
    if limit is None or limit == 0:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise BadInputError(f"limit {limit!r}: accepted: a positive integer (or 0 / None for all rows)")
    return limit


def _jsonl_rows(path: Path, limit: int | None) -> Iterator[_Row]:
    """Image paths are relative to the file's folder (or absolute); a null image counts as undecodable."""
    count = 0
    try:
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                if limit is not None and count >= limit:
                    return
                where = f"{path}:{line_number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BadInputError(f"{where}: not valid JSON ({exc.msg})") from exc
                if not isinstance(record, dict):
                    raise BadInputError(f"{where}: expected a JSON object with {', '.join(REQUIRED_COLUMNS)}")
                _require_columns(record, where)
                images = (_file_ref(record["jpg_0"], path.parent, where, "jpg_0"),
                          _file_ref(record["jpg_1"], path.parent, where, "jpg_1"))
                count += 1
                yield _make_row(record, where, images)
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path} is not UTF-8 text (byte {exc.start})") from exc


def _file_ref(value: Any, base: Path, where: str, column: str) -> ImageRef:
    if value is None:
        return _BytesImage(b"")
    if not isinstance(value, str) or not value:
        raise BadInputError(f"{where}: {column} = {value!r}; accepted: an image path (relative to the file) or null")
    path = Path(value).expanduser()
    return _FileImage(path if path.is_absolute() else base / path)


def _parquet_rows(paths: Sequence[Path], limit: int | None) -> Iterator[_Row]:
    """Pick-a-Pic's shards: images as bytes (or `datasets` {bytes, path} structs). Their bytes stay in memory."""
    import pyarrow as pa  # noqa: PLC0415 - pyarrow: on first use
    import pyarrow.parquet as pq  # noqa: PLC0415 - pyarrow: on first use

    count = 0
    for path in paths:
        try:
            parquet = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as exc:
            raise BadInputError(f"{path} is not a readable parquet file: {exc}") from exc
        names = parquet.schema_arrow.names
        _require_columns(names, str(path))
        columns = [c for c in (*REQUIRED_COLUMNS, "label_1", *SCORE_COLUMNS) if c in names]
        index = 0
        for batch in parquet.iter_batches(batch_size=256, columns=columns):
            for record in batch.to_pylist():
                if limit is not None and count >= limit:
                    return
                where = f"{path} row {index}"
                images = (_BytesImage(image_bytes(record["jpg_0"])), _BytesImage(image_bytes(record["jpg_1"])))
                count += 1
                index += 1
                yield _make_row(record, where, images)


def _hub_rows(dataset: Any, name: str, limit: int | None) -> Iterator[_Row]:
    import datasets  # noqa: PLC0415 - datasets loads in seconds: on first use

    _require_columns(dataset.column_names, name)
    for column in IMAGE_COLUMNS:  # keep encoded bytes: decoding every image to PIL here would be wasted
        if isinstance(dataset.features[column], datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
    total = len(dataset) if limit is None else min(limit, len(dataset))
    views = {c: dataset.select_columns([c]) for c in IMAGE_COLUMNS}
    meta = dataset.select_columns([c for c in ("caption", "label_0", "label_1", *SCORE_COLUMNS)
                                   if c in dataset.column_names])
    for start in range(0, total, 1000):
        batch = meta[start:min(start + 1000, total)]
        for offset in range(len(batch["caption"])):
            row = start + offset
            record = {column: values[offset] for column, values in batch.items()}
            images = (_HubImage(views["jpg_0"], row, "jpg_0"), _HubImage(views["jpg_1"], row, "jpg_1"))
            yield _make_row(record, f"{name} row {row}", images)


# -- from rows to pairs: ties, missing and undecodable images, sample ids ----------------------------------
_Inspected = tuple[tuple[str, tuple[str, str]] | None, str | None, str]


def _inspect(item: tuple[_Row, ImageRef, ImageRef]) -> _Inspected:
    """((sample_id, image ids), None, '') for a usable pair, else (None, 'missing' | 'undecodable', which file or
    row)."""
    row, winner, loser = item
    try:
        winner_bytes, loser_bytes = winner.read(), loser.read()
    except OSError as exc:
        return None, "missing", f"{row.where} ({exc.filename or exc})"
    if not (decodes(winner_bytes) and decodes(loser_bytes)):
        return None, "undecodable", row.where
    digests = hashlib.sha256(winner_bytes).digest(), hashlib.sha256(loser_bytes).digest()
    return (_pair_id(row.caption, *digests), (digests[0].hex(), digests[1].hex())), None, ""


def _build(rows: Iterable[_Row], source: str, show_progress: bool) -> PreferenceData:
    stats = {"rows": 0, "kept": 0, "ties_dropped": 0, "undecodable_skipped": 0, "missing_skipped": 0}
    candidates: list[tuple[_Row, ImageRef, ImageRef]] = []
    for row in rows:
        stats["rows"] += 1
        if row.label_0 == 0.5:
            stats["ties_dropped"] += 1
            continue
        winner, loser = row.images if row.label_0 == 1.0 else row.images[::-1]
        candidates.append((row, winner, loser))
    pairs: list[_PairRef] = []
    first_problem: dict[str, str] = {}
    workers = max(1, min(8, os.cpu_count() or 1))  # PIL and hashlib release the GIL
    with ThreadPoolExecutor(workers) as pool, progress_bar("check images", len(candidates), show_progress) as advance:
        for (row, winner, loser), (ids, problem, where) in zip(candidates, pool.map(_inspect, candidates),
                                                                strict=True):
            advance(1)
            if problem is not None:
                stats[f"{problem}_skipped"] += 1
                first_problem.setdefault(problem, where)
                continue
            scores = row.scores if row.label_0 == 1.0 else row.scores[::-1]
            pairs.append(_PairRef(ids[0], row.caption, winner, loser, ids[1], scores))
    stats["kept"] = len(pairs)
    if not pairs:  # one line that says why, rather than warnings followed by an error
        first = "; ".join(f"first {kind}: {where}" for kind, where in first_problem.items())
        raise BadInputError(f"{source}: no usable preference pairs ({stats['rows']} rows, "
                            f"{stats['ties_dropped']} ties, {stats['undecodable_skipped']} undecodable, "
                            f"{stats['missing_skipped']} missing images{'; ' + first if first else ''})")
    if stats["undecodable_skipped"]:
        log.warning("%s: skipped %d of %d pairs whose image does not decode (first: %s)", source,
                    stats["undecodable_skipped"], len(candidates), first_problem["undecodable"])
    if stats["missing_skipped"]:
        log.warning("%s: skipped %d of %d pairs whose image file is missing or unreadable (first: %s)", source,
                    stats["missing_skipped"], len(candidates), first_problem["missing"])
    return PreferenceData(pairs, source, stats)


# -- sources ----------------------------------------------------------------------------------------------------
def load_preference_data(source: str, *, split: str = "train", limit: int | None = None, stream: bool = False,
                         show_progress: bool = False) -> PreferenceData:
    """Load pairs from a `.jsonl` / `.parquet` file, a folder, or a Hugging Face dataset id.

    `limit` counts source rows (ties and bad images included), so the same limit always reads the same rows.
    `stream=True` (Hub only) downloads just the first `limit` rows into a reusable local folder.
    """
    limit = _check_limit(limit)
    path = Path(source).expanduser()
    if path.exists():
        return _load_local(path, limit, show_progress)
    if path.suffix in {".jsonl", ".parquet"} or source.startswith((".", "/", "~")) or not _HUB_ID.fullmatch(source):
        raise BadInputError(f"preference data {source!r} does not exist; accepted: a .jsonl or .parquet file, a "
                            f"folder holding {PAIRS_FILE} or .parquet shards, or a Hugging Face dataset id")
    if stream:
        return _load_hub_streamed(source, split, limit, show_progress)
    return _load_hub(source, split, limit, show_progress)


def _load_local(path: Path, limit: int | None, show_progress: bool) -> PreferenceData:
    if path.is_dir():
        if (path / PAIRS_FILE).is_file():
            path = path / PAIRS_FILE
        else:
            shards = sorted(path.glob("*.parquet"))
            if not shards:
                raise BadInputError(f"folder {path} holds neither {PAIRS_FILE} nor .parquet files")
            return _build(_parquet_rows(shards, limit), str(path), show_progress)
    if path.suffix == ".jsonl":
        return _build(_jsonl_rows(path, limit), str(path), show_progress)
    if path.suffix == ".parquet":
        return _build(_parquet_rows([path], limit), str(path), show_progress)
    raise BadInputError(f"preference file {path} has suffix {path.suffix!r}; accepted: .jsonl, .parquet")


def _hub_error(dataset_id: str, split: str, exc: Exception) -> MissingWeightsError:
    if is_offline():
        reason = "it is not cached on this machine and HF_HUB_OFFLINE is set"
    else:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
    return MissingWeightsError(f"preference dataset {dataset_id} [{split}] cannot be loaded: {reason} (and no "
                               "local file or folder has that name); run once online, or pass a local .jsonl / "
                               ".parquet (`rpo-bench pairs` makes one)")


def _load_hub(dataset_id: str, split: str, limit: int | None, show_progress: bool) -> PreferenceData:
    import datasets  # noqa: PLC0415 - datasets loads in seconds: on first use

    try:
        dataset = datasets.load_dataset(dataset_id, split=split)
    except ValueError as exc:  # an unknown split
        raise BadInputError(f"preference dataset {dataset_id}: {str(exc).splitlines()[0]}") from exc
    except OSError as exc:  # offline, not found, gated, network
        raise _hub_error(dataset_id, split, exc) from exc
    name = f"hf:{dataset_id} [{split}]"
    return _build(_hub_rows(dataset, name, limit), name, show_progress)


def streamed_folder(dataset_id: str, split: str, limit: int | None) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "--", dataset_id)
    return safe_child(home_dir() / "preferences", f"{safe}-{split}-{limit or 'all'}", what="preference data split")


def _load_hub_streamed(dataset_id: str, split: str, limit: int | None, show_progress: bool) -> PreferenceData:
    folder = streamed_folder(dataset_id, split, limit)
    if not (folder / PAIRS_FILE).is_file():
        if is_offline():
            raise _hub_error(dataset_id, split, OSError())
        _materialise_stream(dataset_id, split, limit, folder, show_progress)
    name = f"hf:{dataset_id} [{split}]"
    return _build(_jsonl_rows(folder / PAIRS_FILE, None), name, show_progress)


def _complete_lines(path: Path) -> int:
    """Rows already written by an interrupted download; a torn last line is cut off."""
    if not path.is_file():
        return 0
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    # atomic: a resumable append-only file inside `.partial`; cutting a torn last line is its repair
    if keep != len(data):
        with open(path, "r+b") as handle:
            handle.truncate(keep)
    return data[:keep].count(b"\n")


def _materialise_stream(dataset_id: str, split: str, limit: int | None, folder: Path, show_progress: bool) -> None:
    """Stream rows into `<folder>.partial` (resumable: one image file then one line per row), then rename.

    Ties and withdrawn images are kept here (a faithful mirror of the rows); loading drops and counts them.
    """
    # atomic: rows and images go into `.partial`, which replaces `folder` in one rename once complete
    import datasets  # noqa: PLC0415 - datasets loads in seconds: on first use

    partial = folder.with_name(folder.name + ".partial")
    (partial / "images").mkdir(parents=True, exist_ok=True)
    rows_path = partial / "rows.jsonl"
    done = _complete_lines(rows_path)
    try:
        stream = datasets.load_dataset(dataset_id, split=split, streaming=True)
        for column in IMAGE_COLUMNS:
            if stream.features is not None and isinstance(stream.features.get(column), datasets.Image):
                stream = stream.cast_column(column, datasets.Image(decode=False))
        if done:
            stream = stream.skip(done)
        if limit is not None:
            stream = stream.take(max(0, limit - done))
        total = (limit - done) if limit is not None else 0
        with open(rows_path, "a", encoding="utf-8") as out, \
                progress_bar(f"download {dataset_id}", total, show_progress) as advance:
            for record in stream:
                _require_columns(record, f"hf:{dataset_id} [{split}]")
                row = {k: v for k, v in record.items() if k not in IMAGE_COLUMNS}
                for column in IMAGE_COLUMNS:
                    data = image_bytes(record[column])
                    row[column] = store_image_bytes(data, partial / "images") if data else None
                out.write(json.dumps(row, default=str) + "\n")
                out.flush()
                advance(1)
    except ValueError as exc:
        raise BadInputError(f"preference dataset {dataset_id}: {str(exc).splitlines()[0]}") from exc
    except OSError as exc:
        raise _hub_error(dataset_id, split, exc) from exc
    os.replace(rows_path, partial / PAIRS_FILE)
    try:
        os.replace(partial, folder)
    except OSError:
        if not (folder / PAIRS_FILE).is_file():  # not another process finishing first: a real error
            raise
        shutil.rmtree(partial, ignore_errors=True)


# -- writing a preference folder ------------------------------------------------------------------------------
def _image_suffix(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data.startswith(b"\xff\xd8"):
        return ".jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ".img"


def store_image_bytes(data: bytes, images_dir: Path) -> str:
    """Content-addressed (same bytes, one file) and atomic; returns the path relative to the folder above."""
    name = hashlib.sha256(data).hexdigest() + _image_suffix(data)
    target = images_dir / name
    if not target.is_file():
        images_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(target, data)
    return f"{images_dir.name}/{name}"


def _store_image_file(source: Path, images_dir: Path) -> str:
    """Hard link when source and folder share a file system (no extra disk), else copy; atomic either way."""
    data = source.read_bytes()
    name = hashlib.sha256(data).hexdigest() + _image_suffix(data)
    target = images_dir / name
    if not target.is_file():
        images_dir.mkdir(parents=True, exist_ok=True)
        tmp = images_dir / f".{name}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
            os.replace(tmp, target)  # atomic: a hard link to a complete file, renamed into place
        except OSError:
            tmp.unlink(missing_ok=True)
            atomic_write(target, data)
    return f"{images_dir.name}/{name}"


def write_preference_folder(rows: Iterable[Mapping[str, Any]], out_dir: Path) -> Path:
    """Write `out_dir/pairs.jsonl` + `out_dir/images/`, the layout `load_preference_data` reads.

    Each row's `jpg_0` / `jpg_1` is a source image path or the image bytes. Images are content-addressed and
    written first; pairs.jsonl is replaced atomically last, so a reader never sees rows without their images.
    """
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    images_dir = out_dir / "images"
    lines: list[str] = []
    for row in rows:
        _require_columns(row, f"{out_dir} row {len(lines)}")
        out = dict(row)
        for column in IMAGE_COLUMNS:
            value = out[column]
            if isinstance(value, bytes | bytearray):
                out[column] = store_image_bytes(bytes(value), images_dir)
            elif value is not None:
                out[column] = _store_image_file(Path(value), images_dir)
        lines.append(json.dumps(out, default=str) + "\n")
    return atomic_write(out_dir / PAIRS_FILE, "".join(lines))
