"""The style's base model's images of its references' captions: the losers of `reference` style pairs and the
negatives the style probe is fitted on. Generated once through `evaluate`, so they are cached, verified and
recorded like every other image."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from PIL import Image

from rpo_bench.core.atomic import atomic_write
from rpo_bench.core.config import default_image_cache, safe_child
from rpo_bench.core.errors import BadInputError
from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate
from rpo_bench.evaluation.image_cache import ImageCache
from rpo_bench.evaluation.protocols import PROTOCOLS
from rpo_bench.evaluation.store import ResultsStore
from rpo_bench.models.catalog import resolve_model
from rpo_bench.models.loader import model_fingerprint
from rpo_bench.style.registry import Reference, Style, reference_images, style_home


def _occurrences(references: list[Reference]) -> list[int]:
    """For each reference, how many earlier references share its caption: the j-th image captioned "a landscape
    painting" is paired with base images of other seeds than the first, so repeated captions get distinct losers."""
    seen: dict[str, int] = {}
    out = []
    for reference in references:
        out.append(seen.get(reference.caption, 0))
        seen[reference.caption] = out[-1] + 1
    return out


def _base_protocol(style: Style) -> str:
    return style.protocol or resolve_model(style.base_model).protocol


def base_images_for_references(style: Style, per_reference: int = 1, *, device: str = "auto",
                               show_progress: bool = True, batch_size: int = 16) -> list[list[Image.Image]]:
    """`per_reference` images of the base model for each reference's caption (same order as reference_images),
    generated through `evaluate`, so they are cached, verified and recorded like every other image."""
    references = reference_images(style)
    occurrence = _occurrences(references)
    shas = _generate_base_images(style, references, occurrence, per_reference, device, show_progress, batch_size)

    cache = ImageCache(default_image_cache())
    try:
        out = []
        for reference, j in zip(references, occurrence, strict=True):
            images = []
            for s in range(per_reference):
                image = cache.read(shas[(reference.caption, j * per_reference + s)])
                if image is None:  # damaged between generation and now: a rerun regenerates it
                    raise BadInputError(f"style {style.name!r}: a cached base image failed verification; run the "
                                        "command again to regenerate it")
                images.append(image.convert("RGB"))
            out.append(images)
        return out
    finally:
        cache.close()


def _generate_base_images(style: Style, references: list[Reference], occurrence: list[int], per_reference: int,
                          device: str, show_progress: bool, batch_size: int) -> dict[tuple[str, int], str]:
    """(caption, seed) -> image sha256. One evaluate call per occurrence level j, over the captions that occur
    more than j times, with seeds j*k .. j*k+k-1: no caption gets images it does not need."""
    folder = safe_child(style_home(style), "base-images", what="style folder")
    folder.mkdir(parents=True, exist_ok=True)
    store_path = folder / "generation.sqlite"
    protocol = _base_protocol(style)
    for level in range(max(occurrence) + 1):
        captions = list(dict.fromkeys(r.caption for r, j in zip(references, occurrence, strict=True) if j == level))
        prompt_file = _prompt_file(folder, captions)
        seeds = tuple(range(level * per_reference, (level + 1) * per_reference))
        evaluate(EvaluateConfig(models=(style.base_model,), prompts=str(prompt_file), metrics=(), seeds=seeds,
                                protocol=protocol, store=store_path, image_cache=default_image_cache(),
                                device=device, batch_size=batch_size, show_progress=show_progress))

    spec = resolve_model(style.base_model)
    with ResultsStore(store_path) as results:
        rows = results.images_of(model_fingerprint(spec), PROTOCOLS.get(protocol).fingerprint(spec.family))
    # the dtype is the device's default, the same for every row of this store on this machine
    return {(prompt, seed): sha for prompt, seed, sha in rows}


def _prompt_file(folder: Path, captions: list[str]) -> Path:
    """A .jsonl prompt file named by its content, so the same captions always make the same prompt set."""
    text = "".join(json.dumps({"prompt": caption}) + "\n" for caption in captions)
    path = folder / f"captions-{hashlib.sha256(text.encode()).hexdigest()[:12]}.jsonl"
    if not path.is_file():
        atomic_write(path, text)
    return path
