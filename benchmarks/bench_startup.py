"""How fast `rpo-bench` starts: `rpo-bench --help`, `rpo-bench evaluate --help` and `import rpo_bench`, for the code
of this checkout ("after") against an earlier commit ("before", `--before REF`, default the last commit before E10's
package layout), side by side in one run.

The before-code is checked out with `git worktree add --detach` into a temporary folder; each measurement runs a
fresh `python` with PYTHONPATH at one tree or the other, alternating before / after so that a slow phase of the
shared machine hits both. Reported: the median wall time of each command over `--repeats` runs, and the total
import time of `rpo_bench` from `python -X importtime` (its cumulative microseconds), as after / before ratios.
Target: after / before <= 1.1 for the help commands (E10: start-up as fast as before or faster).

    .venv/bin/python benchmarks/bench_startup.py [--before REF] [--repeats 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `benchmarks.common` when run as a file
from benchmarks.common import add_common_options, checkout_before, positive, row, run_script  # noqa: E402

TARGET = "<= 1.1"
COMMANDS = {"rpo-bench --help": ["-m", "rpo_bench", "--help"],
            "rpo-bench evaluate --help": ["-m", "rpo_bench", "evaluate", "--help"]}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="c64fbd3", help="the commit to compare with (default: E9's last)")
    parser.add_argument("--repeats", type=int, default=10, help="runs of each command per version (medians)")
    add_common_options(parser)
    return parser


def _environment(tree: Path, home: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "RPO_BENCH_HOME": str(home), "HF_HUB_OFFLINE": "1",
            "COLUMNS": "100"}


def wall_time(tree: Path, home: Path, argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *argv], env=_environment(tree, home), cwd=tree, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def import_microseconds(tree: Path, home: Path) -> int:
    """The cumulative import time of `rpo_bench` (python -X importtime's line for the package itself)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import rpo_bench"],
                          env=_environment(tree, home), cwd=tree, check=True, capture_output=True, text=True)
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| rpo_bench$", line)
        if match:
            return int(match.group(1))
    raise RuntimeError("python -X importtime printed no line for rpo_bench")


def main(args: argparse.Namespace) -> list[dict]:
    repeats = positive("--repeats", args.repeats)
    with tempfile.TemporaryDirectory(prefix="rpo-bench-startup-") as scratch:
        home = Path(scratch) / "home"
        home.mkdir()
        before, why, remove = checkout_before(args.before, Path(scratch) / "before")
        trees = {"after": ROOT} | ({"before": before} if before is not None else {})
        if before is None:
            print(f"note: nothing to compare with ({why}); measuring this checkout only")
        else:
            print(f"before: {args.before} ({why[:12]}); after: this checkout")
        times: dict[tuple[str, str], list[float]] = {}
        imports: dict[str, list[int]] = {name: [] for name in trees}
        for tree in trees.values():  # warm the file cache and byte-compile both trees before timing
            for argv in COMMANDS.values():
                wall_time(tree, home, argv)
        for i in range(repeats):
            order = list(trees) if i % 2 == 0 else list(reversed(trees))
            for name in order:
                for label, argv in COMMANDS.items():
                    times.setdefault((label, name), []).append(wall_time(trees[name], home, argv))
                imports[name].append(import_microseconds(trees[name], home))
        remove()
    rows = []
    for label in COMMANDS:
        after = statistics.median(times[(label, "after")])
        rows.append(row(f"{label}: wall time, after (median of {repeats})", after, "s"))
        if before is not None:
            previous = statistics.median(times[(label, "before")])
            rows.append(row(f"{label}: wall time, before", previous, "s"))
            rows.append(row(f"{label}: after / before", after / previous, "ratio", ratio=after / previous,
                            target=TARGET))
    after_import = statistics.median(imports["after"]) / 1e3
    rows.append(row("import rpo_bench (python -X importtime, cumulative), after", after_import, "ms"))
    if before is not None:
        before_import = statistics.median(imports["before"]) / 1e3
        rows.append(row("import rpo_bench, before", before_import, "ms"))
        rows.append(row("import rpo_bench: after / before", after_import / before_import, "ratio"))
    for r in rows:
        verdict = "" if r["target"] is None else f" (target {r['target']}: {'holds' if r['holds'] else 'MISSED'})"
        print(f"  {r['what']}: {r['value']:.3f} {'' if r['unit'] == 'ratio' else r['unit']}{verdict}")
    return rows


if __name__ == "__main__":
    raise SystemExit(run_script(main, parser()))
