"""The micro world as shipped: micro-base loads offline from the package and follows prompts far above chance;
its preference set's labels agree with the noiseless judge as often as the configured noise says."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate
from rpo_bench.micro.world import world_recipe
from rpo_bench.models.catalog import MODELS
from rpo_bench.models.loader import load_pipeline

# Chance on balanced micro-test prompts: colour 1/6, shape 1/3. The shipped micro-base measures about 0.8 and
# 0.6 (closing note of the micro build); these thresholds sit well above chance and below the measurement.
MIN_COLOUR, MIN_SHAPE = 0.5, 0.45


@pytest.fixture(scope="module")
def micro_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("micro")
    return evaluate(EvaluateConfig(models=("micro-base",), prompts="micro-test",
                                   metrics=("micro-oracle:colour", "micro-oracle:shape", "micro-oracle"),
                                   seeds=(0,), store=out / "r.sqlite", image_cache=out / "images",
                                   batch_size=32, show_progress=False))


def test_micro_base_loads_offline_from_the_package():
    spec = MODELS.get("micro-base")
    pipe = load_pipeline(spec)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    recipe = world_recipe(spec.micro_world)  # the shipped world's own geometry: v1 8x8 latents, v2 16x16
    assert pipe.vae_scale_factor == recipe.vae_downsampling
    assert pipe.unet.config.sample_size * recipe.vae_downsampling == 32  # 32 px images


def test_micro_base_follows_prompts_far_above_chance(micro_results):
    means = {row.metric: row.mean for row in micro_results.summary}
    assert means["micro-oracle:colour"] >= MIN_COLOUR
    assert means["micro-oracle:shape"] >= MIN_SHAPE


@pytest.mark.slow
def test_preference_labels_agree_with_the_noiseless_judge_as_configured(tmp_path):
    from rpo_bench.training.micro_pickapic import build_micro_pickapic

    temperature = 0.1
    # every second micro-train prompt: 108 pairs are enough for the 3-standard-error check, in half the time
    lines = (Path(__file__).resolve().parents[1] / "prompts" / "micro-train.jsonl").read_text(encoding="utf-8")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(line + "\n" for line in lines.splitlines()[::2]), encoding="utf-8")
    summary = build_micro_pickapic(tmp_path / "prefs", prompts=str(prompts), k=2, label_noise=temperature,
                                   show_progress=False)
    rows = [json.loads(line) for line in (tmp_path / "prefs" / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == summary["pairs"] > 50
    agree = [(row["label_0"] == 1.0) == (row["score_0"] > row["score_1"]) for row in rows]
    expected = [1 / (1 + math.exp(-abs(row["score_0"] - row["score_1"]) / temperature)) for row in rows]
    observed, predicted = sum(agree) / len(rows), sum(expected) / len(rows)
    standard_error = math.sqrt(sum(p * (1 - p) for p in expected)) / len(rows)
    assert abs(observed - predicted) <= 3 * standard_error + 1e-9
    assert all(row["score_0"] != row["score_1"] for row in rows)  # ties dropped
    assert observed < 1.0  # some labels are the wrong way round, as with people
    assert summary["label_disagreement"] == pytest.approx(1.0 - observed, abs=1e-6)  # and the summary says so


def test_micro_models_weight_rpo_pairs_with_the_micro_clip():
    """--embed-model auto must pick the micro CLIP for micro-base (and for anything trained from it), never a hub
    CLIP that is not on the machine."""
    from rpo_bench.models.spec import spec_from_table

    micro = MODELS.get("micro-base")
    assert micro.clip_source.endswith("micro/assets/micro-clip")
    assert MODELS.get("tiny-sd15").clip_source == "tiny-clip"
    assert MODELS.get("sd15-base").clip_source == "openai/clip-vit-large-patch14"
    trained = spec_from_table("x", {k: v for k, v in micro.to_dict().items() if k != "name"})
    assert trained.clip_source == micro.clip_source
