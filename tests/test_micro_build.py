"""`rpo-bench micro build` at toy step counts: it runs every stage, resumes by stage, and is deterministic."""

from __future__ import annotations

import json

import pytest

from rpo_bench.micro.build import build_micro
from rpo_bench.micro.world import LATEST

TOY = dict(clip_steps=2, vae_steps=2, unet_steps=2, unet_pool=64, judge_steps=2, show_progress=False)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """(folder, report) of one uninterrupted toy build, seed 3, one process: what the other builds must equal."""
    folder = tmp_path_factory.mktemp("whole") / "a"
    return folder, build_micro(folder, seed=3, **TOY)  # the latest world's recipe


@pytest.mark.slow
def test_build_is_seeded_and_resumes_by_stage(whole, tmp_path):
    folder, first = whole
    second = build_micro(tmp_path / "b", seed=3, jobs=2, **TOY)  # the VAE trained in a second process
    assert first["sha256"] == second["sha256"]  # same seed, same bytes, however many processes
    assert not list((tmp_path / "b").glob(".*"))  # no stage's temporary folder is left behind
    expected = {"judge.safetensors", "micro-clip/model.safetensors",
                "micro-base/unet/diffusion_pytorch_model.safetensors"}
    assert expected <= set(first["sha256"])
    assert not (folder / "micro-base" / "tokenizer" / "tokenizer.json").exists()  # the compact tokenizer
    unet = folder / "micro-base" / "unet" / "diffusion_pytorch_model.safetensors"
    mtime = unet.stat().st_mtime_ns
    again = build_micro(folder, seed=3, **TOY)  # both stages present: nothing is retrained
    assert unet.stat().st_mtime_ns == mtime and again["sha256"] == first["sha256"]
    recorded = json.loads((folder / "build.json").read_text())
    assert recorded["settings"]["unet_pool"] == 64 and "wall_seconds" in recorded["micro-base"]
    assert "wall_seconds" in recorded["micro-vae"] and not (folder / "micro-vae").exists()
    assert recorded["world"] == LATEST and recorded["recipe"]["version"] == LATEST
    assert len(recorded["micro-base"]["unet"]["loss_curve"]) == 2  # one point per window of max(steps // 20, 1)


@pytest.mark.slow
def test_world_versions_build_their_own_recipes(tmp_path):
    """v2: 16x16 latents and a three-level UNet that still draws 32 px images; a folder holding one world's stages
    refuses another world's build instead of mixing them (v1's architecture is the shipped micro-base's)."""
    from diffusers import StableDiffusionPipeline

    from rpo_bench.core.errors import BadInputError
    from rpo_bench.micro.world import world_recipe

    build_micro(tmp_path / "v2", seed=1, world=2, **TOY)
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "v2" / "micro-base", safety_checker=None)
    assert pipe.unet.config.sample_size == 16 and pipe.unet.config.sample_size * pipe.vae_scale_factor == 32
    assert json.loads((tmp_path / "v2" / "build.json").read_text())["recipe"] == world_recipe(2).record()
    assert world_recipe(1).vae_downsampling == 4 and world_recipe(1).vae_perceptual == 0.0
    with pytest.raises(BadInputError, match="holds stages of world 2"):
        build_micro(tmp_path / "v2", seed=1, world=1, **TOY)
    again = build_micro(tmp_path / "v2", seed=1, **TOY)  # no --world: the folder's own world, nothing rebuilt
    assert again["sha256"] == json.loads((tmp_path / "v2" / "build.json").read_text())["sha256"]
    with pytest.raises(BadInputError, match="--world 3; accepted: 1, 2"):
        build_micro(tmp_path / "v3", world=3, **TOY)
    # every evaluation names the world its models belong to, so two worlds' numbers are never read as one
    from rpo_bench.cli import main
    from rpo_bench.evaluation.store import ResultsStore
    from rpo_bench.models.catalog import resolve_model

    assert resolve_model(str(tmp_path / "v2" / "micro-base")).micro_world == 2
    assert resolve_model("tiny-sd15").micro_world is None
    (tmp_path / "one.txt").write_text("a large red circle in the center, gray background\n", encoding="utf-8")
    store = tmp_path / "r.sqlite"
    assert main(["evaluate", "--models", str(tmp_path / "v2" / "micro-base"), "--prompts", str(tmp_path / "one.txt"),
                 "--metrics", "micro-oracle", "--protocol", "micro", "--store", str(store)]) == 0
    with ResultsStore(store) as results:
        runs = results.runs()
    assert [model["micro_world"] for model in json.loads(runs[0].config)["models"]] == [2]
    # the world's picture, drawn by the built base instead of the shipped one
    from PIL import Image

    from rpo_bench.workflows.world_grid import write_micro_world_grid

    grid = write_micro_world_grid(tmp_path / "grid.png", prompts=1, model=str(tmp_path / "v2" / "micro-base"),
                                  store=store, image_cache=tmp_path / "cache", show_progress=False)
    with Image.open(grid) as picture:
        assert picture.size[0] > 10 * 32  # one row: five styles, each a render beside the built base's image
    with pytest.raises(BadInputError, match="holds stages of world 2"):
        build_micro(tmp_path / "v2", seed=1, world=1, **TOY)


