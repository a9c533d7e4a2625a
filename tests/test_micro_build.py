"""`rpo-bench micro build` at toy step counts: it runs every stage, resumes by stage, and is deterministic."""

from __future__ import annotations

import json

import pytest

from rpo_bench.micro.build import build_micro

TOY = dict(clip_steps=2, vae_steps=2, unet_steps=2, unet_pool=64, judge_steps=2, show_progress=False)


@pytest.mark.slow
def test_build_is_seeded_and_resumes_by_stage(tmp_path):
    first = build_micro(tmp_path / "a", seed=3, **TOY)
    second = build_micro(tmp_path / "b", seed=3, **TOY)
    assert first["sha256"] == second["sha256"]  # same seed, same bytes
    expected = {"judge.safetensors", "micro-clip/model.safetensors",
                "micro-base/unet/diffusion_pytorch_model.safetensors"}
    assert expected <= set(first["sha256"])
    assert not (tmp_path / "a" / "micro-base" / "tokenizer" / "tokenizer.json").exists()  # the compact tokenizer
    unet = tmp_path / "a" / "micro-base" / "unet" / "diffusion_pytorch_model.safetensors"
    mtime = unet.stat().st_mtime_ns
    again = build_micro(tmp_path / "a", seed=3, **TOY)  # both stages present: nothing is retrained
    assert unet.stat().st_mtime_ns == mtime and again["sha256"] == first["sha256"]
    recorded = json.loads((tmp_path / "a" / "build.json").read_text())
    assert recorded["settings"]["unet_pool"] == 64 and "wall_seconds" in recorded["micro-base"]
