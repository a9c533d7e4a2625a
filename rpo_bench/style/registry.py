"""The style registry and the style's reference images (METHOD.md "Style alignment").

A style names where its reference images come from (a Hub dataset with a filter, a local folder, or the micro
world's renderer), the held-out content prompts it is evaluated on, the base model it is taught to, and the CLIP
its probe and centroid metrics embed images with. Built-ins live in styles.toml; users add or override styles in
`$RPO_BENCH_HOME/registry.toml` under `[styles.NAME]` (a user `folder` replaces a built-in's source).

Every reader gets the references through `reference_images`: a Hub dataset is streamed once into a folder under
the home (so later runs work offline), a folder is read as it is, micro references are rendered (deterministic).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

from rpo_bench.core.config import home_dir, safe_child
from rpo_bench.core.errors import BadInputError, MissingWeightsError
from rpo_bench.core.progress import progress_bar
from rpo_bench.core.registry import (
    INTEGER,
    STRING,
    Registry,
    ValueRule,
    check_table_keys,
    check_table_values,
    read_toml,
    rules_from_dataclass,
)
from rpo_bench.core.user_files import MAX_BYTES, read_bytes, read_jsonl, read_text
from rpo_bench.hub.availability import hub_unavailable
from rpo_bench.hub.dataset_cells import image_bytes
from rpo_bench.metrics.preprocess import open_user_image
from rpo_bench.micro.render import render
from rpo_bench.micro.scenes import STYLES as MICRO_STYLES
from rpo_bench.micro.scenes import all_scenes, scene_prompt

log = logging.getLogger(__name__)

# A probe fitted on fewer references is a coin toss on its held-out fifth (4 images at 20): below this, refuse.
MIN_REFERENCES = 20
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CAPTIONS_FILE = "captions.jsonl"  # {"file": "NAME.png", "caption": "..."} per line; or NAME.txt beside NAME.png
MAX_REFERENCE_BYTES = MAX_BYTES  # per reference image file; larger files are refused by name
MICRO_REFERENCE_SEED = 7_000  # the renders' draw; far from the micro world's training seeds
FORMAT = 1  # bump when the way references are picked changes: it moves the materialised folders


@dataclass(frozen=True)
class Style:
    name: str
    description: str = ""
    base_model: str = "micro-base"
    prompts: str = ""  # the held-out content prompts: a prompt-set name or file
    embedding: str = "micro-clip"  # CLIP of style-prob / style-sim / base-sim: micro-clip, tiny-clip:N, HF id, folder
    folder: str | None = None
    dataset: str | None = None
    split: str = "train"
    filter: tuple[tuple[str, str], ...] = ()  # (column, value): keep rows whose class name or value matches
    image_column: str = "image"
    caption_column: str | None = None
    caption: str = ""  # template when the source has no caption column: "a {genre} painting"
    micro: str | None = None
    references: int = 200  # how many references are used (the first ones in a fixed order)
    protocol: str | None = None  # None: the base model's default protocol
    judges: tuple[str, ...] = ()  # ground-truth metrics that `evaluate --style` adds (the micro world's judge)
    csd: bool = True  # whether `evaluate --style` scores csd:S by default
    verify: str = ""  # what is known about the source and what a first real download should check
    source: str = "built-in"

    @property
    def source_kind(self) -> str:
        return "folder" if self.folder else "dataset" if self.dataset else "micro"

    @property
    def source_text(self) -> str:
        if self.folder:
            return f"folder {self.folder}"
        if self.dataset:
            chosen = ", ".join(f"{k} = {v}" for k, v in self.filter)
            return f"hf:{self.dataset} [{self.split}]" + (f" where {chosen}" if chosen else "")
        return f"micro world renders in style {self.micro!r}"

    def settings(self) -> dict[str, Any]:
        """What identifies the style's data: hashed into the names of everything built from it."""
        keep = ("folder", "dataset", "split", "filter", "image_column", "caption_column", "caption", "micro",
                "references", "base_model", "embedding", "protocol")
        return {name: (dict(value) if name == "filter" else value)
                for name in keep if (value := getattr(self, name)) is not None}


