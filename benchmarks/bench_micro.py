"""The micro world's own costs: building its preference set, and a training step of each method on micro-base.

1. `micro preferences` (`build_micro_pickapic`) on the first `--prompts` micro-train prompts with the default k
   (12 images a prompt) and pair settings, in a fresh home: wall time, images/s (generation + judge scoring) and
   pairs/s; then the same command again on the same folder (everything is in the image cache and the results
   store: the resume `micro preferences` promises) and into a new folder (cached images, scores recomputed).
   A warm-up build of one other prompt (k = 2) first loads the models and pays torch's first calls, so the fresh
   build measures what a set of that size costs; its time is printed and recorded.
2. Training steps/s of SFT, DPO and RPO on micro-base, full UNet, M = 16 pairs per step, lr 1e-5, caption
   dropout 0.1, on the set built in 1: `Trainer.train()` with `--train-steps` steps, timed per step from the
   history it returns (the loop's own `seconds`, so set-up, the first step (warm-up) and saving are excluded).
   Information: one method after the other, so a busy phase of the machine can favour one.
3. RPO / DPO step time at M = 8 and M = 32 pairs per step, measured side by side as `bench_train_step.py` does:
   a DPO and an RPO trainer with the same settings, `setup()` and one warm-up step each, then single
   `_optimizer_step`s alternated DPO, RPO, RPO, DPO, ... (same step numbers: same pairs, timesteps and noise).
   Target: RPO / DPO <= 1.05 at both sizes (RPO's M x M weights and loss grow with M^2 but stay far below the
   UNet's cost, which grows with M).

One torch thread by default, for the reason given in `bench_train_step.py` (`--threads 0`: torch's default).

    .venv/bin/python benchmarks/bench_micro.py [--prompts 24] [--train-steps 20] [--rounds 30] [--threads 1]
        [--device cpu|cuda] [--json FILE]
"""

from __future__ import annotations

import argparse
import atexit
import json
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
from benchmarks.common import add_common_options, positive, row, run_script, synchronize, time_losses  # noqa: E402
from rpo_bench.evaluation.prompts import load_prompt_set  # noqa: E402
from rpo_bench.training.config import build_config  # noqa: E402
from rpo_bench.training.micro_pickapic import DEFAULTS, build_micro_pickapic  # noqa: E402
from rpo_bench.training.trainer import Trainer  # noqa: E402

MODEL = "micro-base"
TRAIN_PAIRS = 16  # M of the steps/s rows
COMPARE_PAIRS = (8, 32)  # M of the RPO / DPO rows
METHODS = ("sft", "dpo", "rpo")
TIME_TARGET = 1.05


# -- 1. the preference set ------------------------------------------------------------------------------------
def prompt_file(first: int, path: Path, skip: int = 0) -> Path:
    """micro-train prompts [skip, skip + first) as a .jsonl prompt file (text and category, as the set has them)."""
    prompts = load_prompt_set(DEFAULTS["prompts"]).prompts
    path.write_text("".join(json.dumps({"prompt": p.text, "category": p.category}) + "\n"
                            for p in prompts[skip:skip + first]), encoding="utf-8")
    return path


def timed_build(out_dir: Path, prompts: Path, device: str, **settings) -> tuple[float, dict]:
    start = time.perf_counter()
    summary = build_micro_pickapic(out_dir, device=device, show_progress=False, prompts=str(prompts), **settings)
    synchronize(device)
    return time.perf_counter() - start, summary


