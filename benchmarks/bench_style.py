"""What a user waits for when teaching a micro style: `rpo-bench train --style S` and `evaluate --style S` with
the default budget, from a fresh home (nothing cached), as two command lines a user would type.

1. `rpo-bench train --style S --output OUT --quiet` (the micro-style preset: data built from the style's
   references and micro-base's images of their captions, then the preset's steps): wall time.
2. `rpo-bench evaluate --style S --models OUT` (micro-base and OUT on the style's held-out prompts: style probe,
   centroid, content and ground-truth metrics): wall time, including fitting the style probe. Target: 1 + 2 under
   10 minutes on 2 cores (`--threads` torch threads per command, 1 by default as in the other benchmarks).
3. The probe alone: fitting `style-prob:S` from cached embeddings' inputs (references and base images already
   generated), timed in a new process with a removed probe cache, so only embedding and fitting are measured.

    .venv/bin/python benchmarks/bench_style.py [--style micro-sketch] [--threads 1] [--steps N] [--json FILE]
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOME = Path(tempfile.mkdtemp(prefix="rpo-bench-bench-"))
atexit.register(shutil.rmtree, HOME, ignore_errors=True)
os.environ["RPO_BENCH_HOME"] = str(HOME)  # before importing rpo_bench: everything lands in the temp home
os.environ["HF_HUB_OFFLINE"] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import add_common_options, positive, print_wall_time_rows, row, run_script  # noqa: E402

BUDGET_SECONDS = 600.0
PROBE_SNIPPET = """
import sys, time, torch
from rpo_bench.metrics import make_metric
metric = make_metric(sys.argv[1])
started = time.perf_counter()
metric.load("cpu", torch.float32)
print(f"{time.perf_counter() - started:.3f}")
print(" | ".join(metric.notes()))
"""


def _cli(args: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "rpo_bench", *args], env=env, text=True, capture_output=True)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"rpo-bench {' '.join(args)} failed ({completed.returncode}):\n{completed.stderr[-2000:]}")
    tail = [line for line in completed.stdout.splitlines() if line.strip()][-14:]
    print("\n".join(f"    {line}" for line in tail))
    return seconds


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--style", default="micro-sketch", help="a micro style (rpo-bench styles)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each command")
    parser.add_argument("--steps", type=int, default=0, help="training steps (0: the preset's, the budget the "
                        "target is about; fewer make the 10-minute row information only)")
    add_common_options(parser)
    return parser


def main(args: argparse.Namespace) -> list[dict]:
    from rpo_bench.style.registry import get_style, style_home

    style = get_style(args.style)
    out = HOME / "runs" / f"{style.name}-rpo"
    print(f"home: {HOME}; style {style.name}, {args.threads} thread(s) per command, cpus {os.cpu_count()}")
    print(f"  train --style {style.name}")
    steps = ["--steps", str(positive("--steps", args.steps))] if args.steps else []
    train_seconds = _cli(["train", "--style", style.name, "--output", str(out), "--quiet", *steps], args.threads)
    print(f"  evaluate --style {style.name}")
    evaluate_seconds = _cli(["evaluate", "--style", style.name, "--models", str(out), "--device", args.device],
                            args.threads)
    for probe in style_home(style).glob("probe-*.json"):
        probe.unlink()  # refit from the cached images: embedding + fitting only
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    fitted = subprocess.run([sys.executable, "-c", PROBE_SNIPPET, f"style-prob:{style.name}"], env=env, text=True,
                            capture_output=True, check=True).stdout.splitlines()
    probe_seconds = float(fitted[0])
    total = train_seconds + evaluate_seconds
    print(f"  probe: {fitted[1] if len(fitted) > 1 else ''}")
    rows = [row(f"train --style {style.name} (default budget, fresh home)", train_seconds, "s"),
            row(f"evaluate --style {style.name} (base + trained, probe fit included)", evaluate_seconds, "s"),
            row(f"train + evaluate / 10 minutes ({total:.0f} s)", total / BUDGET_SECONDS, "ratio",
                ratio=total / BUDGET_SECONDS, target=None if args.steps else "<= 1"),
            row(f"style-prob:{style.name} probe fit (embed references and base images, fit, save)",
                probe_seconds, "s")]
    print_wall_time_rows(rows)
    return rows


if __name__ == "__main__":
    raise SystemExit(run_script(main, parser()))
