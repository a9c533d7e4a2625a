"""csd:S and tiny-csd:S: the official checkpoint layout loads into open_clip's tower and computes the official math.

The reference forward below is written from OpenAI CLIP's VisionTransformer (as vendored in learn2phoenix/CSD,
models/clip/model.py) and CSD_CLIP.forward (CSD/model.py), on state dicts named as the official file names them,
built here by hand rather than from open_clip, so the key mapping is tested, not assumed.
"""

from __future__ import annotations

import argparse
import builtins
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from rpo_bench.core.errors import BadInputError, MissingWeightsError, UnknownNameError
from rpo_bench.metrics import example_spec, make_metric
from rpo_bench.style.csd import (
    ARCH_CONFIG_FILE,
    CSD_FILE,
    CsdScore,
    TinyCsdScore,
    load_csd_model,
    prototype,
    style_cosine,
)

WIDTH, LAYERS, HEADS, PATCH, SIZE, OUT = 64, 2, 2, 16, 64, 32
CONFIG = {"embed_dim": OUT, "vision_cfg": {"image_size": SIZE, "layers": LAYERS, "width": WIDTH,
                                           "head_width": WIDTH // HEADS, "patch_size": PATCH}}


# -- the official names and math ----------------------------------------------------------------------------
def official_shapes(width=WIDTH, layers=LAYERS, patch=PATCH, size=SIZE, out=OUT) -> dict[str, tuple[int, ...]]:
    """CSD_CLIP.state_dict() names and shapes: OpenAI CLIP's visual.* under backbone. (no proj), the two heads."""
    grid = size // patch
    shapes = {"conv1.weight": (width, 3, patch, patch), "class_embedding": (width,),
              "positional_embedding": (grid * grid + 1, width), "ln_pre.weight": (width,), "ln_pre.bias": (width,),
              "ln_post.weight": (width,), "ln_post.bias": (width,)}
    for i in range(layers):
        block = f"transformer.resblocks.{i}."
        shapes |= {block + "ln_1.weight": (width,), block + "ln_1.bias": (width,),
                   block + "attn.in_proj_weight": (3 * width, width), block + "attn.in_proj_bias": (3 * width,),
                   block + "attn.out_proj.weight": (width, width), block + "attn.out_proj.bias": (width,),
                   block + "ln_2.weight": (width,), block + "ln_2.bias": (width,),
                   block + "mlp.c_fc.weight": (4 * width, width), block + "mlp.c_fc.bias": (4 * width,),
                   block + "mlp.c_proj.weight": (width, 4 * width), block + "mlp.c_proj.bias": (width,)}
    shapes = {f"backbone.{k}": v for k, v in shapes.items()}
    return shapes | {"last_layer_style": (width, out), "last_layer_content": (width, out)}


def official_state(seed: int) -> dict[str, torch.Tensor]:
    """Random weights under the official names; LayerNorm scales around 1 so that a scale left out shows."""
    gen = torch.Generator().manual_seed(seed)
    return {name: (1.0 if "ln_" in name and name.endswith("weight") else 0.0)
            + 0.2 * torch.randn(*shape, generator=gen) for name, shape in official_shapes().items()}


def reference_style(state: dict[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's VisionTransformer.forward with proj = None, then CSD_CLIP's style branch."""
    s = {k.removeprefix("backbone."): v for k, v in state.items()}
    x = F.conv2d(pixels, s["conv1.weight"], stride=PATCH).flatten(2).transpose(1, 2)
    x = torch.cat([s["class_embedding"].expand(len(x), 1, -1), x], dim=1) + s["positional_embedding"]
    x = F.layer_norm(x, (WIDTH,), s["ln_pre.weight"], s["ln_pre.bias"])
    for i in range(LAYERS):
        x = reference_block(x, {k.removeprefix(f"transformer.resblocks.{i}."): v for k, v in s.items()})
    feature = F.layer_norm(x[:, 0], (WIDTH,), s["ln_post.weight"], s["ln_post.bias"])
    return F.normalize(feature @ s["last_layer_style"], dim=1, p=2)


def reference_block(x: torch.Tensor, b: dict[str, torch.Tensor]) -> torch.Tensor:
    """ResidualAttentionBlock: x + attn(ln_1(x)), then x + mlp(ln_2(x)) with QuickGELU."""
    def heads(t):
        return t.reshape(len(t), -1, HEADS, WIDTH // HEADS).transpose(1, 2)

    h = F.layer_norm(x, (WIDTH,), b["ln_1.weight"], b["ln_1.bias"])
    q, k, v = (h @ b["attn.in_proj_weight"].T + b["attn.in_proj_bias"]).chunk(3, dim=-1)
    weights = (heads(q) @ heads(k).transpose(-1, -2) / (WIDTH // HEADS) ** 0.5).softmax(dim=-1)
    attended = (weights @ heads(v)).transpose(1, 2).reshape(h.shape)
    x = x + attended @ b["attn.out_proj.weight"].T + b["attn.out_proj.bias"]
    h = F.layer_norm(x, (WIDTH,), b["ln_2.weight"], b["ln_2.bias"]) @ b["mlp.c_fc.weight"].T + b["mlp.c_fc.bias"]
    return x + (h * torch.sigmoid(1.702 * h)) @ b["mlp.c_proj.weight"].T + b["mlp.c_proj.bias"]


def training_file(state: dict[str, torch.Tensor], ddp_prefix: bool = True) -> dict:
    """CSD/train_csd.py's save_dict around the model's state dict."""
    prefix = "module." if ddp_prefix else ""
    return {"model_state_dict": {prefix + k: v for k, v in state.items()},
            "opt_proj": {"state": {}, "param_groups": [{"lr": 0.003, "params": [0, 1]}]},
            "iter": 100000, "args": argparse.Namespace(arch="vit_large", lr=np.float64(0.003), eval_k=[1, 10])}


def write_checkpoint(folder, payload, name=CSD_FILE):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ARCH_CONFIG_FILE).write_text(json.dumps({"model_cfg": CONFIG}), encoding="utf-8")
    torch.save(payload, folder / name)
    return folder / name


# -- loading --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ddp_prefix", [True, False], ids=["module-prefix", "no-prefix"])
def test_official_layout_matches_the_reference_forward(tmp_path, ddp_prefix):
    state = official_state(seed=1)
    path = write_checkpoint(tmp_path, training_file(state, ddp_prefix))
    model = load_csd_model(path, "csd")
    pixels = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got, expected = model(pixels), reference_style(state, pixels)
    assert got.shape == (3, OUT)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_the_vit_l_tower_has_exactly_the_official_names_and_shapes(tmp_path):
    """The released file's keys, as loaded strict by the maintainers' CSD_CLIP (ViT-L/14, 1024 -> 768)."""
    from rpo_bench.style.csd import CsdStyleModel, vision_config

    embed_dim, vision_cfg = vision_config(tmp_path / CSD_FILE, "csd")  # no config beside: open_clip's ViT-L-14
    with torch.device("meta"):
        model = CsdStyleModel(embed_dim, vision_cfg)
    got = {f"backbone.{k}": tuple(v.shape) for k, v in model.backbone.state_dict().items()}
    got["last_layer_style"] = tuple(model.last_layer_style.shape)
    expected = official_shapes(width=1024, layers=24, patch=14, size=224, out=768)
    expected.pop("last_layer_content")
    assert got == expected
    assert model.backbone.transformer.resblocks[0].attn.num_heads == 16


def test_a_flat_safetensors_state_dict_loads_too(tmp_path):
    from safetensors.torch import save_file

    state = official_state(seed=3)
    write_checkpoint(tmp_path, {})
    save_file(state, tmp_path / "csd.safetensors")
    model = load_csd_model(tmp_path / "csd.safetensors", "csd")
    pixels = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(model(pixels), reference_style(state, pixels), atol=1e-5)


class _RunsCode:
    def __reduce__(self):
        return builtins.exec, ("import pathlib; pathlib.Path('ran.txt').write_text('ran')",)


def test_a_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    payload = training_file(official_state(seed=4))
    payload["args"] = _RunsCode()
    path = write_checkpoint(tmp_path / "evil", payload)
    with pytest.raises(BadInputError, match="refused to load") as caught:
        load_csd_model(path, "csd")
    assert "\n" not in str(caught.value) and "exec" in str(caught.value)
    assert not (tmp_path / "ran.txt").exists()


@pytest.mark.parametrize("change", ["with-proj", "no-style-head", "wrong-shape"])
def test_a_checkpoint_of_another_layout_is_one_line(tmp_path, change):
    state = official_state(seed=5)
    if change == "with-proj":  # a plain CLIP visual tower: its projection is not CSD's
        state["backbone.proj"] = torch.zeros(WIDTH, OUT)
    elif change == "no-style-head":
        del state["last_layer_style"]
    else:
        state["last_layer_style"] = torch.zeros(WIDTH, OUT + 1)
    path = write_checkpoint(tmp_path, training_file(state))
    with pytest.raises(BadInputError, match="does not fit the model") as caught:
        load_csd_model(path, "csd")
    assert "\n" not in str(caught.value)


# -- the prototype ----------------------------------------------------------------------------------------------
def test_prototype_is_the_normalised_mean_of_normalised_embeddings():
    embeddings = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # lengths must not weigh: each reference counts once
    assert torch.allclose(prototype(embeddings), torch.tensor([1.0, 1.0]) / 2**0.5)
    scores = style_cosine(torch.tensor([[2.0, 2.0], [-1.0, -1.0], [1.0, 0.0]]), prototype(embeddings))
    assert torch.allclose(scores, torch.tensor([1.0, -1.0, 2**-0.5]))
    with pytest.raises(BadInputError):
        prototype(torch.zeros(0, 2))


# -- the metrics ------------------------------------------------------------------------------------------------
def _stripes(hue: int, phase: int) -> Image.Image:
    """References of one "style": diagonal stripes in related colours."""
    ys, xs = np.mgrid[0:96, 0:96]
    on = ((xs + ys + phase) // 6) % 2 == 0
    image = np.zeros((96, 96, 3), dtype=np.uint8)
    image[on] = (200, 40 + 8 * hue, 60)
    image[~on] = (20, 20, 80 + 4 * hue)
    return Image.fromarray(image)


@pytest.fixture
def style_home(tmp_path, monkeypatch):
    """A user style `csdtest` whose 20 references are a folder of stripe images."""
    from rpo_bench.style.registry import STYLES

    refs = tmp_path / "refs"
    refs.mkdir()
    for index in range(20):
        _stripes(index, 3 * index).save(refs / f"{index:02d}.png")
    home = tmp_path / "home"
    home.mkdir()
    (home / "registry.toml").write_text(f'[styles.csdtest]\nfolder = "{refs.as_posix()}"\n'
                                        'prompts = "style-content"\nreferences = 20\n', encoding="utf-8")
    monkeypatch.setenv("RPO_BENCH_HOME", str(home))
    STYLES.reset_plugins()
    yield home
    STYLES.reset_plugins()


def test_tiny_csd_scores_a_reference_above_an_unrelated_image(style_home):
    metric = make_metric("tiny-csd:csdtest")
    assert isinstance(metric, TinyCsdScore) and metric.hub_files() == []
    metric.load("cpu", torch.float32)
    reference = _stripes(0, 0)
    unrelated = Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 120, 3), dtype=np.uint8))
    first = metric.score([reference, unrelated], ["", ""])
    again = make_metric("tiny-csd:csdtest")
    again.load("cpu", torch.float32)
    assert again.score([reference, unrelated], ["a", "b"]) == first  # deterministic, prompts ignored
    assert all(-1.0 <= value <= 1.0 for value in first)
    assert first[0] > first[1]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_stays_close_to_float32(style_home, dtype):
    images = [_stripes(0, 0), _stripes(9, 4)]
    scores = {}
    for working in (torch.float32, dtype):
        metric = make_metric("tiny-csd:csdtest")
        metric.load("cpu", working)
        scores[working] = metric.score(images, ["", ""])
    assert np.allclose(scores[dtype], scores[torch.float32], atol=1e-2)


def test_version_names_the_weights_and_the_references(style_home, tmp_path):
    one = write_checkpoint(tmp_path / "one", training_file(official_state(seed=6)))
    two = write_checkpoint(tmp_path / "two", training_file(official_state(seed=7)))
    version_one = CsdScore("csdtest", checkpoint=one).version
    assert version_one == CsdScore("csdtest", checkpoint=one).version
    assert version_one != CsdScore("csdtest", checkpoint=two).version
    assert "+refs-" in version_one and TinyCsdScore("csdtest").version.startswith("1+pytorch_model.bin@")
    metric = CsdScore("csdtest", checkpoint=one)
    _ = metric.version
    assert "pytorch_model.bin@" in metric.notes()[0] and "do not exactly reproduce" in metric.notes()[0]
    assert TinyCsdScore("csdtest").notes() == []


def test_official_weights_missing_offline_name_the_download_command():
    metric = make_metric("csd:vangogh")
    assert [files.repo for files in metric.hub_files()] == ["tomg-group-umd/CSD-ViT-L"]
    with pytest.raises(MissingWeightsError, match="rpo-bench download csd"):
        _ = metric.version


def test_style_argument_is_checked_when_the_metric_is_named():
    assert example_spec("csd") == "csd:vangogh" and example_spec("tiny-csd") == "tiny-csd:vangogh"
    with pytest.raises(UnknownNameError, match="unknown style"):
        make_metric("csd:no-such-style")
    without = make_metric("csd")  # how `rpo-bench download csd` lists the files
    assert without.hub_files() and without.key == "csd"
    with pytest.raises(BadInputError, match="needs a style"):
        _ = without.style
