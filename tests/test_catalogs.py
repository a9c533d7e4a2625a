"""Walk every built-in entry of every registry: each is well-formed, and each offline one actually works."""

from __future__ import annotations

from pathlib import Path

import pytest

from rpo_bench.core.errors import BadInputError
from rpo_bench.evaluation.prompts import PROMPT_SETS, load_prompt_set
from rpo_bench.evaluation.protocols import PROTOCOLS, SAMPLERS, protocol_from_table
from rpo_bench.metrics import METRICS, example_spec, make_metric
from rpo_bench.models.catalog import MODELS
from rpo_bench.models.loader import load_pipeline, model_fingerprint
from rpo_bench.models.spec import FAMILIES, spec_from_table

REAL_MODELS = {"sd15-base", "sd15-dpo", "sdxl-base", "sdxl-dpo"}


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_entry_is_well_formed(name):
    spec = MODELS.get(name)
    assert spec.family in FAMILIES
    assert spec.protocol in PROTOCOLS, f"{name}: default protocol {spec.protocol} is not registered"
    assert spec.description, f"{name} has no summary"
    if spec.tiny:
        return
    if spec.repo.startswith("package:"):  # shipped inside rpo_bench (the micro world)
        assert (Path(spec.location) / "model_index.json").is_file(), f"{name}: {spec.location} is not shipped"
        return
    org, _, repo = spec.repo.partition("/")
    assert org and repo, f"{name}: base repo {spec.repo!r} is not an org/name hub id"
    if spec.unet_repo:
        assert spec.unet_subfolder == "unet"


def test_the_real_catalog_is_complete():
    assert REAL_MODELS <= set(MODELS.names())
    assert MODELS.get("sd15-dpo").unet_repo == "mhdang/dpo-sd1.5-text2image-v1"
    assert MODELS.get("sdxl-dpo").vae_repo == "madebyollin/sdxl-vae-fp16-fix"
    assert MODELS.get("sdxl-base").repo == "stabilityai/stable-diffusion-xl-base-1.0"
    assert MODELS.get("sd15-base").repo == "stable-diffusion-v1-5/stable-diffusion-v1-5"


@pytest.mark.parametrize("name", [n for n in MODELS.names() if MODELS.get(n).tiny])
def test_every_tiny_model_loads_and_has_a_stable_fingerprint(name):
    spec = MODELS.get(name)
    pipe = load_pipeline(spec)
    assert type(pipe).__name__ == ("StableDiffusionXLPipeline" if spec.family == "sdxl" else "StableDiffusionPipeline")
    assert model_fingerprint(spec) == model_fingerprint(spec)


def test_tiny_models_differ_by_seed():
    assert model_fingerprint(MODELS.get("tiny-sd15")) != model_fingerprint(MODELS.get("tiny-sd15-alt"))


def test_model_table_rejects_unknown_keys():
    with pytest.raises(BadInputError, match="unet_rep"):
        spec_from_table("x", {"family": "sd15", "repo": "a/b", "unet_rep": "c/d"})
    with pytest.raises(BadInputError, match="sd3"):
        spec_from_table("x", {"family": "sd3", "repo": "a/b"})


@pytest.mark.parametrize("name", PROTOCOLS.names())
def test_every_protocol_has_settings_for_every_family(name):
    protocol = PROTOCOLS.get(name)
    assert protocol.sampler in SAMPLERS
    for family in FAMILIES:
        settings = protocol.settings(family)
        assert settings["steps"] >= 1 and settings["guidance"] >= 1.0
        assert len(protocol.fingerprint(family)) == 64


def test_protocol_fingerprints_are_distinct():
    assert len({PROTOCOLS.get(n).fingerprint("sd15") for n in PROTOCOLS.names()}) == len(PROTOCOLS.names())


def test_published_protocols_match_method_md():
    spo = PROTOCOLS.get("spo-ddim20")
    assert (spo.sampler, spo.steps, spo.guidance["sd15"], spo.resolution["sd15"], spo.resolution["sdxl"]) == (
        "ddim", 20, 5.0, 512, 1024)
    dpo = PROTOCOLS.get("dpo-default")
    assert (dpo.sampler, dpo.steps, dpo.guidance["sd15"], dpo.guidance["sdxl"]) == ("default", 50, 7.5, 5.0)


def test_protocol_version_changes_fingerprint():
    a = protocol_from_table("p", {"sampler": "ddim", "steps": 20})
    b = protocol_from_table("p", {"sampler": "ddim", "steps": 20, "version": 2})
    assert a.fingerprint("sd15") != b.fingerprint("sd15")
    with pytest.raises(BadInputError, match="'heun'"):
        protocol_from_table("p", {"sampler": "heun", "steps": 20})


@pytest.mark.parametrize("name", PROMPT_SETS.names())
def test_every_prompt_set_entry_is_well_formed(name):
    spec = PROMPT_SETS.get(name)
    assert spec.summary
    if spec.file:
        prompts = load_prompt_set(name).prompts
        assert prompts and all(p.text for p in prompts)
    else:
        assert "/" in spec.hf_dataset and spec.size
        assert spec.hf_files or (spec.split and spec.column)


@pytest.mark.parametrize("name", METRICS.names())
def test_every_metric_declares_direction_and_range(name):
    spec = example_spec(name)
    metric = make_metric(spec)
    low, high = metric.value_range
    assert low < high
    assert isinstance(metric.higher_is_better, bool)
    assert metric.key == spec
