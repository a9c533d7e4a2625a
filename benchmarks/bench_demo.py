"""What a newcomer waits for: `rpo-bench demo --quick` and `rpo-bench demo` (the micro world end to end: pairs,
SFT/DPO/RPO, held-out evaluation, the report), each from a fresh home (nothing cached), as the command a user
types. Targets: --quick under 3 minutes, the default under 10, on 2 cores.

    .venv/bin/python benchmarks/bench_demo.py [--skip-default] [--threads N] [--json FILE]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import add_common_options, print_wall_time_rows, row, run_script  # noqa: E402

TARGETS = {"--quick": 180.0, "default": 600.0}


def _demo(extra: list[str], threads: int) -> float:
    """One demo in a fresh home, in a new process (imports and all)."""
    home = Path(tempfile.mkdtemp(prefix="rpo-bench-demo-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    env = {**os.environ, "RPO_BENCH_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if threads:
            env[name] = str(threads)
        else:  # torch's default, one thread per core: what a user typing the command gets
            env.pop(name, None)
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "rpo_bench", "demo", *extra, "--out", str(home / "demo")],
                               env=env, text=True, capture_output=True)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"rpo-bench demo {' '.join(extra)} failed ({completed.returncode}):\n"
                         f"{completed.stderr[-2000:]}")
    table = [line for line in completed.stdout.splitlines() if line.startswith("| ")][:6]
    print("\n".join(f"    {line}" for line in table))
    return seconds


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads of the demo process (0: torch's "
                        "default, one per core, as a user running the command gets)")
    parser.add_argument("--skip-default", action="store_true", help="time --quick only (the default takes ~10 "
                        "minutes)")
    add_common_options(parser)
    return parser


def main(args: argparse.Namespace) -> list[dict]:
    threads = args.threads or f"torch's default ({os.cpu_count()})"
    print(f"{threads} thread(s), cpus {os.cpu_count()}, each demo from a fresh home")
    rows = []
    for name, extra in (("--quick", ["--quick"]), ("default", [])):
        if name == "default" and args.skip_default:
            continue
        print(f"  rpo-bench demo {' '.join(extra)}")
        seconds = _demo(extra, args.threads)
        target = TARGETS[name]
        rows += [row(f"demo {name}: wall time, fresh home", seconds, "s"),
                 row(f"demo {name} / {target / 60:.0f} minutes ({seconds:.0f} s)", seconds / target, "ratio",
                     ratio=seconds / target, target="<= 1")]
    print_wall_time_rows(rows)
    return rows


if __name__ == "__main__":
    raise SystemExit(run_script(main, parser()))