_FIELDS = {f.name for f in fields(Style)} - {"name", "source"}
_RULES = rules_from_dataclass(Style, {
    "references": INTEGER.refine(f"an integer >= {MIN_REFERENCES}", lambda value: value >= MIN_REFERENCES),
    "filter": ValueRule("a table of column = value strings", lambda value: isinstance(value, Mapping)
                        and all(isinstance(v, str) for v in value.values())),
    "judges": ValueRule("a list of metric names", lambda value: isinstance(value, list)
                        and all(isinstance(item, str) for item in value)),
    "summary": STRING,
})
_SOURCES = ("folder", "dataset", "micro")


@lru_cache(maxsize=1)
def _builtin_tables() -> dict[str, dict[str, Any]]:
    return read_toml(Path(str(resources.files("rpo_bench.style") / "styles.toml")))


def style_from_table(name: str, table: Mapping[str, Any], source: str = "built-in") -> Style:
    """A style from its TOML table. A user table that names a built-in overrides its keys, and a user `folder`
    replaces the built-in's source (so `[styles.vangogh] folder = "..."` is all it takes)."""
    check_table_keys("styles", name, table, _FIELDS | {"summary"})
    check_table_values("styles", name, table, _RULES)
    merged = dict(_builtin_tables().get(name, {})) if source != "built-in" else {}
    if any(key in table for key in _SOURCES):
        merged = {k: v for k, v in merged.items() if k not in _SOURCES}
    merged.update(table)
    merged.pop("summary", None)
    given = [key for key in _SOURCES if merged.get(key)]
    if len(given) != 1:
        raise BadInputError(f"style {name!r}: give exactly one reference source (folder, dataset or micro); "
                            f"found {', '.join(given) if given else 'none'}")
    if not merged.get("prompts"):
        raise BadInputError(f"style {name!r}: `prompts` (the held-out content prompts) is missing; accepted: a "
                            "prompt-set name or a .txt/.jsonl file")
    if "judges" in merged:
        merged["judges"] = tuple(merged["judges"])
    if "filter" in merged:
        merged["filter"] = tuple(sorted(merged["filter"].items()))
    return Style(name=name, source=source, **merged)


def _from_user_table(name: str, table: Mapping[str, Any]) -> Style:
    return style_from_table(name, table, source="user")


STYLES: Registry[Style] = Registry("styles", from_table=_from_user_table)
for _name, _table in _builtin_tables().items():
    STYLES.register(_name, style_from_table(_name, _table), summary=str(_table.get("description", "")))


def get_style(name: str) -> Style:
    """The style called `name`; an unknown name fails with the close matches."""
    return STYLES.get(name)


# -- reference images ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reference:
    image: Image.Image
    caption: str
    sha256: str  # of the image file's bytes (micro: of the render's PNG bytes)
    name: str  # the file name, or the render's index


def reference_images(style: Style, show_progress: bool = False) -> list[Reference]:
    """The style's references, at most `style.references`, in a fixed order; at least MIN_REFERENCES."""
    if style.micro:
        references = _micro_references(style)
    else:
        folder = Path(style.folder).expanduser() if style.folder else materialise_dataset(style, show_progress)
        references = _folder_references(style, folder)
    if len(references) < MIN_REFERENCES:
        raise BadInputError(f"style {style.name!r}: {len(references)} reference image(s) in {style.source_text}; "
                            f"accepted: at least {MIN_REFERENCES} (the style probe holds out a fifth to measure "
                            "its accuracy)")
    return references


def references_fingerprint(style: Style) -> str:
    """A short hash of the references (images and captions) and the style's settings: names probes, centroids
    and preference sets, so new reference images never reuse an old one. Computed once per process and style."""
    settings = json.dumps(style.settings(), sort_keys=True, default=str)
    key = (style.name, settings)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256(settings.encode())
        for reference in reference_images(style):
            digest.update(f"{reference.sha256}\0{reference.caption}\n".encode())
        _FINGERPRINTS[key] = digest.hexdigest()[:16]
    return _FINGERPRINTS[key]


