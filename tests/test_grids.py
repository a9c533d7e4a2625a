"""Image grids: layout, missing cells, byte-identical output, grids of evaluate runs and `rpo-bench micro grid`."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rpo_bench.cli import main
from rpo_bench.core.errors import BadInputError
from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate
from rpo_bench.evaluation.image_cache import ImageCache
from rpo_bench.evaluation.store import ResultsStore
from rpo_bench.evaluation.store_schema import IMAGE_COLUMNS, SAMPLE_COLUMNS
from rpo_bench.micro.scenes import STYLES
from rpo_bench.reporting.grids import (
    GAP,
    MISSING_FILL,
    PAD,
    ROW_LABEL_WIDTH,
    grid_from_store,
    grid_size,
    image_grid,
    save_png,
    write_evaluate_grid,
)


def _checker(colour_a, colour_b, size: int = 32) -> Image.Image:
    """A one-pixel checkerboard: any smoothing while upscaling would create colours that are neither."""
    y, x = np.indices((size, size))
    pixels = np.where(((x + y) % 2 == 0)[..., None], colour_a, colour_b).astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def _cell_box(row: int, column: int, cell: int, title: bool, image_height: int, rows: int) -> tuple[int, ...]:
    """A cell's pixel box, found from the bottom edge of the grid (the header height is the layout's business)."""
    left = PAD + ROW_LABEL_WIDTH + PAD + column * (cell + GAP)
    top = image_height - PAD - (rows - row) * cell - (rows - row - 1) * GAP
    return left, top, left + cell, top + cell


def test_size_follows_rows_columns_and_cell_and_upscaling_stays_crisp():
    picture = _checker((255, 0, 0), (0, 0, 255))
    grid = image_grid([[picture] * 3] * 2, ["first prompt", "second"], ["a", "b", "c"], cell=64, title="t")
    assert grid.size == grid_size(2, 3, 64, title=True)
    wider = image_grid([[picture] * 4] * 2, ["first prompt", "second"], list("abcd"), cell=64, title="t")
    assert wider.width - grid.width == 64 + GAP and wider.height == grid.height
    taller = image_grid([[picture] * 3] * 3, ["1", "2", "3"], ["a", "b", "c"], cell=64, title="t")
    assert taller.height - grid.height == 64 + GAP
    bigger = image_grid([[picture] * 3] * 2, ["1", "2"], ["a", "b", "c"], cell=96)
    assert bigger.size == grid_size(2, 3, 96)
    cell = np.asarray(bigger.crop(_cell_box(1, 2, 96, False, bigger.height, 2)))
    assert {tuple(p) for p in cell.reshape(-1, 3)} == {(255, 0, 0), (0, 0, 255)}  # NEAREST: no blended colours
    assert (cell[:3, :3] == (255, 0, 0)).all() and (cell[3:6, :3] == (0, 0, 255)).all()  # 3x3 pixel blocks


def test_missing_cell_is_a_gray_box_and_the_rest_is_drawn():
    picture = Image.new("RGB", (32, 32), (0, 200, 0))
    grid = image_grid([[picture, None]], ["a prompt"], ["model a", "model b"], cell=48)
    present = np.asarray(grid.crop(_cell_box(0, 0, 48, False, grid.height, 1)))
    missing = np.asarray(grid.crop(_cell_box(0, 1, 48, False, grid.height, 1)))
    assert (present == (0, 200, 0)).all()
    assert tuple(missing[2, 2]) == MISSING_FILL and (missing != MISSING_FILL).any()  # the word "missing"


def test_same_inputs_give_the_same_bytes(tmp_path):
    def draw(path: Path) -> bytes:
        cells = [[_checker((10, 20, 30), (200, 100, 0)), None], [Image.new("RGB", (100, 60), "white"), None]]
        labels = ["a very long prompt " * 8, "short"]
        save_png(image_grid(cells, labels, ["micro-base: a watercolor painting of <prompt>", "m"], title="x"), path)
        return path.read_bytes()

    first = draw(tmp_path / "one" / "grid.png")  # the folder is created
    assert first == draw(tmp_path / "two.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two.png"]  # no temporary file left


@pytest.mark.parametrize("cells, rows, columns, fragment", [
    ([[None, None]], ["p"], ["a"], "accepted: 1 rows"),
    ([[None]], ["p", "q"], ["a"], "accepted: 2 rows"),
    ([], [], ["a"], "at least one row"),
])
def test_cells_that_do_not_match_the_labels_are_one_line(cells, rows, columns, fragment):
    with pytest.raises(BadInputError, match=fragment):
        image_grid(cells, rows, columns)


def test_save_png_refuses_other_suffixes(tmp_path):
    with pytest.raises(BadInputError, match="accepted: a .png file path"):
        save_png(Image.new("RGB", (4, 4)), tmp_path / "grid.jpg")
    assert not list(tmp_path.iterdir())


# -- grids of stored images --------------------------------------------------------------------------------------

def _store_image(store: ResultsStore, cache: ImageCache, model: str, protocol: str, prompt: str, seed: int,
                 colour, created: float | None = None) -> None:
    """An images row as evaluate writes it, with its PNG in the cache."""
    key = hashlib.sha256(json.dumps([model, protocol, prompt, seed, colour]).encode()).hexdigest()
    sha = cache.put(key, Image.new("RGB", (32, 32), colour))
    row = {c: "" for c in IMAGE_COLUMNS} | {"image_key": key, "protocol": protocol, "prompt": prompt, "seed": seed,
                                             "image_sha256": sha}
    sample = {c: "" for c in SAMPLE_COLUMNS} | {"prompt_set_id": "p", "model": model, "image_key": key,
                                                "prompt_index": 0}
    store.add_images([row], [sample])
    if created is not None:
        with store.transaction() as db:
            db.execute("UPDATE images SET created_at = ? WHERE image_key = ?", (created, key))


@pytest.fixture
def stored(tmp_path):
    store, cache = ResultsStore(tmp_path / "r.sqlite"), ImageCache(tmp_path / "images")
    yield store, cache, tmp_path / "r.sqlite", tmp_path / "images"
    store.close()
    cache.close()


def test_grid_from_store_picks_the_seed_the_newest_image_and_marks_gaps_missing(stored):
    store, cache, store_path, cache_path = stored
    now = time.time()
    _store_image(store, cache, "m", "p1", "a cat", 0, (255, 0, 0), now - 10)
    _store_image(store, cache, "m", "p1", "a cat", 0, (0, 255, 0), now)  # retrained: the newer image shows
    _store_image(store, cache, "m", "p1", "a cat", 1, (0, 0, 255))  # another seed: not shown
    grid = grid_from_store(store_path, cache_path, ["m"], ["a cat", "a dog"], seed=0)
    assert grid.size == grid_size(2, 1, title=True)
    assert tuple(np.asarray(grid.crop(_cell_box(0, 0, 96, True, grid.height, 2)))[40, 40]) == (0, 255, 0)
    assert tuple(np.asarray(grid.crop(_cell_box(1, 0, 96, True, grid.height, 2)))[2, 2]) == MISSING_FILL


def test_protocol_choice_own_default_then_only_one_else_refused(stored):
    store, cache, store_path, cache_path = stored
    _store_image(store, cache, "micro-base", "micro-fast", "a", 0, (1, 1, 1))
    _store_image(store, cache, "micro-base", "micro", "a", 0, (200, 0, 0))
    _store_image(store, cache, "other", "x", "a", 0, (1, 1, 1))
    _store_image(store, cache, "other", "y", "a", 0, (0, 0, 200))
    _store_image(store, cache, "single", "z", "a", 0, (0, 200, 0))

    def centre(model: str, protocol: str | None = None) -> tuple[int, ...]:
        grid = grid_from_store(store_path, cache_path, [model], ["a"], 0, protocol)
        return tuple(np.asarray(grid.crop(_cell_box(0, 0, 96, True, grid.height, 1)))[40, 40])

    assert centre("micro-base") == (200, 0, 0)  # micro-base's own protocol, as evaluate without --protocol
    assert centre("single") == (0, 200, 0)
    assert centre("other", "y") == (0, 0, 200)
    with pytest.raises(BadInputError, match="under protocols x, y; choose one"):
        centre("other")
    with pytest.raises(BadInputError, match="accepted: x, y"):
        centre("other", "micro")
    with pytest.raises(BadInputError, match="no images of model 'nobody'.*micro-base, other, single"):
        centre("nobody")


def test_grid_from_store_refuses_paths_that_are_not_an_evaluate_run(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        grid_from_store(tmp_path / "none.sqlite", tmp_path, ["m"], ["a"], 0)
    assert not (tmp_path / "none.sqlite").exists()


def test_grid_of_a_real_evaluate_run(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a large red circle on the left, gray background\na small blue square in the center, "
                       "white background\na large green triangle on the right, black background\n")
    config = EvaluateConfig(models=("micro-base",), prompts=str(prompts), metrics=(), seeds=(3, 4),
                            protocol="micro-fast", store=tmp_path / "r.sqlite", image_cache=tmp_path / "images",
                            show_progress=False)
    evaluate(config)
    path = write_evaluate_grid(config, tmp_path / "grids" / "eval.png", rows=2)
    with Image.open(path) as grid:
        assert grid.size == grid_size(2, 1, title=True)
        cells = [np.asarray(grid.convert("RGB").crop(_cell_box(r, 0, 96, True, grid.height, 2))) for r in (0, 1)]
    cache = ImageCache(tmp_path / "images")
    store = ResultsStore(tmp_path / "r.sqlite")
    try:
        for row, cell in enumerate(cells):
            (sha,), = sqlite3.connect(tmp_path / "r.sqlite").execute(
                "SELECT i.image_sha256 FROM samples m JOIN images i USING (image_key) WHERE m.prompt_index = ? AND "
                "i.seed = 3", (row,)).fetchall()
            expected = np.asarray(cache.read(sha).resize((96, 96), Image.Resampling.NEAREST))
            assert (cell == expected).all()
    finally:
        store.close()
        cache.close()


# -- rpo-bench micro grid ---------------------------------------------------------------------------------------

def test_micro_grid_command_writes_the_picture(tmp_path, capsys):
    out = tmp_path / "docs" / "grid.png"
    assert main(["micro", "grid", "--out", str(out), "--prompts", "1", "--seed", "0"]) == 0
    assert f"written: {out}" in capsys.readouterr().out
    with Image.open(out) as grid:
        assert grid.size == grid_size(1, 2 * len(STYLES), title=True)
    first = out.read_bytes()
    assert main(["micro", "grid", "--out", str(out), "--prompts", "1"]) == 0  # cached images: the same bytes
    assert out.read_bytes() == first


@pytest.mark.parametrize("args, fragment", [
    (["--prompts", "0"], "--prompts 0; accepted: an integer from 1 to 108"),
    (["--prompts", "-2"], "--prompts -2; accepted: an integer from 1 to 108"),
    (["--prompts", "109"], "--prompts 109; accepted"),
    (["--seed", "-1"], "--seed -1; accepted"),
    (["--out", "{tmp}/grid.jpg"], "accepted: a .png file path"),
])
def test_micro_grid_bad_values_are_one_line_and_exit_2(tmp_path, capsys, args, fragment):
    args = [a.format(tmp=tmp_path) for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "grid.png")]
    code = main(["micro", "grid", *out, *args])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: ") and fragment in captured.err
    assert "Traceback" not in captured.out + captured.err
    assert not list(tmp_path.iterdir())  # refused before anything was generated or written
