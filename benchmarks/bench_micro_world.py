"""World v2 against world v1: UNet training step time and sampling images/s side by side, build time per stage,
and `micro check` wall time.

1. A training step of each world's base UNet architecture (v1: two levels on 8x8 latents; v2: three levels, the
   top one attention-free, on 16x16 latents), batch `--batch`, random weights (a step's cost does not depend on
   them), alternated v1, v2, v2, v1, ...; medians and their ratio.
2. Sampling: each world's whole pipeline (its VAE and UNet architectures, the shipped micro CLIP text encoder) under
   the `micro` protocol (DDIM 20 steps, CFG 5, 32 px), `--sample-batch` prompts a call, alternated; images/s and
   the ratio.
3. Build wall time per stage, as the builds recorded them (`build.json` of the shipped world and of
   `--world-dir`, a world built with `rpo-bench micro build --out DIR`).
4. `rpo-bench micro check --n 64` wall time on the shipped world (target: under 5 minutes on one core).

One torch thread by default, as the build and the check use.

    .venv/bin/python benchmarks/bench_micro_world.py [--batch 128] [--sample-batch 32] [--rounds 5]
        [--world-dir DIR] [--skip-check] [--threads 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HOME = Path(tempfile.mkdtemp(prefix="rpo-bench-bench-"))
atexit.register(shutil.rmtree, HOME, ignore_errors=True)  # also when an import below fails
os.environ["RPO_BENCH_HOME"] = str(HOME)  # before importing rpo_bench: everything lands in the temp home
os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.common` when run as a file
from benchmarks.common import add_common_options, positive, row, run_script, unet_step_seconds  # noqa: E402
from rpo_bench.micro.build import ASSETS  # noqa: E402
from rpo_bench.micro.world import WORLDS  # noqa: E402

CHECK_TARGET_S = 300.0


def unet_for(world: int):
    from rpo_bench.micro.unet_train import build_micro_unet

    torch.manual_seed(0)
    return build_micro_unet(64, levels=WORLDS[world].unet_levels)


def pipeline_for(world: int):
    """The world's pipeline architecture with random VAE and UNet weights and the shipped text encoder."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    from rpo_bench.micro.unet_train import SD_BETAS
    from rpo_bench.micro.vae_train import build_micro_vae
    from rpo_bench.models.tokenizer import clip_tokenizer

    torch.manual_seed(0)
    text_encoder = CLIPTextModel.from_pretrained(ASSETS / "micro-base" / "text_encoder", dtype=torch.float32)
    scheduler = DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=build_micro_vae(4, WORLDS[world].vae_downsampling).eval(),
                                   text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet_for(world).eval(),
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample_seconds(pipe, prompts: list[str]) -> float:
    started = time.perf_counter()
    with torch.no_grad():
        pipe(prompt=prompts, num_inference_steps=20, guidance_scale=5.0, height=32, width=32, output_type="np",
             generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - started


def alternate(measure, things: dict, rounds: int) -> dict[str, list[float]]:
    times = {name: [] for name in things}
    for name in things:
        measure(things[name])  # warm-up: lazy allocations, first-call dispatch
    for r in range(rounds):
        for name in (list(things) if r % 2 == 0 else list(things)[::-1]):
            times[name].append(measure(things[name]))
    return times


def build_rows(world_dir: Path | None) -> list[dict]:
    from rpo_bench.workflows.micro_check import build_card

    rows = []
    for folder in (ASSETS, *([world_dir] if world_dir else [])):
        card = build_card(folder)
        for stage, seconds in card["wall_seconds"].items():
            print(f"build, world v{card['world']} ({folder.name}): {stage} {seconds:.0f} s")
            rows.append(row(f"build stage {stage}, world v{card['world']}", seconds, "s"))
    return rows


def main(args: argparse.Namespace) -> list[dict]:
    batch, sample_batch = positive("--batch", args.batch), positive("--sample-batch", args.sample_batch)
    rounds = positive("--rounds", args.rounds)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from rpo_bench.core.progress import silence_library_progress

    silence_library_progress()
    print(f"home: {HOME}  torch {torch.__version__}, {torch.get_num_threads()} thread(s), cpus {os.cpu_count()}")
    rows = []
    unets = {"v1": unet_for(1), "v2": unet_for(2)}
    steps = alternate(lambda unet: unet_step_seconds(unet, unet.config.sample_size, batch), unets, rounds)
    medians = {name: statistics.median(values) for name, values in steps.items()}
    ratio = medians["v2"] / medians["v1"]
    print(f"UNet training step, batch {batch}: v1 {medians['v1']:.3f} s, v2 {medians['v2']:.3f} s, v2 / v1 {ratio:.2f}")
    rows += [row(f"UNet training step, world v{w[1]}, batch {batch}", medians[w], "s/step") for w in medians]
    rows.append(row(f"UNet training step v2 / v1, batch {batch}", ratio, "ratio"))
    prompts = ["a large red circle on the left, gray background"] * sample_batch
    sampled = alternate(lambda pipe: sample_seconds(pipe, prompts), {"v1": pipeline_for(1), "v2": pipeline_for(2)},
                        rounds)
    rates = {name: sample_batch / statistics.median(values) for name, values in sampled.items()}
    print(f"sampling (micro protocol, batch {sample_batch}): v1 {rates['v1']:.1f} img/s, v2 {rates['v2']:.1f} img/s, "
          f"v2 / v1 {rates['v2'] / rates['v1']:.2f}")
    rows += [row(f"sampling img/s, world v{w[1]}, micro protocol", rates[w], "img/s") for w in rates]
    rows.append(row("sampling img/s v2 / v1", rates["v2"] / rates["v1"], "ratio"))
    rows += build_rows(args.world_dir)
    if not args.skip_check:
        from rpo_bench.workflows.micro_check import micro_check

        started = time.perf_counter()
        micro_check(seed=1, n=64, show_progress=False)
        seconds = time.perf_counter() - started
        print(f"micro check --n 64 (shipped world): {seconds:.1f} s (target <= {CHECK_TARGET_S:.0f} s)")
        rows.append(row("micro check --n 64 wall time / 5 minutes", seconds / CHECK_TARGET_S, "ratio",
                        seconds / CHECK_TARGET_S, "<= 1", seconds=seconds))
    return rows


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="UNet training batch (the build's)")
    parser.add_argument("--sample-batch", type=int, default=32, help="prompts per sampling call")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of each measurement")
    parser.add_argument("--world-dir", type=Path, default=None, help="a world built with `micro build --out DIR`")
    parser.add_argument("--skip-check", action="store_true", help="leave out the micro check timing")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    add_common_options(parser)
    return parser


if __name__ == "__main__":
    raise SystemExit(run_script(main, parser()))
