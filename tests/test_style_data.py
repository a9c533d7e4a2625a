"""Style preference data (reference mode) and `train --style`, on the SD path with a tiny model and a fixture
reference folder, and on the micro world; relabel mode is tested with the style probe in test_style_metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rpo_bench.style.registry import STYLES, get_style
from tests.conftest import private_home, striped_references

N_REFERENCES = 20


@pytest.fixture(scope="module")
def module_home(tmp_path_factory, session_home):
    """A home with two user styles: `painted` (a fixture folder, tiny-sd15, one caption for every image) and
    `mini-sketch` (20 micro sketch renders). Built tiny models are shared with the session, and the image cache
    with every test of this module (base images are generated once)."""
    tmp_path = tmp_path_factory.mktemp("styles")
    home = private_home(tmp_path, session_home)
    folder = tmp_path / "refs"
    striped_references(folder, N_REFERENCES, seed=1, axis=1)
    (home / "registry.toml").write_text(
        f'[styles.painted]\nfolder = "{folder}"\ncaption = "a painting"\nprompts = "smoke"\nbase_model = "tiny-sd15"\n'
        f'embedding = "tiny-clip:0"\nreferences = {N_REFERENCES}\ncsd = false\n'
        f'[styles.mini-sketch]\nmicro = "sketch"\nprompts = "micro-style-sketch"\nbase_model = "micro-base"\n'
        f'embedding = "micro-clip"\nreferences = {N_REFERENCES}\njudges = ["micro-style:sketch"]\ncsd = false\n',
        encoding="utf-8")
    return home


@pytest.fixture
def styles_home(module_home, monkeypatch):
    monkeypatch.setenv("RPO_BENCH_HOME", str(module_home))
    STYLES.reset_plugins()
    yield module_home
    STYLES.reset_plugins()


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "pairs.jsonl").read_text(encoding="utf-8").splitlines()]


def test_reference_pairs_on_the_sd_path(styles_home):
    from rpo_bench.training.data import load_preference_data
    from rpo_bench.training.style_pairs import build_style_pairs

    style = get_style("painted")
    folder = build_style_pairs(style, "reference", per_reference=1, device="cpu", show_progress=False)
    rows = _rows(folder)
    assert len(rows) == N_REFERENCES
    assert all(row["caption"] == "a painting" for row in rows)
    assert {row["label_0"] for row in rows} == {0.0, 1.0}  # the winner is not always in the first column
    data = load_preference_data(str(folder))
    winners = {hash(data[i].winner.tobytes()) for i in range(len(data))}
    references = {hash(Image.open(p).convert("RGB").tobytes()) for p in (styles_home.parent / "refs").glob("*.png")}
    assert winners == references  # every winner is a reference image, as given
    losers = {hash(data[i].loser.tobytes()) for i in range(len(data))}
    assert len(losers) == N_REFERENCES  # one caption for all: each reference gets base images of its own seeds
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["pairs"] == N_REFERENCES and summary["captions"] == 1

    stamp = (folder / "pairs.jsonl").stat().st_mtime_ns
    assert build_style_pairs(style, "reference", device="cpu", show_progress=False) == folder  # reused
    assert (folder / "pairs.jsonl").stat().st_mtime_ns == stamp


def test_micro_reference_pairs_are_deterministic(styles_home):
    from rpo_bench.training.style_pairs import build_style_pairs

    style = get_style("mini-sketch")
    folder = build_style_pairs(style, "reference", device="cpu", show_progress=False)
    first = (folder / "pairs.jsonl").read_bytes()
    (folder / "summary.json").unlink()  # forces a rebuild from the cached images
    build_style_pairs(style, "reference", device="cpu", show_progress=False)
    assert (folder / "pairs.jsonl").read_bytes() == first
    assert all("sketch" not in row["caption"] for row in _rows(folder))
    doubled = build_style_pairs(style, "reference", per_reference=2, device="cpu", show_progress=False)
    assert doubled != folder and len(_rows(doubled)) == 2 * N_REFERENCES
    assert len({row["jpg_0"] for row in _rows(doubled)} | {row["jpg_1"] for row in _rows(doubled)}) == \
        3 * N_REFERENCES  # each reference once, and two base images of its own


def test_train_style_records_the_style(styles_home, tmp_path):
    from rpo_bench.cli import main

    out = tmp_path / "run"
    code = main(["train", "--style", "painted", "--method", "dpo", "--output", str(out), "--steps", "2",
                 "--pairs-per-device", "2", "--heldout-pairs", "0", "--quiet", "--device", "cpu"])
    assert code == 0
    record = json.loads((out / "rpo_bench.json").read_text())
    assert record["style"]["name"] == "painted" and record["style"]["pairs"] == "reference"
    assert record["config"]["model"] == "tiny-sd15"  # the style's base model, not the global default
    assert record["data"]["kept"] == N_REFERENCES
    card = next(p for p in (out / "README.md", out / "MODEL_CARD.md") if p.is_file()).read_text()
    assert "Style: `painted`" in card and "evaluate --style painted" in card


def test_train_style_micro_uses_the_micro_style_recipe(styles_home, tmp_path):
    from rpo_bench.training.config import PRESETS, build_config

    config = build_config(None, None, {"style": "mini-sketch", "method": "sft", "output": str(tmp_path / "o")})
    assert config.model == "micro-base"
    assert config.lr == PRESETS["micro-style"]["lr"] and config.steps == PRESETS["micro-style"]["steps"]
    flagged = build_config(None, None, {"style": "mini-sketch", "method": "sft", "output": str(tmp_path / "o"),
                                        "steps": 7})
    assert flagged.steps == 7  # a flag still wins over the style's recipe


def test_relabel_makes_the_more_stylised_image_win(styles_home, tmp_path):
    """--pairs relabel: every pair of an existing set, re-labelled by style-prob:S (ties by margin dropped)."""
    import torch

    from rpo_bench.metrics import make_metric
    from rpo_bench.training.data import load_preference_data, write_preference_folder
    from rpo_bench.training.style_pairs import build_style_pairs

    rng = np.random.default_rng(3)
    references = sorted((styles_home.parent / "refs").glob("*.png"))
    rows = []
    for i, reference in enumerate(references[:8]):
        noise = tmp_path / f"noise{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(noise)
        first, second = (reference, noise) if i % 2 else (noise, reference)
        rows.append({"caption": "a painting", "jpg_0": first, "jpg_1": second, "label_0": 1.0, "label_1": 0.0})
    source = write_preference_folder(rows, tmp_path / "source").parent

    folder = build_style_pairs(get_style("painted"), "relabel", source=str(source), device="cpu",
                               show_progress=False)
    relabelled = load_preference_data(str(folder))
    probe = make_metric("style-prob:painted")
    probe.load("cpu", torch.float32)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["source_pairs"] == 8 and len(relabelled) == 8 - summary["dropped_for_margin"] > 0
    for pair in relabelled:
        winner, loser = probe.score([pair.winner, pair.loser], [pair.caption, pair.caption])
        assert winner > loser
    assert summary["winners_style_prob"] > summary["losers_style_prob"]
    again = build_style_pairs(get_style("painted"), "relabel", source=str(source), device="cpu", show_progress=False)
    assert again == folder  # the same source and probe: the cached set