@pytest.mark.slow
def test_a_build_stopped_after_the_vae_resumes_to_the_same_bytes(whole, tmp_path, monkeypatch):
    """The VAE is its own stage: a build interrupted while the UNet trains keeps it and, rerun, ends with the
    bytes of a build that never stopped."""
    import rpo_bench.micro.build as build_module

    whole = whole[1]
    real = build_module.train_micro_unet

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module, "train_micro_unet", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_micro(tmp_path / "stopped", seed=3, **TOY)
    assert (tmp_path / "stopped" / "micro-vae").is_dir() and not (tmp_path / "stopped" / "micro-base").exists()
    vae = tmp_path / "stopped" / "micro-vae" / "diffusion_pytorch_model.safetensors"
    mtime = vae.stat().st_mtime_ns

    def after_the_kept_vae(*args, **kwargs):
        assert vae.stat().st_mtime_ns == mtime  # the VAE stage was skipped, not retrained
        return real(*args, **kwargs)

    # experiments/micro_unet_variants.py: a base retrained with a changed recipe on the stopped build's stages,
    # which the variant's build.json records; the stopped build is left as it was
    from experiments.micro_unet_variants import main as variant

    monkeypatch.setattr(build_module, "train_micro_unet", real)
    variant(["--world-dir", str(tmp_path / "stopped"), "--out", str(tmp_path / "noisy"), "--caption-noise", "0.5",
             "--unet-steps", "2", "--unet-pool", "64"])
    recorded = json.loads((tmp_path / "noisy" / "build.json").read_text())
    assert recorded["recipe"]["unet_caption_noise"] == 0.5 and recorded["world"] == LATEST
    assert "wall_seconds" in recorded["micro-vae"]  # the stage it reused, as the stopped build recorded it
    assert vae.stat().st_mtime_ns == mtime and not (tmp_path / "stopped" / "micro-base").exists()
    noisy = build_micro(tmp_path / "noisy", **TOY)  # nothing left to build: its own bytes
    assert noisy["sha256"]["micro-base/vae/diffusion_pytorch_model.safetensors"] == whole["sha256"][
        "micro-base/vae/diffusion_pytorch_model.safetensors"]
    unet = "micro-base/unet/diffusion_pytorch_model.safetensors"
    assert noisy["sha256"][unet] != whole["sha256"][unet]

    # --vae: another VAE's weights (as experiments/micro_vae_styles.py saves them) in the build's place, its
    # scaling factor calibrated to its own latents
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(vae)
    weights["encoder.conv_out.weight"] = weights["encoder.conv_out.weight"] * 3  # latents three times as wide
    save_file(weights, tmp_path / "other-vae.safetensors")
    variant(["--world-dir", str(tmp_path / "stopped"), "--out", str(tmp_path / "other"), "--vae",
             str(tmp_path / "other-vae.safetensors"), "--unet-steps", "2", "--unet-pool", "64"])
    used = load_file(tmp_path / "other" / "micro-base" / "vae" / "diffusion_pytorch_model.safetensors")
    assert torch.equal(used["encoder.conv_out.weight"].float(), weights["encoder.conv_out.weight"].half().float())
    recorded = json.loads((tmp_path / "other" / "build.json").read_text())["micro-vae"]
    config = json.loads((tmp_path / "other" / "micro-base" / "vae" / "config.json").read_text())
    original = json.loads((tmp_path / "stopped" / "micro-vae" / "config.json").read_text())["scaling_factor"]
    assert recorded["weights"] == "other-vae.safetensors"
    assert config["scaling_factor"] == pytest.approx(recorded["scaling_factor"], rel=1e-4)
    assert config["scaling_factor"] < original / 2

    monkeypatch.setattr(build_module, "train_micro_unet", after_the_kept_vae)
    resumed = build_micro(tmp_path / "stopped", seed=3, **TOY)
    assert resumed["sha256"] == whole["sha256"]


@pytest.mark.slow
def test_an_interrupted_two_process_build_ends_its_second_process(tmp_path, monkeypatch):
    """Ctrl-C (or a failure) in the judge or CLIP stage ends the VAE's process at once and leaves no half-written
    VAE where a rerun would take it for a finished stage."""
    import multiprocessing

    import rpo_bench.micro.build as build_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module, "train_micro_clip", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_micro(tmp_path / "w", seed=3, jobs=2, **TOY)
    assert multiprocessing.active_children() == []
    left = sorted(p.name for p in (tmp_path / "w").iterdir())
    assert left == [".micro-clip.tmp", "judge.json", "judge.safetensors"]  # a stage's tmp is cleared at the rerun
