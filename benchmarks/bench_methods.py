"""Step time of each method and option E11 added, against the one it answers, at the same pairs per step.

- kto / dpo <= 1.05: a KTO step draws two single images per pair of the budget (2M images, as DPO's M winners and
  M losers), each with its own reference forward, so it should cost per two images what DPO costs per pair.
- dpo + winner_preserving / dpo and rpo + winner_preserving / rpo <= 1.05: the SDPO scale reads the residuals the
  model's forward already makes, and takes two dot products.
- mapo / dpo <= 0.7: no reference forward (two forwards with gradients instead of two with and two without).
- dpo + ema / dpo <= 1.05: one in-place lerp over the trained parameters per optimizer step.

Measured as `bench_train_step.py` measures RPO against DPO: for each comparison a trainer of each side with the
same settings, `setup()` and one warm-up step each, then single `_optimizer_step`s alternated base, variant,
variant, base, ... (same step numbers: same pairs, timesteps and noise), ratio of the medians. Two trainers at a
time, so the SD1.5 architecture fits in memory. Models: tiny-sd15 (LoRA rank 4 and full), the SD1.5 UNet
architecture (860M parameters, random weights, LoRA rank 4 at 64 px: bench_train_step.py says why), and micro-base
(full UNet, the micro world's recipe). All train on the same tiny-sd15 AI-feedback pairs (M = 8 a step); each
model's VAE resizes them to its own resolution, so the step costs are each model's own.

One torch thread by default (bench_train_step.py says why).

    .venv/bin/python benchmarks/bench_methods.py [--rounds 20] [--arch-rounds 5] [--threads 1] [--skip-sd15-arch]
        [--device cpu|cuda] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.*` when run as a file
# bench_train_step sets RPO_BENCH_HOME to its temporary home before rpo_bench loads: this script shares it.
import torch  # noqa: E402

from benchmarks.bench_train_step import (  # noqa: E402
    HOME,
    PAIRS,
    RESOLUTION,
    build_sd15_arch,
    guard_this_process,
    make_preference_data,
)
from benchmarks.common import add_common_options, positive, row, run_script  # noqa: E402
from rpo_bench.training.config import build_config  # noqa: E402
from rpo_bench.training.trainer import Trainer  # noqa: E402

# name -> (the base it is compared with, its settings over the base's, target for variant / base)
VARIANTS: dict[str, tuple[str, dict, float]] = {
    "kto": ("dpo", dict(method="kto"), 1.05),
    "dpo + winner_preserving": ("dpo", dict(winner_preserving=True), 1.05),
    "rpo + winner_preserving": ("rpo", dict(winner_preserving=True), 1.05),
    "mapo": ("dpo", dict(method="mapo"), 0.7),
    "dpo + ema": ("dpo", dict(ema_decay=0.999), 1.05),
}


def train_config(base: str, extra: dict, model: str, data: Path, lora_rank: int, steps: int, device: str):
    values = dict(method=base, model=model, data=str(data), steps=steps, pairs_per_device=PAIRS, lora_rank=lora_rank,
                  lr=1e-6, device=device, log_every=0, seed=0, heldout_pairs=0,
                  output=str(HOME / "runs" / f"{Path(model).name}-{time.time_ns()}"))
    if model != "micro-base":
        values["resolution"] = RESOLUTION
    if base == "rpo" and model != "micro-base":
        values["embed_model"] = "tiny-clip"  # offline; "auto" would pick the real CLIP for a folder model
    values.update(extra)
    return build_config(None, None, values)


def time_pair(variant: str, model: str, data: Path, lora_rank: int, rounds: int, device: str) -> dict[str, list]:
    """Wall seconds of single optimizer steps of the base and the variant, alternated."""
    base, extra, _ = VARIANTS[variant]
    trainers = {}
    for side, settings in (("base", {}), ("variant", extra)):
        trainer = Trainer(train_config(base, settings, model, data, lora_rank, rounds + 1, device),
                          show_progress=False)
        trainer.setup()
        trainer._optimizer_step(0)  # warm-up: lazy allocations, optimizer state, first-call dispatch
        trainers[side] = trainer
    times: dict[str, list] = {"base": [], "variant": []}
    for r in range(rounds):
        for side in ("base", "variant") if r % 2 == 0 else ("variant", "base"):
            start = time.perf_counter()
            trainers[side]._optimizer_step(1 + r)  # returns floats (grad norm): waits for a GPU
            times[side].append(time.perf_counter() - start)
    del trainers, trainer
    gc.collect()
    return times


def report(label: str, variant: str, times: dict[str, list]) -> dict:
    base, _, target = VARIANTS[variant]
    ratio = statistics.median(times["variant"]) / statistics.median(times["base"])
    paired = statistics.median(v / b for b, v in zip(times["base"], times["variant"], strict=True))
    best = min(times["variant"]) / min(times["base"])
    verdict = "ok" if ratio <= target else "MISSED"
    print(f"{label}: {variant} / {base} step time = {ratio:.3f} (target <= {target})  {verdict}  "
          f"[{statistics.median(times['base']) * 1000:.0f} vs {statistics.median(times['variant']) * 1000:.0f} ms; "
          f"median of paired ratios {paired:.3f}, best / best {best:.3f}, {len(times['base'])} rounds]")
    spread = max(max(v) / min(v) for v in times.values())
    if spread > 1.5:
        print(f"  note: {spread:.1f}x spread between steps: the machine was busy; trust the ratio when the estimates "
              "agree, or rerun with more rounds")
    return row(f"train step {variant} / {base}, {label}", ratio, "ratio", ratio, f"<= {target}",
               base_s=statistics.median(times["base"]), variant_s=statistics.median(times["variant"]),
               paired=paired, best_over_best=best, rounds=len(times["base"]))


def model_rows(label: str, model: str, data: Path, lora_rank: int, rounds: int, device: str) -> list[dict]:
    return [report(label, variant, time_pair(variant, model, data, lora_rank, rounds, device))
            for variant in VARIANTS]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20,
                        help="alternating rounds (one base + one variant step) per comparison on tiny-sd15 and "
                             "micro-base")
    parser.add_argument("--arch-rounds", type=int, default=5,
                        help="alternating rounds per comparison on the SD1.5-architecture UNet")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-sd15-arch", action="store_true", help="no SD1.5-architecture UNet")
    add_common_options(parser)
    return parser


def main(args: argparse.Namespace) -> list[dict]:
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # the trainer's frozen-module .to(dtype) warns on every setup
    rounds, arch_rounds = positive("--rounds", args.rounds), positive("--arch-rounds", args.arch_rounds)
    guard_this_process()
    default_threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"home: {HOME}  torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} thread(s) "
          f"(default {default_threads}), cpus {os.cpu_count()}")
    data, pairs = make_preference_data()
    print(f"preference data: {pairs} pairs; M = {PAIRS} pairs per step; DPO/RPO beta 5000, KTO beta 1000, MaPO "
          "beta 0.1, mu 0.9, EMA decay 0.999")
    rows = model_rows("tiny-sd15 LoRA r4", "tiny-sd15", data, 4, rounds, args.device)
    rows += model_rows("tiny-sd15 full", "tiny-sd15", data, 0, rounds, args.device)
    rows += model_rows("micro-base full", "micro-base", data, 0, rounds, args.device)
    if not args.skip_sd15_arch:
        arch = build_sd15_arch(HOME / "models" / "sd15-arch", args.device, "full")
        rows += model_rows(f"SD1.5-arch {RESOLUTION} px LoRA r4", str(arch), data, 4, arch_rounds, args.device)
    print("summary: " + ", ".join(f"{r['what']}: {r['value']:.3f}" for r in rows if r["target"]))
    return rows


if __name__ == "__main__":
    raise SystemExit(run_script(main, parser()))
