"""The micro world in one picture: for held-out prompts, what each style looks like when rendered, beside what
micro-base draws when the prompt asks for that style.

Rows are the first N held-out ("unseen") prompts of micro-test; for every style two columns, the renderer's image
of the prompt's scene in that style and micro-base's image of the style-worded prompt. micro-base's images come
through the real evaluate path, so they are cached and a second run generates nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from PIL import Image

from rpo_bench.core.atomic import atomic_write
from rpo_bench.core.config import default_image_cache, default_store_path, home_dir, writable_dir
from rpo_bench.core.errors import BadInputError
from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate
from rpo_bench.evaluation.prompts import load_prompt_set
from rpo_bench.micro.render import render
from rpo_bench.micro.scenes import CONTENT_ATTRIBUTES, STYLE_TEMPLATES, STYLES, Scene, parse_prompt
from rpo_bench.models.catalog import resolve_model
from rpo_bench.reporting.grids import check_png_path, image_grid, open_store_and_cache, save_png, stored_images

PROMPT_SET = "micro-test"
CATEGORY = "unseen"  # shape x colour pairs micro-base never saw in training
MODEL = "micro-base"
PROTOCOL = "micro"  # micro-base's own protocol, the one its README numbers use
MAX_SEED = 2**32 - 1


def held_out_prompts(count: int) -> list[str]:
    """The first `count` held-out content prompts of micro-test, in file order (the file is shuffled, so these
    are a fair sample of it)."""
    held_out = [p.text for p in load_prompt_set(PROMPT_SET).prompts if p.category == CATEGORY]
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(held_out):
        raise BadInputError(f"--prompts {count}; accepted: an integer from 1 to {len(held_out)} (the held-out "
                            f"{PROMPT_SET} prompts)")
    return held_out[:count]


def prompt_scene(prompt: str) -> Scene:
    """The plain scene a content prompt describes; every content attribute must be named, or there is nothing
    definite to render."""
    requested = parse_prompt(prompt)
    missing = [a for a in CONTENT_ATTRIBUTES if a not in requested]
    if missing:
        raise BadInputError(f"micro prompt {prompt!r} does not name its {', '.join(missing)}; accepted: a full "
                            "micro scene prompt, e.g. 'a large red circle on the left, gray background'")
    return Scene(**{a: requested[a] for a in CONTENT_ATTRIBUTES})


def style_prompts(content: str) -> list[str]:
    """The content prompt worded for each style, in STYLES order (plain is the content prompt itself)."""
    return [STYLE_TEMPLATES[style].format(content) for style in STYLES]


def column_labels(model: str = MODEL) -> list[str]:
    labels = []
    for style in STYLES:
        labels += [f"render: {style}", f"{model}: {STYLE_TEMPLATES[style].format('<prompt>')}"]
    return labels


def _prompt_file(prompts: list[str]) -> Path:
    """The style-worded prompts as a .txt prompt set. Its path is named by its content, so the same grid names
    the same prompt set and evaluate finds its earlier run (a temporary path would make a new run each time)."""
    text = "".join(f"{prompt}\n" for prompt in prompts)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = writable_dir(home_dir() / "micro-grid", "the micro grid's prompt file")
    path = folder / f"styled-prompts-{digest}.txt"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write(path, text)
    return path


def _generate(model: str, prompts: list[str], seed: int, store: Path, image_cache: Path, show_progress: bool) -> None:
    evaluate(EvaluateConfig(models=(model,), prompts=str(_prompt_file(prompts)), metrics=(), seeds=(seed,),
                            protocol=PROTOCOL, store=store, image_cache=image_cache, show_progress=show_progress))


def micro_world_grid(prompts: int = 5, seed: int = 0, *, store: Path | None = None, image_cache: Path | None = None,
                     show_progress: bool = True, model: str = MODEL) -> Image.Image:
    """The picture (see the module docstring); `store` and `image_cache` default to evaluate's; `model` another
    micro base (a world built with `micro build --out DIR`: DIR/micro-base)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise BadInputError(f"--seed {seed}; accepted: an integer from 0 to {MAX_SEED}")
    contents = held_out_prompts(prompts)
    scenes = [prompt_scene(content) for content in contents]
    store = store or default_store_path()
    image_cache = image_cache or default_image_cache()
    worded = [prompt for content in contents for prompt in style_prompts(content)]
    _generate(model, worded, seed, store, image_cache, show_progress)
    results, cache = open_store_and_cache(store, image_cache)
    try:
        generated = stored_images(results, cache, resolve_model(model).name, PROTOCOL, worded, seed)
    finally:
        results.close()
        cache.close()
    cells = []
    for row, scene in enumerate(scenes):
        cells.append([])
        for column, style in enumerate(STYLES):
            cells[-1] += [render(replace(scene, style=style), seed=seed), generated[row * len(STYLES) + column]]
    label = Path(model).parent.name if "/" in model else model  # a built world: its folder's name
    title = (f"The micro world: held-out {PROMPT_SET} prompts, seed {seed}: each style rendered, and {label}'s "
             f"image ({PROTOCOL} protocol) when the prompt asks for it")
    return image_grid(cells, contents, column_labels(label), title=title)


def write_micro_world_grid(out: str | Path, prompts: int = 5, seed: int = 0, **options) -> Path:
    """Draw the picture into `out` (a .png, checked before anything is generated); returns its path."""
    path = check_png_path(out)
    return save_png(micro_world_grid(prompts, seed, **options), path)