_FINGERPRINTS: dict[tuple[str, str], str] = {}


def style_home(style: Style) -> Path:
    """$RPO_BENCH_HOME/styles/<name>: the style's materialised references, probes and base images."""
    return safe_child(home_dir() / "styles", style.name, what="style name")


def _folder_references(style: Style, folder: Path) -> list[Reference]:
    if not folder.is_dir():
        raise BadInputError(f"style {style.name!r}: reference folder {folder} does not exist; accepted: a folder "
                            f"of {', '.join(IMAGE_SUFFIXES)} images")


    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    captions = _captions(folder)
    references, unreadable = [], 0
    for path in files:
        if len(references) == style.references:
            break
        # Regular files of at most MAX_BYTES only, checked before they are opened: a FIFO named zz.png would hang
        # the read, a link to /dev/zero fill memory. Refused in one line; an image that does not decode is skipped.
        data = read_bytes(path, f"style {style.name!r}: reference image", max_bytes=MAX_REFERENCE_BYTES)
        try:
            image = open_user_image(io.BytesIO(data), name=str(path)).convert("RGB")
        except (BadInputError, OSError):
            unreadable += 1
            continue
        caption = captions.get(path.name) or _caption_beside(path) or fill_caption(style.caption, {})
        references.append(Reference(image, caption.strip(), hashlib.sha256(data).hexdigest(), path.name))
    if not references:
        raise BadInputError(f"style {style.name!r}: reference folder {folder} has no readable images ({len(files)} "
                            f"image file(s), {unreadable} unreadable); accepted: {', '.join(IMAGE_SUFFIXES)} images")
    if unreadable:
        log.warning("style %s: skipped %d unreadable image(s) in %s", style.name, unreadable, folder)
    return references


class _Fields(dict):
    """A caption template's `{column}` with no value (a folder has no row) becomes nothing, not a KeyError."""

    def __missing__(self, key: str) -> str:
        return ""


def fill_caption(template: str, values: Mapping[str, str]) -> str:
    return " ".join(template.format_map(_Fields(values)).split())


def _captions(folder: Path) -> dict[str, str]:
    """captions.jsonl through the one reader of user files: UTF-8 (or one line naming the byte offset), a regular
    file, each line a {"file": ..., "caption": ...} object of strings."""
    path = folder / CAPTIONS_FILE
    if not os.path.lexists(path):
        return {}
    captions = {}
    for number, record in read_jsonl(path, "captions file"):
        if not (isinstance(record, dict) and isinstance(record.get("file"), str)
                and isinstance(record.get("caption"), str)):
            raise BadInputError(f"captions file {path} line {number}: {_shown(record)}; accepted: one "
                                "{\"file\": \"NAME.png\", \"caption\": \"...\"} object of strings per line")
        captions[record["file"]] = record["caption"]
    return captions


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _caption_beside(path: Path) -> str | None:
    """NAME.txt beside NAME.png, through the same reader (UTF-8, a regular file)."""
    text = path.with_suffix(".txt")
    return read_text(text, "caption file").strip() if os.path.lexists(text) else None


def _micro_references(style: Style) -> list[Reference]:
    """Renders of micro-train scenes in the style, captioned with the plain content prompt: the model must learn
    to draw the style for prompts that never name it."""
    import numpy as np  # noqa: PLC0415 - numpy: on first use, off the start-up path


    if style.micro not in MICRO_STYLES or style.micro == "plain":
        raise BadInputError(f"style {style.name!r}: micro = {style.micro!r}; accepted: "
                            f"{', '.join(s for s in MICRO_STYLES if s != 'plain')}")
    pool = all_scenes("train")
    rng = np.random.default_rng(MICRO_REFERENCE_SEED)
    order = rng.permutation(len(pool))
    references = []
    for index in range(style.references):
        scene = pool[int(order[index % len(pool)])]
        seed = MICRO_REFERENCE_SEED + index
        image = render(replace(scene, style=style.micro), seed=seed)
        references.append(Reference(image, scene_prompt(scene), hashlib.sha256(png_bytes(image)).hexdigest(),
                                    f"render-{index:04d}"))
    return references