def preference_rows(first: int, device: str) -> tuple[list[dict], Path, int]:
    from rpo_bench.core.errors import BadInputError

    available = len(load_prompt_set(DEFAULTS["prompts"]).prompts)
    if first >= available:  # before anything runs
        raise BadInputError(f"--prompts {first}: micro-train has {available} prompts; accepted: 1 to "
                            f"{available - 1} (one more is the warm-up's)")
    k = DEFAULTS["k"]
    warm_prompts = prompt_file(1, HOME / "warm-up.jsonl", skip=first)  # not one of the measured prompts
    start = time.perf_counter()
    try:  # margin 0: the set of one prompt's 2 images is only a warm-up, any gap will do
        timed_build(HOME / "prefs" / "warm-up", warm_prompts, device, k=2, margin=0.0)
    except BadInputError:  # a tie gives no pair; the models are loaded and the first calls made all the same
        pass
    warm_s = time.perf_counter() - start
    print(f"warm-up build (1 other prompt, k = 2: loads micro-base and the judge, first calls): {warm_s:.2f} s "
          "(excluded)")
    prompts = prompt_file(first, HOME / "prompts.jsonl")
    out = HOME / "prefs" / "subset"
    fresh_s, summary = timed_build(out, prompts, device)
    images, pairs = summary["generated"], summary["pairs"]
    print(f"micro preferences, first {first} micro-train prompts x k = {k}, fresh: {fresh_s:.2f} s, {images} images "
          f"generated and judged ({images / fresh_s:.1f} images/s), {pairs} pairs ({pairs / fresh_s:.1f} pairs/s; "
          f"{summary['dropped_for_margin']} dropped for margin, {summary['labels_flipped']} labels flipped)")
    if images != first * k:
        print(f"  note: {images} images generated, expected {first * k}")
    cached_s, again = timed_build(out, prompts, device)
    assert again["generated"] == 0 and again["pairs"] == pairs, "the re-run regenerated images or changed the set"
    print(f"  same command again, same folder (images cached, scores stored): {cached_s:.2f} s = "
          f"{cached_s / fresh_s:.3f} of fresh")
    rescored_s, other = timed_build(HOME / "prefs" / "subset-new-folder", prompts, device)
    assert other["generated"] == 0 and other["pairs"] == pairs, "a new folder regenerated cached images"
    print(f"  into a new folder (images cached, judged again): {rescored_s:.2f} s = "
          f"{rescored_s / fresh_s:.3f} of fresh")
    label = f"micro preferences, {first} micro-train prompts x k = {k}"
    common = dict(prompts=first, k=k, images=images, pairs=pairs, warm_up_s=warm_s)
    rows = [row(f"{label}, fresh: wall time", fresh_s, "s", **common),
            row(f"{label}, fresh: images generated + judged per second", images / fresh_s, "images/s", **common),
            row(f"{label}, fresh: pairs per second", pairs / fresh_s, "pairs/s", **common),
            row(f"{label}: re-run from cache / fresh wall time", cached_s / fresh_s, "ratio", cached_s / fresh_s,
                cached_s=cached_s, fresh_s=fresh_s),
            row(f"{label}: new folder, cached images (judged again) / fresh", rescored_s / fresh_s, "ratio",
                rescored_s / fresh_s, rescored_s=rescored_s, fresh_s=fresh_s)]
    return rows, out, pairs


# -- 2. steps/s per method -----------------------------------------------------------------------------------
def train_config(method: str, data: Path, steps: int, pairs: int, device: str):
    return build_config(None, None, dict(
        method=method, model=MODEL, data=str(data), steps=steps, pairs_per_device=pairs, lr=1e-5,
        caption_dropout=0.1, heldout_pairs=0, log_every=0, device=device,
        output=str(HOME / "runs" / f"{method}-m{pairs}-{time.time_ns()}")))


def steps_rows(data: Path, steps: int, device: str) -> list[dict]:
    rows = []
    for method in METHODS:
        start = time.perf_counter()
        result = Trainer(train_config(method, data, steps + 1, TRAIN_PAIRS, device), show_progress=False).train()
        total = time.perf_counter() - start
        seconds = [record["seconds"] for record in result.history[1:]]  # the first step is the warm-up
        median = statistics.median(seconds)
        print(f"train {method.upper()}, micro-base full, M = {TRAIN_PAIRS}: {1 / median:.2f} steps/s "
              f"({median * 1000:.0f} ms/step, median of {len(seconds)}; best {min(seconds) * 1000:.0f}, worst "
              f"{max(seconds) * 1000:.0f} ms; first step {result.history[0]['seconds'] * 1000:.0f} ms; whole "
              f"train() with set-up and saving {total:.1f} s)")
        rows.append(row(f"train {method.upper()} steps/s, micro-base full UNet, M = {TRAIN_PAIRS}", 1 / median,
                        "steps/s", step_s=median, best_s=min(seconds), worst_s=max(seconds), steps=len(seconds),
                        first_step_s=result.history[0]["seconds"], train_total_s=total))
    return rows


# -- 3. RPO / DPO side by side at M = 8 and 32 ------------------------------------------------------------------
def time_steps(data: Path, pairs: int, rounds: int, device: str) -> dict[str, dict]:
    """Single optimizer steps of a DPO and an RPO trainer, alternated DPO, RPO, RPO, DPO, ... (bench_train_step)."""
    trainers = {}
    for method in ("dpo", "rpo"):
        trainer = Trainer(train_config(method, data, rounds + 1, pairs, device), show_progress=False)
        trainer.setup()
        trainer._optimizer_step(0)  # warm-up: lazy allocations, optimizer state, first-call dispatch
        trainers[method] = trainer
    times: dict[str, dict] = {"wall": {"dpo": [], "rpo": []}, "cpu": {"dpo": [], "rpo": []}}
    for r in range(rounds):
        for method in ("dpo", "rpo") if r % 2 == 0 else ("rpo", "dpo"):
            wall, cpu = time.perf_counter(), time.process_time()
            trainers[method]._optimizer_step(1 + r)  # returns floats (grad norm): waits for a GPU
            times["wall"][method].append(time.perf_counter() - wall)
            times["cpu"][method].append(time.process_time() - cpu)
    times["loss"] = time_losses(trainers, pairs, device, iterations=100)
    return times


