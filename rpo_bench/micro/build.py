"""`rpo-bench micro build`: retrain the micro world's models from scratch, seeded, stage by stage.

Stages: judge -> micro CLIP -> VAE -> base UNet, assembled into `micro-base` (a StableDiffusionPipeline whose
text encoder is the micro CLIP's frozen text tower). What each stage trains is the world version's recipe
(world.py); build.json records the version, so every number measured on the world can say which one it was.
Each stage's output is written atomically and skipped when present, so an interrupted build resumes at the stage
it was in. Weights are saved in fp16 (the shipped set must stay small; most of it is the 49,408-token embedding)
and load in fp32 for training.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch

from rpo_bench.core.atomic import atomic_write
from rpo_bench.core.errors import BadInputError
from rpo_bench.core.progress import silence_library_progress
from rpo_bench.micro.clip_train import train_micro_clip
from rpo_bench.micro.judge import train_judge
from rpo_bench.micro.unet_train import SD_BETAS, train_micro_unet
from rpo_bench.micro.vae_stage import VaeStageBeside, train_vae_stage
from rpo_bench.micro.world import LATEST, WorldRecipe, world_recipe
from rpo_bench.models.fingerprint import sha256_file
from rpo_bench.models.tokenizer import clip_tokenizer, write_clip_tokenizer_files

ASSETS = Path(__file__).resolve().parent / "assets"
STAGES = ("micro-clip", "micro-vae", "micro-base")  # a world's stage folders (micro-vae until the base is built)


def _replace_dir(tmp: Path, final: Path) -> None:
    # atomic: a finished stage's temporary folder takes the place of the old one
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _compact_tokenizer(folder: Path) -> None:
    """transformers 5 saves the 3.6 MB tokenizer.json; the vocab.json + merges.txt pair it is built from loads
    the same tokenizer in 2 MB and diffs readably, so ship that instead."""
    (folder / "tokenizer.json").unlink(missing_ok=True)
    write_clip_tokenizer_files(folder)


def _write_report(path: Path, report: dict) -> None:
    atomic_write(path, json.dumps(report, indent=1))


def _stage(out: Path, name: str, report: dict, build, settings: dict, began: float | None = None) -> bool:
    """Build one stage unless present; True when it ran. Its report keeps the settings it ran with. `began`: when
    a stage that another process trained was started (its wall time counts from there)."""
    final = out / name
    if final.exists():
        return False
    tmp = out / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    began = time.perf_counter() if began is None else began
    report[name] = build(tmp)
    report[name]["wall_seconds"] = round(time.perf_counter() - began, 1)
    report[name]["settings"] = settings
    _replace_dir(tmp, final)
    _write_report(out / "build.json", report)
    return True


def _check_build_settings(out: Path, *, seed: int, threads: int, jobs: int, **steps: int) -> None:
    """Refuse, before any stage starts, what would otherwise fail deep inside numpy or torch."""
    if Path(out).exists() and not Path(out).is_dir():
        raise BadInputError(f"--out {out} is a file; accepted: a folder (created if missing)")
    if not 0 <= seed < 2**32:
        raise BadInputError(f"--seed {seed}; accepted: an integer from 0 to {2**32 - 1}")
    if threads < 1:
        raise BadInputError(f"--threads {threads}; accepted: an integer >= 1")
    if jobs not in (1, 2):
        raise BadInputError(f"--jobs {jobs}; accepted: 1 (one stage at a time) or 2 (the VAE beside the judge and "
                            "CLIP)")
    for name, value in steps.items():
        if value < 1:
            raise BadInputError(f"--{name.replace('_', '-')} {value}; accepted: an integer >= 1")


def _judge_and_clip(out: Path, report: dict, recipe: WorldRecipe, *, seed: int, clip_steps: int, judge_steps: int,
                    threads: int, show_progress: bool) -> bool:
    """The judge and micro CLIP stages, each unless present; True when one ran."""
    from transformers import CLIPModel  # noqa: PLC0415 - transformers loads in seconds: on first use

    ran = False
    if not (out / "judge.safetensors").is_file():  # the judge writes its own two files atomically
        began = time.perf_counter()
        judge = train_judge(seed=seed, steps=judge_steps, out_dir=out, progress=show_progress, threads=threads,
                            eval_size=200 if judge_steps < 100 else 2000)
        report["judge"] = {"wall_seconds": round(time.perf_counter() - began, 1),
                           "held_out_accuracy_clean": judge["accuracy"]["clean"],
                           "settings": dict(seed=seed, judge_steps=judge_steps, torch_threads=threads)}
        ran = True

    def clip_stage(tmp: Path) -> dict:
        # atomic: writes into the stage's temporary folder, which _stage renames as a whole
        result = train_micro_clip(tmp, seed=seed, steps=clip_steps, show_progress=show_progress, mix=recipe.clip_mix)
        CLIPModel.from_pretrained(tmp).half().save_pretrained(tmp)
        _compact_tokenizer(tmp)
        return result

    settings = dict(seed=seed, clip_steps=clip_steps, world=recipe.version)
    return _stage(out, "micro-clip", report, clip_stage, settings) or ran


def _world_of(out: Path) -> int:
    """The world whose stages `out` holds (build.json; the first world's has no version), else the latest."""
    path = Path(out) / "build.json"
    if not any((Path(out) / name).exists() for name in STAGES):
        return LATEST
    return int(json.loads(path.read_text()).get("world", 1)) if path.is_file() else 1


def build_micro(out: Path = ASSETS, seed: int = 0, clip_steps: int | None = None, vae_steps: int | None = None,
                unet_steps: int | None = None, unet_pool: int = 40000, judge_steps: int = 3000, threads: int = 1,
                show_progress: bool = True, world: int | None = None, recipe: WorldRecipe | None = None,
                jobs: int = 1) -> dict:
    """Step counts left as None are the world's recipe's (rpo_bench/micro/world.py). `world` None: the world of
    the stages already in `out` (so a plain rerun resumes or completes it), the latest for an empty folder.
    `recipe`: a variant of that world's recipe, for experiments (experiments/micro_unet_variants.py); build.json
    records whichever recipe ran. `jobs` 2 trains the VAE in a second process beside the judge and CLIP
    (vae_stage.py): the same bytes in less wall time on two cores."""
    if world is None:
        world = _world_of(out)
    recipe = world_recipe(world) if recipe is None else recipe
    clip_steps = recipe.clip_steps if clip_steps is None else clip_steps
    vae_steps = recipe.vae_steps if vae_steps is None else vae_steps
    unet_steps = recipe.unet_steps if unet_steps is None else unet_steps
    _check_build_settings(out, seed=seed, threads=threads, jobs=jobs, clip_steps=clip_steps, vae_steps=vae_steps,
                          unet_steps=unet_steps, unet_pool=unet_pool, judge_steps=judge_steps)
    from transformers import CLIPModel  # noqa: PLC0415 - transformers loads in seconds: on first use

    # One thread: these models are too small to gain from a second, and on a busy machine two threads wait on
    # each other at every op barrier (measured: 15x slower steps while another job ran).
    torch.set_num_threads(threads)
    silence_library_progress()
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "build.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    # build.json is written only when a stage runs: a rebuild that skips every stage must not claim settings
    # that no stage used.
    previous_settings = report.get("settings")
    if report.get("world", 1) != world and any((out / name).exists() for name in STAGES):
        raise BadInputError(f"--world {world}: {out} holds stages of world {report.get('world', 1)}; accepted: "
                            "an empty --out, or the same --world to resume")
    report["world"] = world
    report["recipe"] = recipe.record()
    report["settings"] = dict(seed=seed, clip_steps=clip_steps, vae_steps=vae_steps, unet_steps=unet_steps,
                              unet_pool=unet_pool, judge_steps=judge_steps, torch_threads=torch.get_num_threads(),
                              jobs=jobs)
    ran = False
    vae_needed = not (out / "micro-base").exists() and not (out / "micro-vae").exists()
    beside = VaeStageBeside(out, seed, vae_steps, recipe, threads) if jobs > 1 and vae_needed else None
    try:
        ran |= _judge_and_clip(out, report, recipe, seed=seed, clip_steps=clip_steps, judge_steps=judge_steps,
                               threads=threads, show_progress=show_progress)
    except BaseException:
        if beside is not None:
            beside.stop()
        raise
    vae_settings = dict(seed=seed, vae_steps=vae_steps, world=world)
    if beside is not None:
        ran |= _stage(out, "micro-vae", report, beside.collect, vae_settings, began=beside.began)
    elif vae_needed:
        ran |= _stage(out, "micro-vae", report,
                      lambda tmp: train_vae_stage(tmp, seed, vae_steps, recipe, show_progress), vae_settings)

    def base_stage(tmp: Path) -> dict:
        # atomic: writes into the stage's temporary folder, which _stage renames as a whole
        from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline  # noqa: PLC0415 - diffusers loads in seconds: on first use
        from transformers import CLIPTextModel  # noqa: PLC0415 - transformers loads in seconds: on first use

        clip = CLIPModel.from_pretrained(out / "micro-clip", dtype=torch.float32)
        text_encoder = CLIPTextModel(clip.config.text_config)
        source = clip.state_dict()  # transformers 4 prefixes CLIPTextModel keys with "text_model.", 5 does not
        text_encoder.load_state_dict({k: source[k if k.startswith("text_model.") else f"text_model.{k}"]
                                      for k in text_encoder.state_dict()})
        text_encoder.requires_grad_(False).eval()
        tokenizer = clip_tokenizer()
        vae = AutoencoderKL.from_pretrained(out / "micro-vae").eval().requires_grad_(False)
        unet, unet_report = train_micro_unet(vae, text_encoder, tokenizer, seed=seed, steps=unet_steps,
                                             pool_size=unet_pool, show_progress=show_progress,
                                             levels=recipe.unet_levels, ema_decay=recipe.unet_ema_decay,
                                             ema_warmup=recipe.unet_ema_warmup,
                                             caption_noise=recipe.unet_caption_noise,
                                             curve_every=max(unet_steps // 20, 1))
        scheduler = DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        pipe.to(torch.float16).save_pretrained(tmp)
        _compact_tokenizer(tmp / "tokenizer")
        return {"unet": unet_report}

    if _stage(out, "micro-base", report, base_stage,
              dict(seed=seed, vae_steps=vae_steps, unet_steps=unet_steps, unet_pool=unet_pool, world=world)):
        ran = True
        shutil.rmtree(out / "micro-vae")  # its weights live on in micro-base/vae
    report["sha256"] = {str(p.relative_to(out)): sha256_file(p) for p in sorted(out.rglob("*.safetensors"))}
    if ran:
        _write_report(report_path, report)
    elif previous_settings is not None:
        report["settings"] = previous_settings  # nothing ran: the settings the files were built with
    else:
        report.pop("settings")
    return report