def png_bytes(image: Image.Image) -> bytes:
    """The image encoded as PNG: how renders are hashed, and how they are written into a preference set."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# -- a Hub dataset, streamed once into a folder ----------------------------------------------------------------
def dataset_folder(style: Style) -> Path:
    key = hashlib.sha256(json.dumps({**style.settings(), "format": FORMAT}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:12]
    return safe_child(style_home(style), f"references-{key}", what="style folder")


def materialise_dataset(style: Style, show_progress: bool = True) -> Path:
    """Stream the first `references` rows that pass the filter into a folder (images + captions.jsonl), once.
    Offline without that folder: one line saying how to get it, not a library traceback."""
    folder = dataset_folder(style)
    if (folder / CAPTIONS_FILE).is_file():
        return folder

    if (reason := hub_unavailable()) is not None:  # not the datasets library's retries
        raise MissingWeightsError(
            f"style {style.name!r}: its references come from hf:{style.dataset}, which is not cached on this machine "
            f"and {reason}; accepted: run `rpo-bench styles fetch {style.name}` once online, or point "
            f"the style at a folder of images: [styles.{style.name}] folder = \"PATH\" in registry.toml")
    # atomic: every file goes into `.partial`, which replaces the folder in one rename once complete
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        rows = _stream_rows(style, show_progress)
        lines = []
        for index, (data, caption) in enumerate(rows):
            name = f"{index:05d}{_suffix(data)}"
            (partial / name).write_bytes(data)
            lines.append(json.dumps({"file": name, "caption": caption}) + "\n")
        (partial / CAPTIONS_FILE).write_text("".join(lines), encoding="utf-8")
        (partial / "source.json").write_text(json.dumps(style.settings(), indent=1, default=str) + "\n",
                                             encoding="utf-8")
        os.replace(partial, folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return folder


def _suffix(data: bytes) -> str:
    return ".png" if data.startswith(b"\x89PNG") else ".webp" if data[8:12] == b"WEBP" else ".jpg"


def _label_name(value: Any, feature: Any) -> str:
    """A class label's name as the dataset spells it, or the value as text: what a filter compares."""
    names = getattr(feature, "names", None)
    return str(names[value] if names is not None and isinstance(value, int) else value)


def _label_text(value: Any, feature: Any) -> str:
    """A label as caption words: the first synonym ("tench, Tinca tinca" -> "tench"), underscores as spaces."""
    return _label_name(value, feature).split(",")[0].replace("_", " ").strip()


def _stream_rows(style: Style, show_progress: bool):
    import datasets  # noqa: PLC0415 - datasets loads in seconds: on first use


    try:
        stream = datasets.load_dataset(style.dataset, split=style.split, streaming=True)
        features = stream.features or {}
        if isinstance(features.get(style.image_column), datasets.Image):
            stream = stream.cast_column(style.image_column, datasets.Image(decode=False))
        kept = 0
        with progress_bar(f"fetch {style.name} references", style.references, show_progress) as advance:
            for row in stream:
                if not all(_label_name(row.get(column), features.get(column)) == wanted
                           for column, wanted in style.filter):
                    continue
                fields_ = {key: _label_text(value, features.get(key)) for key, value in row.items()
                           if key != style.image_column}
                caption = (str(row[style.caption_column]) if style.caption_column
                           else fill_caption(style.caption, fields_))
                yield image_bytes(row[style.image_column]), caption
                kept += 1
                advance(1)
                if kept == style.references:
                    return
    except (OSError, ConnectionError) as exc:
        raise MissingWeightsError(f"style {style.name!r}: cannot read hf:{style.dataset} [{style.split}] "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                                  f"accepted: a reachable Hub dataset, or [styles.{style.name}] folder = \"PATH\"") \
            from exc
