"""Style preference data, in the two modes of METHOD.md "Style alignment", written in the Pick-a-Pic layout that
`rpo-bench train` reads unchanged.

- `reference`: winner = a reference image of the style with its (content) caption, loser = the base model's image
  for that caption. The base images are generated once through the image cache and reused by the style probe.
- `relabel`: an existing preference set, re-labelled so that the image the style probe (`style-prob:S`) rates
  more stylised wins: the style's samples become "the preferred samples within the dataset".

Both are deterministic (seeded) and cached in a folder named by a hash of everything they depend on.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from pathlib import Path
from typing import Any

from rpo_bench.core.atomic import atomic_write
from rpo_bench.core.config import home_dir, resolve_device, safe_child
from rpo_bench.core.errors import BadInputError
from rpo_bench.core.progress import progress_bar, stage
from rpo_bench.core.user_files import read_bytes
from rpo_bench.metrics import make_metric
from rpo_bench.models.catalog import resolve_model
from rpo_bench.models.loader import model_fingerprint
from rpo_bench.style.base_images import base_images_for_references
from rpo_bench.style.registry import (
    MAX_REFERENCE_BYTES,
    Reference,
    Style,
    png_bytes,
    reference_images,
    references_fingerprint,
)
from rpo_bench.training.data import load_preference_data, write_preference_folder
from rpo_bench.training.micro_pickapic import resolve_preference_source

FORMAT = 1  # bump when the way pairs are made changes: it moves the cached folders
PAIR_MODES = ("reference", "relabel")
SUMMARY_FILE = "summary.json"


# -- the two modes -----------------------------------------------------------------------------------------------
def style_pairs_dir(style: Style, mode: str, settings: dict[str, Any]) -> Path:
    identity = {"style": style.settings(), "references": references_fingerprint(style), "mode": mode,
                "base": model_fingerprint(resolve_model(style.base_model)), "format": FORMAT, **settings}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return safe_child(home_dir() / "preferences", f"style-{style.name}-{mode}-{key}", what="preference set")


def build_style_pairs(style: Style, mode: str = "reference", *, source: str | None = None, per_reference: int = 1,
                      margin: float = 0.0, device: str = "auto", show_progress: bool = True) -> Path:
    """The style's preference folder (built once, then reused); returns the folder `train --data` reads."""
    if mode not in PAIR_MODES:
        raise BadInputError(f"--pairs {mode!r}; accepted: {', '.join(PAIR_MODES)}")
    if mode == "relabel" and not source:
        raise BadInputError(f"--pairs relabel re-labels an existing preference set and none was given; accepted: "
                            f"--data PATH|HUB-ID|micro-pickapic (style {style.name!r})")
    if not isinstance(per_reference, int) or isinstance(per_reference, bool) or not 1 <= per_reference <= 64:
        raise BadInputError(f"base images per reference {per_reference!r}: accepted: an integer from 1 to 64")
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not math.isfinite(margin) or margin < 0:
        raise BadInputError(f"relabel margin {margin!r}: accepted: a number >= 0")
    if mode == "relabel":
        source = resolve_preference_source(source, show_progress=show_progress)
        settings = {"source": _source_identity(source), "margin": margin}
    else:
        settings = {"per_reference": per_reference}
    folder = style_pairs_dir(style, mode, settings)
    if (folder / SUMMARY_FILE).is_file():
        return folder
    started = time.perf_counter()
    stage("building pairs", f"style {style.name}, {mode} mode (built once, then reused from {folder})")
    if mode == "reference":
        rows, summary = _reference_rows(style, per_reference, device, show_progress)
    else:
        rows, summary = _relabel_rows(style, source, margin, device, show_progress)

    write_preference_folder(rows, folder)
    summary |= {"style": style.name, "mode": mode, "pairs": len(rows), **settings,
                "seconds": round(time.perf_counter() - started, 2)}
    _write_json(folder / SUMMARY_FILE, summary)
    return folder


def _source_identity(source: str) -> str:
    """A local set by the hash of its pairs file (new rows make a new relabelled set); a Hub id by its name."""
    path = Path(source).expanduser()
    pairs = path / "pairs.jsonl" if path.is_dir() else path
    if pairs.is_file():
        return hashlib.sha256(read_bytes(pairs, "preference pairs file", max_bytes=None)).hexdigest()
    return source


