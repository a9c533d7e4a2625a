"""The style metrics: the probe (deterministic, cached, held-out accuracy), style-prob on the micro world's real
CLIP, style-sim's range, base-sim's pairing through evaluate, and their one-line refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rpo_bench.core.errors import BadInputError, UnknownNameError
from rpo_bench.metrics import make_metric
from rpo_bench.style.registry import STYLES, get_style, reference_images

MICRO_BASE = Path(__file__).resolve().parents[1] / "rpo_bench" / "micro" / "assets" / "micro-base"
PROMPTS = [  # two of each category of prompts/micro-style-sketch.jsonl
    {"prompt": "a large red square on the right, white background", "category": "content"},
    {"prompt": "a small purple triangle in the center, gray background", "category": "content"},
    {"prompt": "a pencil sketch of a large orange circle on the left, white background", "category": "worded"},
    {"prompt": "a pencil sketch of a small blue square on the right, black background", "category": "worded"},
]


def _stripes(folder: Path, n: int) -> None:
    """n coloured stripe images with content captions: a folder style that a tiny CLIP can embed."""
    folder.mkdir(parents=True)
    colours = [(200, 30, 30), (30, 160, 40), (30, 60, 200), (220, 200, 40)]
    things = ["apple", "house", "boat", "tree", "cat", "cup"]
    captions = []
    for i in range(n):
        pixels = np.full((32, 32, 3), 245, dtype=np.uint8)
        pixels[:, (i % 3)::4] = colours[i % 4]
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
        captions.append(json.dumps({"file": f"{i:02d}.png", "caption": f"a {things[i % 6]}"}) + "\n")
    (folder / "captions.jsonl").write_text("".join(captions), encoding="utf-8")


def _perturbed_micro_base(folder: Path) -> None:
    """A copy of micro-base with slightly moved UNet weights: another model, drawing the same scenes."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(MICRO_BASE, folder)
    path = next((folder / "unet").glob("*.safetensors"))
    weights = load_file(path)
    generator = torch.Generator().manual_seed(0)
    for name, tensor in weights.items():
        if tensor.is_floating_point():
            weights[name] = tensor + 0.05 * tensor.std().nan_to_num() * torch.randn(tensor.shape, generator=generator)
    save_file(weights, path)


def build_style_world(tmp_path_factory, name: str, styles_toml: str = "") -> Path:
    """A home whose registry.toml holds the test styles (`test-sketch`: 40 micro sketch renders on four prompts;
    `test-stripes`: a stripes folder on tiny-sd15 / tiny-clip:0), a perturbed micro-base called `micro-other`,
    and `styles_toml` (more [styles.NAME] tables, `{prompts}` standing for the four-prompt file)."""
    home = tmp_path_factory.mktemp(f"{name}-home")
    data = tmp_path_factory.mktemp(f"{name}-data")
    _stripes(data / "stripes", 24)
    prompts = data / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS), encoding="utf-8")
    _perturbed_micro_base(data / "micro-other")
    (home / "registry.toml").write_text(f"""
[styles.test-sketch]
micro = "sketch"
references = 40
prompts = "{prompts}"
base_model = "micro-base"
embedding = "micro-clip"
judges = ["micro-style:sketch", "micro-oracle"]
csd = false

[styles.test-stripes]
folder = "{data / 'stripes'}"
references = 24
prompts = "smoke"
base_model = "tiny-sd15"
embedding = "tiny-clip:0"
csd = false

[models.micro-other]
family = "sd15"
repo = "{data / 'micro-other'}"
protocol = "micro"
""" + styles_toml.replace("{prompts}", str(prompts)), encoding="utf-8")
    return home


@pytest.fixture(scope="module")
def style_home(tmp_path_factory):
    """One home for the module (base images are generated once), with the test styles in its registry.toml."""
    return build_style_world(tmp_path_factory, "style")


@pytest.fixture(autouse=True)
def home(style_home, rpo_home, monkeypatch):
    if (rpo_home / "models").is_dir() and not (style_home / "models").exists():
        (style_home / "models").symlink_to(rpo_home / "models", target_is_directory=True)  # tiny models built once
    monkeypatch.setenv("RPO_BENCH_HOME", str(style_home))
    STYLES.reset_plugins()
    return style_home


def _probe_files(style: str) -> list[Path]:
    from rpo_bench.style.registry import style_home

    return sorted(style_home(get_style(style)).glob("probe-*.json"))


def test_probe_fits_deterministically_and_is_cached(home):
    from rpo_bench.style import probe as style_probe
    from rpo_bench.style.embedding import StyleEmbedder

    style = get_style("test-stripes")
    embedder = StyleEmbedder(style).load("cpu", torch.float32)
    probe = style_probe.load_or_fit_probe(style, embedder, device="cpu", show_progress=False)
    assert probe.fit_seconds is not None and probe.fit_seconds >= 0
    assert (probe.references, probe.base_images) == (20, 20)  # 24 of each, a fifth of each held out
    assert probe.held_out == 8 and 0.0 <= probe.accuracy <= 1.0
    first = probe.path.read_bytes()
    stamp = probe.path.stat().st_mtime_ns

    again = style_probe.load_or_fit_probe(style, embedder, device="cpu", show_progress=False)
    assert again.fit_seconds is None  # read from the cache, not fitted
    assert probe.path.stat().st_mtime_ns == stamp and np.array_equal(again.weights, probe.weights)

    probe.path.unlink()  # a second fit from the same inputs writes the same bytes
    style_probe._REFERENCE_EMBEDDINGS.clear()
    refit = style_probe.load_or_fit_probe(style, embedder, device="cpu", show_progress=False)
    assert refit.path.read_bytes() == first
    record = json.loads(first)
    assert record["inputs"]["embedding"] == embedder.identity and record["inputs"]["base_model"] == "tiny-sd15"
    assert set(record) >= {"weights", "bias", "accuracy", "held_out", "fit", "fingerprint"}


