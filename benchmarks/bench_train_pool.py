"""Both cores for the leaderboards (E13): `micro compare`'s training of several runs one at a time on one thread
(what a leaderboard did) against two at a time (`--jobs 2`, each in its own process on one thread, the same
bytes), side by side, alternated, medians. Target on a 2-core machine: two at a time / one at a time <= 0.6.

    .venv/bin/python benchmarks/bench_train_pool.py [--steps N] [--repeats N] [--json FILE]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import add_common_options, positive, print_wall_time_rows, row, run_script  # noqa: E402

TARGET = 0.6  # two runs at once on two cores, with spawn and import costs: well under the one-at-a-time time


def _training_seconds(data: Path, out: Path, jobs: int, steps: int) -> float:
    import torch

    from rpo_bench.workflows.compare import BASE, CompareConfig, train_all

    config = CompareConfig(out=out, methods=("sft", "dpo"), train_seeds=(0, 1), jobs=jobs, show_progress=False,
                           overrides=dict(model=BASE, data=str(data), steps=steps, heldout_pairs=0, log_every=0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one at a time: on one thread, as a leaderboard trains (and as each pooled run does)
    try:
        started = time.perf_counter()
        train_all(config)
        return time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps per run (the micro preset's pairs per "
                        "step); 4 runs per measurement")
    parser.add_argument("--repeats", type=int, default=2, help="measurements of each configuration, alternated")
    add_common_options(parser)
    return parser


def main(args: argparse.Namespace) -> list[dict]:
    positive("--steps", args.steps)
    positive("--repeats", args.repeats)
    home = Path(tempfile.mkdtemp(prefix="rpo-bench-pool-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    os.environ.update(RPO_BENCH_HOME=str(home), HF_HUB_OFFLINE="1")
    from rpo_bench.workflows.demo import _quick_preferences

    data = _quick_preferences(home / "pairs", show_progress=False)  # the quick demo's micro-pickapic
    print(f"cpus {os.cpu_count()}; 4 runs (SFT and DPO x 2 seeds) of {args.steps} steps at the micro preset")
    times: dict[int, list[float]] = {1: [], 2: []}
    for repeat in range(args.repeats):
        for jobs in (1, 2):  # alternated, so a slow phase of the shared machine hits both
            seconds = _training_seconds(data, home / f"runs-{jobs}-{repeat}", jobs, args.steps)
            times[jobs].append(seconds)
            print(f"  jobs {jobs}: {seconds:.1f} s")
    one, two = statistics.median(times[1]), statistics.median(times[2])
    rows = [row("4 runs one at a time, one thread: wall time (median)", one, "s"),
            row("4 runs two at a time (--jobs 2), one thread each: wall time (median)", two, "s"),
            row("two at a time / one at a time", two / one, "ratio", ratio=two / one, target=f"<= {TARGET}")]
    print_wall_time_rows(rows)
    return rows


if __name__ == "__main__":
    raise SystemExit(run_script(main, parser()))