def compare_rows(pairs: int, times: dict[str, dict]) -> list[dict]:
    wall, cpu = times["wall"], times["cpu"]
    dpo, rpo = wall["dpo"], wall["rpo"]
    ratio = statistics.median(rpo) / statistics.median(dpo)
    paired = statistics.median(b / a for a, b in zip(dpo, rpo, strict=True))
    cpu_ratio = statistics.median(cpu["rpo"]) / statistics.median(cpu["dpo"])
    best = min(rpo) / min(dpo)
    loss = {k: statistics.median(v) for k, v in times["loss"].items()}
    label = f"micro-base full, M = {pairs}"
    for method, values in wall.items():
        print(f"  {label} {method.upper()}: {statistics.median(values) * 1000:7.1f} ms/step wall, "
              f"{statistics.median(cpu[method]) * 1000:7.1f} ms CPU (medians of {len(values)})")
    verdict = "ok" if ratio <= TIME_TARGET else "MISSED"
    print(f"{label}: RPO / DPO step time = {ratio:.3f} (target <= {TIME_TARGET})  {verdict}  [median of paired "
          f"ratios {paired:.3f}, CPU time {cpu_ratio:.3f}, best / best {best:.3f}]")
    own = (loss["rpo"] - loss["dpo"]) / statistics.median(dpo)
    print(f"  {label} loss + its backward alone (no UNet): DPO {loss['dpo'] * 1000:.2f} ms, RPO "
          f"{loss['rpo'] * 1000:.2f} ms: RPO's own work is {own * 100:+.2f}% of a DPO step")
    spread = max(max(v) / min(v) for v in wall.values())
    if spread > 1.5:
        print(f"  note: {spread:.1f}x spread between steps: the machine was busy; trust the ratio when the "
              "estimates agree, or rerun with more --rounds")
    return [row(f"train step DPO, {label}", statistics.median(dpo), "s/step"),
            row(f"train step RPO, {label}", statistics.median(rpo), "s/step"),
            row(f"train step RPO / DPO, {label}", ratio, "ratio", ratio, f"<= {TIME_TARGET}",
                dpo_s=statistics.median(dpo), rpo_s=statistics.median(rpo), paired=paired, cpu_ratio=cpu_ratio,
                best_over_best=best, loss_dpo_ms=loss["dpo"] * 1000, loss_rpo_ms=loss["rpo"] * 1000,
                rounds=len(dpo))]


# -- main -----------------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=24,
                        help="how many micro-train prompts (the first ones) the preference set is built from")
    parser.add_argument("--train-steps", type=int, default=20,
                        help="timed steps per method for the steps/s rows (plus one warm-up step)")
    parser.add_argument("--rounds", type=int, default=30,
                        help="alternating rounds (one DPO + one RPO step each) at each of M = 8 and M = 32")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (0: torch's default); see bench_train_step.py")
    add_common_options(parser)
    return parser


def main(args: argparse.Namespace) -> list[dict]:
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # the trainer's frozen-module .to(dtype) warns on every setup
    first = positive("--prompts", args.prompts)
    steps, rounds = positive("--train-steps", args.train_steps), positive("--rounds", args.rounds)
    default_threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"home: {HOME}  torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} thread(s) "
          f"(default {default_threads}), cpus {os.cpu_count()}; model {MODEL}")
    rows, data, pairs = preference_rows(first, args.device)
    largest = max(TRAIN_PAIRS, *COMPARE_PAIRS)
    if pairs < largest:
        print(f"  note: {pairs} pairs < M = {largest}: a micro-batch repeats pairs (raise --prompts)")
    rows += steps_rows(data, steps, args.device)
    for m in COMPARE_PAIRS:
        rows += compare_rows(m, time_steps(data, m, rounds, args.device))
    print("summary: " + ", ".join(f"{r['what']}: {r['value']:.3f}" for r in rows if r["target"]))
    return rows


if __name__ == "__main__":
    raise SystemExit(run_script(main, parser()))