def _winner_first(caption: str, winner: bytes, loser: bytes) -> bool:
    """Which column holds the winner, from a seeded draw on the pair itself: label_0 is not always 1."""
    key = hashlib.sha256(caption.encode() + hashlib.sha256(winner).digest() + hashlib.sha256(loser).digest())
    return random.Random(key.hexdigest()).random() < 0.5


def _pair_row(caption: str, winner: bytes, loser: bytes, extra: dict[str, Any]) -> dict[str, Any]:
    first = _winner_first(caption, winner, loser)
    return {"caption": caption, "jpg_0": winner if first else loser, "jpg_1": loser if first else winner,
            "label_0": 1.0 if first else 0.0, "label_1": 0.0 if first else 1.0, **extra}


def _reference_bytes(style: Style, reference: Reference) -> bytes:
    """A folder's file as it is (a JPEG stays a JPEG); a render or a Hub row as PNG."""
    if style.folder:
        path = Path(style.folder).expanduser() / reference.name
        if path.is_file():
            return read_bytes(path, f"style {style.name!r}: reference image", max_bytes=MAX_REFERENCE_BYTES)
    return png_bytes(reference.image)


def _reference_rows(style: Style, per_reference: int, device: str,
                    show_progress: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    references = reference_images(style)
    stage("generating losers", f"{per_reference * len(references)} {style.base_model} image(s) of the "
          f"{len(references)} references' captions")
    losers = base_images_for_references(style, per_reference, device=device, show_progress=show_progress)
    rows = []
    for reference, images in zip(references, losers, strict=True):
        winner = _reference_bytes(style, reference)
        for index, image in enumerate(images):
            rows.append(_pair_row(reference.caption, winner, png_bytes(image),
                                  {"style": style.name, "mode": "reference", "reference": reference.name,
                                   "loser_model": style.base_model, "loser_index": index}))
    return rows, {"references": len(references), "base_images": sum(len(images) for images in losers),
                  "captions": len({r.caption for r in references})}


def _relabel_rows(style: Style, source: str, margin: float, device: str,
                  show_progress: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    data = load_preference_data(source, show_progress=show_progress)
    probe = make_metric(f"style-prob:{style.name}")
    import torch  # noqa: PLC0415 - torch loads in seconds: on first use

    probe.load(resolve_device(device), torch.float32)
    rows, kept_same, dropped, winners, losers = [], 0, 0, [], []
    chunk = 16  # pairs scored together: one batch of 32 images
    with progress_bar(f"relabel by style-prob:{style.name}", len(data), show_progress) as advance:
        for start in range(0, len(data), chunk):
            pairs = [data[index] for index in range(start, min(start + chunk, len(data)))]
            images = [image for pair in pairs for image in (pair.winner, pair.loser)]
            scores = probe.score(images, [pair.caption for pair in pairs for _ in range(2)])
            for offset, pair in enumerate(pairs):
                first, second = scores[2 * offset], scores[2 * offset + 1]
                if abs(first - second) <= margin:
                    dropped += 1
                    continue
                first_bytes, second_bytes = data.image_bytes(start + offset)  # (original winner, original loser)
                kept_same += first > second
                win, lose = (first_bytes, second_bytes) if first > second else (second_bytes, first_bytes)
                winners.append(max(first, second))
                losers.append(min(first, second))
                rows.append(_pair_row(pair.caption, win, lose,
                                      {"style": style.name, "mode": "relabel",
                                       "style_prob_winner": round(max(first, second), 6),
                                       "style_prob_loser": round(min(first, second), 6)}))
            advance(len(pairs))
    probe.unload()
    if not rows:
        raise BadInputError(f"style {style.name!r}: no pair of {source} has a style-prob gap above margin {margin}; "
                            "accepted: a preference set whose images differ in style, or a lower margin")
    return rows, {"source_pairs": len(data), "dropped_for_margin": dropped,
                  "kept_original_label": round(kept_same / len(rows), 6),
                  "winners_style_prob": round(math.fsum(winners) / len(winners), 6),
                  "losers_style_prob": round(math.fsum(losers) / len(losers), 6),
                  "probe_notes": probe.notes()}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=1) + "\n")