def test_split_is_by_image_not_position():
    from rpo_bench.style.probe import held_out_mask

    shas = [f"{i:064x}" for i in range(10)]
    mask = held_out_mask(shas)
    assert mask.sum() == 2
    reversed_mask = held_out_mask(shas[::-1])
    assert list(reversed_mask[::-1]) == list(mask)


def test_logistic_fit_separates_separable_data():
    from rpo_bench.style.probe import fit_logistic, probabilities

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(1, 0.3, (30, 4)), rng.normal(-1, 0.3, (30, 4))])
    y = np.concatenate([np.ones(30), np.zeros(30)])
    weights, bias, report = fit_logistic(x, y)
    assert report["converged"]
    p = probabilities(weights, bias, x)
    assert (p[:30] > 0.9).all() and (p[30:] < 0.1).all()


def test_style_prob_tells_sketches_from_plain_micro_images(home):
    from rpo_bench.micro.render import render
    from rpo_bench.micro.scenes import all_scenes

    metric = make_metric("style-prob:test-sketch")
    assert "+probe-" in metric.version and metric.version == make_metric("style-prob:test-sketch").version
    metric.load("cpu", torch.float32)
    references = reference_images(get_style("test-sketch"))[:8]
    sketches = metric.score([r.image for r in references], [r.caption for r in references])
    plain = metric.score([render(scene, seed=1) for scene in all_scenes("test")[:8]], [""] * 8)
    assert min(sketches) > 0.5 and np.mean(sketches) > 0.8
    assert np.mean(plain) < 0.3
    (note,) = metric.notes()
    assert note.startswith("style-prob:test-sketch: probe held-out accuracy ")
    assert "(16 images; fitted on 32 references, 32 base images)" in note
    metric.unload()
    assert make_metric("style-prob:test-sketch").notes() == [note]  # read from the cache, without loading


def test_style_sim_is_a_cosine(home):
    metric = make_metric("style-sim:test-sketch")
    metric.load("cpu", torch.float32)
    references = reference_images(get_style("test-sketch"))[:6]
    values = metric.score([r.image for r in references], [""] * 6)
    assert all(-1.0 <= v <= 1.0 for v in values) and np.mean(values) > 0
    assert metric.value_range == (-1.0, 1.0) and metric.higher_is_better


def test_base_sim_pairs_each_image_with_the_base_models(home, tmp_path):
    from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate

    config = EvaluateConfig(models=["micro-base", "micro-other"], prompts=get_style("test-sketch").prompts,
                            metrics=["base-sim:test-sketch"], protocol="micro", store=tmp_path / "r.sqlite",
                            image_cache=tmp_path / "images", show_progress=False, device="cpu")
    result = evaluate(config)
    means = {row.model: row.mean for row in result.summary if row.category is None}
    assert means["micro-base"] == pytest.approx(1.0, abs=1e-5)
    assert 0.0 < means["micro-other"] < 0.9999


def test_base_sim_needs_the_base_model_among_the_models(home, tmp_path):
    from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate

    config = EvaluateConfig(models=["micro-other"], prompts=get_style("test-sketch").prompts,
                            metrics=["base-sim:test-sketch"], protocol="micro", store=tmp_path / "r.sqlite",
                            image_cache=tmp_path / "images", show_progress=False)
    with pytest.raises(BadInputError) as caught:
        evaluate(config)
    assert str(caught.value) == ("base-sim:test-sketch compares with test-sketch's base model micro-base: add "
                                 "micro-base to --models")
    assert not (tmp_path / "r.sqlite").exists()


def test_base_sim_refuses_image_files(home, tmp_path):
    from rpo_bench.evaluation.score_files import score_files

    path = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(path)
    with pytest.raises(BadInputError, match="base-sim:test-sketch compares each image with micro-base's image"):
        score_files([path], ["a"], ["base-sim:test-sketch"], device="cpu")


def test_style_metrics_need_a_known_style(home):
    with pytest.raises(BadInputError, match="style-prob needs a style; accepted: style-prob:S with S one of"):
        make_metric("style-prob")
    with pytest.raises(UnknownNameError, match="test-sketch"):
        make_metric("style-sim:test-sketchh")


def test_content_metric_matches_the_embedding(home):
    from rpo_bench.style.embedding import content_metric

    assert content_metric(get_style("micro-sketch")) == "micro-clip"
    assert content_metric(get_style("test-stripes")) == "tiny-clip:0"
    assert content_metric(get_style("vangogh")) == "clip"


def test_base_sim_needs_one_protocol_for_every_model(home, tmp_path):
    from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate

    config = EvaluateConfig(models=["micro-base", "tiny-sd15"], prompts=get_style("test-sketch").prompts,
                            metrics=["base-sim:test-sketch"], protocol=None, store=tmp_path / "r.sqlite",
                            image_cache=tmp_path / "images", show_progress=False)
    with pytest.raises(BadInputError, match="micro-base runs only micro; accepted: one --protocol for every model"):
        evaluate(config)


def test_score_command_prints_the_probe_accuracy(home, tmp_path, capsys):
    from rpo_bench.cli import main

    for i, reference in enumerate(reference_images(get_style("test-sketch"))[:2]):
        reference.image.save(tmp_path / f"{i}.png")
    code = main(["score", str(tmp_path), "--metrics", "style-prob:test-sketch", "--prompt", "a shape", "--device",
                 "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "style-prob:test-sketch: probe held-out accuracy " in out
