"""The official preference scorers (HPSv2, PickScore, ImageReward, aesthetic) on their tiny variants.

The tiny variants are saved in the official file layouts, and the tests load them through the *real* metrics
(`hpsv2:<file>`, `imagereward:<folder>`, ...) exactly as a user's downloaded checkpoint would load.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rpo_bench.core.errors import BadInputError, MissingWeightsError, UnknownNameError
from rpo_bench.metrics import make_metric
from rpo_bench.metrics.tiny_scorers import ensure_tiny_scorer

SCORERS = ("hpsv2", "pickscore", "imagereward", "aesthetic")
PROMPTS = ["a red cat", "a blue dog, oil painting", "photo of a house", "a cat in the style of van gogh"] * 2


def _images(n: int) -> list[Image.Image]:
    """Different sizes and modes, so resizing, cropping and RGB conversion all run."""
    rng = np.random.default_rng(0)
    shapes = [(64, 64), (100, 60), (231, 317), (224, 224), (40, 90), (300, 200), (128, 96), (77, 77)]
    images = []
    for i in range(n):
        h, w = shapes[i % len(shapes)]
        image = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        images.append(image.convert("RGBA") if i == 5 else image.convert("L") if i == 6 else image)
    return images


def _local_spec(scorer: str, seed: int = 0) -> str:
    """The real metric pointed at a local copy of the official layout (the tiny build)."""
    folder = ensure_tiny_scorer(f"tiny-{scorer}", seed)
    return f"{scorer}:{folder / 'HPS_v2_compressed.pt' if scorer == 'hpsv2' else folder}"


@pytest.mark.parametrize("scorer", SCORERS)
def test_scorer_loads_from_a_local_folder_and_batch_size_does_not_change_scores(scorer):
    metric = make_metric(_local_spec(scorer))
    metric.load("cpu", torch.float32)
    images = _images(8)
    batched = metric.score(images, PROMPTS)
    single = [metric.score([image], [prompt])[0] for image, prompt in zip(images, PROMPTS, strict=True)]
    assert batched == pytest.approx(single, abs=1e-4)
    assert len({round(v, 4) for v in batched}) > 4  # the scores depend on the inputs


@pytest.mark.parametrize("scorer", SCORERS)
def test_tiny_variant_equals_the_real_metric_on_the_same_files(scorer):
    tiny, real = make_metric(f"tiny-{scorer}"), make_metric(_local_spec(scorer))
    for metric in (tiny, real):
        metric.load("cpu", torch.float32)
    assert tiny.score(_images(3), PROMPTS[:3]) == real.score(_images(3), PROMPTS[:3])
    assert tiny.hub_files() == [] and real.hub_files() == []


@pytest.mark.parametrize("scorer", SCORERS)
def test_a_checkpoint_with_wrong_keys_is_refused_with_one_line(scorer, tmp_path):
    from safetensors.torch import load_file, save_file

    source = ensure_tiny_scorer(f"tiny-{scorer}", 0)
    folder = tmp_path / "weights"
    shutil.copytree(source, folder)
    name = {"hpsv2": "HPS_v2_compressed.pt", "imagereward": "ImageReward.pt", "pickscore": "model.safetensors",
            "aesthetic": "sac+logos+ava1-l14-linearMSE.pth"}[scorer]
    checkpoint = load_file(folder / name) if scorer == "pickscore" else torch.load(folder / name, weights_only=True)
    state = checkpoint["state_dict"] if scorer == "hpsv2" else checkpoint
    victim = sorted(k for k in state if k.endswith("weight"))[-1]
    state[victim.replace("weight", "wieght")] = state.pop(victim)
    if scorer == "pickscore":
        save_file(checkpoint, folder / name, metadata={"format": "pt"})
    else:
        torch.save(checkpoint, folder / name)
    metric = make_metric(f"{scorer}:{folder / name if scorer == 'hpsv2' else folder}")
    with pytest.raises(BadInputError) as caught:
        metric.load("cpu", torch.float32)
    message = str(caught.value)
    assert "\n" not in message and name in message and "does not fit" in message
    assert "missing" in message and "unexpected" in message


def test_a_checkpoint_with_the_wrong_shapes_is_refused(tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(ensure_tiny_scorer("tiny-aesthetic", 0), folder)
    state = torch.load(folder / "sac+logos+ava1-l14-linearMSE.pth", weights_only=True)
    state["layers.2.bias"] = torch.zeros(7)
    torch.save(state, folder / "sac+logos+ava1-l14-linearMSE.pth")
    with pytest.raises(BadInputError, match=r"layers\.2\.bias has shape \(7,\)"):
        make_metric(f"aesthetic:{folder}").load("cpu", torch.float32)


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("scorer", ("hpsv2", "imagereward", "aesthetic"))
def test_a_pickle_that_would_run_code_is_refused_and_does_not_run(scorer, tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(ensure_tiny_scorer(f"tiny-{scorer}", 0), folder)
    name = {"hpsv2": "HPS_v2_compressed.pt", "imagereward": "ImageReward.pt",
            "aesthetic": "sac+logos+ava1-l14-linearMSE.pth"}[scorer]
    marker = tmp_path / "pwned"
    torch.save({"state_dict": _RunsCode(marker)}, folder / name)
    metric = make_metric(f"{scorer}:{folder / name if scorer == 'hpsv2' else folder}")
    with pytest.raises(BadInputError, match="refused to load"):
        metric.load("cpu", torch.float32)
    assert not marker.exists()


def test_hps_versions_are_separate_metrics_and_unknown_versions_are_refused():
    assert make_metric("hpsv2").hub_files()[0].patterns == ("HPS_v2_compressed.pt",)
    assert make_metric("hpsv2.1").hub_files()[0].patterns == ("HPS_v2.1_compressed.pt",)
    with pytest.raises(UnknownNameError, match=r"unknown metric 'hpsv2\.2'; did you mean hpsv2\.1, hpsv2"):
        make_metric("hpsv2.2")


def test_each_scorer_declares_the_official_files_it_downloads():
    files = {name: [(f.repo, p) for f in make_metric(name).hub_files() for p in f.patterns] for name in SCORERS}
    assert ("xswu/HPSv2", "HPS_v2_compressed.pt") in files["hpsv2"]
    assert ("yuvalkirstain/PickScore_v1", "model.safetensors") in files["pickscore"]
    assert ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "preprocessor_config.json") in files["pickscore"]
    assert ("THUDM/ImageReward", "ImageReward.pt") in files["imagereward"]
    assert ("THUDM/ImageReward", "med_config.json") in files["imagereward"]
    assert ("openai/clip-vit-large-patch14", "model.safetensors") in files["aesthetic"]


def test_missing_official_weights_offline_name_the_file_and_the_download_command():
    metric = make_metric("imagereward:" + str(ensure_tiny_scorer("tiny-imagereward", 0)))
    metric.load("cpu", torch.float32)  # local weights need nothing from the Hub
    with pytest.raises(MissingWeightsError) as caught:
        make_metric("hpsv2").version  # noqa: B018 - resolving the version looks for the checkpoint
    assert "rpo-bench download hpsv2" in str(caught.value) and "\n" not in str(caught.value)


def test_versions_identify_the_weights():
    zero, one = make_metric("tiny-hpsv2"), make_metric("tiny-hpsv2:1")
    assert zero.version != one.version
    assert make_metric(_local_spec("hpsv2")).version == zero.version


def test_empty_prompt_and_mismatched_lengths_are_refused():
    metric = make_metric("tiny-pickscore")
    metric.load("cpu", torch.float32)
    with pytest.raises(BadInputError, match="prompt 1 is empty"):
        metric.score(_images(2), ["a cat", "  "])
    with pytest.raises(BadInputError, match="2 images but 1 prompts"):
        metric.score(_images(2), ["a cat"])
    aesthetic = make_metric("tiny-aesthetic")
    aesthetic.load("cpu", torch.float32)
    assert len(aesthetic.score(_images(2), ["", ""])) == 2  # rates the image alone


@pytest.mark.parametrize("scorer,limit", [("hpsv2", 77), ("pickscore", 77), ("imagereward", 35)])
def test_long_prompts_are_truncated_like_the_official_code_and_said_once(scorer, limit, caplog):
    metric = make_metric(f"tiny-{scorer}")
    metric.load("cpu", torch.float32)
    long_prompt = "a red cat on a blue house " * 20
    cut = " ".join(long_prompt.split()[:80])  # already past every limit: truncation makes both equal
    with caplog.at_level("WARNING"):
        first = metric.score(_images(1), [long_prompt])
        metric.score(_images(1), [long_prompt])
    assert sum("truncated" in r.message and f"{limit} tokens" in r.message for r in caplog.records) == 1
    assert first == pytest.approx(metric.score(_images(1), [cut]), abs=1e-5)


def test_half_precision_scores_are_stored_under_their_own_version():
    from rpo_bench.evaluation.evaluate import stored_version

    metric = make_metric("tiny-aesthetic")
    assert stored_version(metric, torch.float32) == metric.version
    assert stored_version(metric, torch.bfloat16) == metric.version + "+bfloat16"


def test_evaluate_scores_with_official_scorers_once_per_run(tmp_path):
    from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate

    config = EvaluateConfig(models=("tiny-sd15",), prompts="smoke", metrics=("tiny-hpsv2", "tiny-imagereward"),
                            store=tmp_path / "results.sqlite", image_cache=tmp_path / "images", show_progress=False)
    first = evaluate(config)
    assert first.scored == {"tiny-hpsv2": 8, "tiny-imagereward": 8}
    assert {row.metric for row in first.summary} == {"tiny-hpsv2", "tiny-imagereward"}
    assert evaluate(config).scored == {"tiny-hpsv2": 0, "tiny-imagereward": 0}
    half = evaluate(EvaluateConfig(**{**config.__dict__, "score_dtype": "bfloat16"}))
    assert half.scored == {"tiny-hpsv2": 8, "tiny-imagereward": 8}  # another dtype: another stored version


def test_official_weights_can_be_pinned_to_a_hub_revision():
    commit = "0123456789abcdef0123456789abcdef01234567"
    pinned = make_metric(f"hpsv2.1:@{commit}")
    assert pinned.hub_files()[0].revision == commit and pinned.hub_files()[0].patterns == ("HPS_v2.1_compressed.pt",)
    assert pinned.version == f"1+xswu/HPSv2@{commit[:12]}"  # a commit needs no look-up, even offline
    assert make_metric("hpsv2").hub_files()[0].revision == "main"


def test_pickscore_accepts_the_position_ids_buffers_older_transformers_saved(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "weights"
    shutil.copytree(ensure_tiny_scorer("tiny-pickscore", 0), folder)
    state = load_file(folder / "model.safetensors")
    state["text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    state["vision_model.embeddings.position_ids"] = torch.arange(50).unsqueeze(0)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    metric = make_metric(f"pickscore:{folder}")
    metric.load("cpu", torch.float32)
    reference = make_metric("tiny-pickscore")
    reference.load("cpu", torch.float32)
    assert metric.score(_images(2), PROMPTS[:2]) == reference.score(_images(2), PROMPTS[:2])
