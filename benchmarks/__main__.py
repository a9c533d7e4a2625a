"""Run every benchmark, print one table of measured ratios against their targets, save the results as JSON.

    python -m benchmarks [--device cpu|cuda] [--only NAME,...] [--list] [--quick] [--budget SECONDS]
                         [--results-dir DIR]

Each benchmark runs as its own subprocess (`benchmarks/bench_*.py --device D --json FILE ...`): a fresh
process per benchmark keeps one benchmark's memory, thread settings and temporary home out of the next one's
measurements, and a timeout can stop it (and its children) without losing what the others measured. Results go to
`<results-dir>/<device>[-quick]-<UTC timestamp>.json` and the same content to `<device>[-quick]-latest.json`,
with a description of the machine. Missed targets are reported, not failures: the exit code is 0 when every
benchmark ran, 1 when one crashed or timed out, 2 on bad options.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from benchmarks.common import write_json_atomically

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    measures: str
    targets: str
    # Options per profile ("cpu", "cpu-quick", "cuda", "cuda-quick"), sized so that the default CPU run takes
    # about 10 minutes on 2 shared cores, the quick one about 2, and the CUDA one under 8 on one large GPU.
    options: dict[str, list[str]] = field(default_factory=dict)
    timeout_s: dict[str, int] = field(default_factory=dict)


BENCHMARKS = (
    Benchmark("evaluate-cache", "bench_evaluate_cache.py",
              "evaluate() re-run with everything cached vs the first run", "warm / cold <= 0.05",
              {"cpu": ["--repeats", "5"], "cpu-quick": ["--repeats", "2"],
               "cuda": ["--repeats", "3"], "cuda-quick": ["--repeats", "2"]},
              {"cpu": 600, "cpu-quick": 240, "cuda": 120, "cuda-quick": 90}),
    Benchmark("batched-generation", "bench_batched_generation.py",
              "generate_batches images/s, batched vs one at a time; on cuda SD1.5 512 px and SDXL 1024 px fp16",
              "batched / one-at-a-time >= 2 (tiny-sd15)",
              {"cpu": ["--repeats", "5"], "cpu-quick": ["--repeats", "2", "--prompts", "8"],
               "cuda": ["--repeats", "3", "--full-repeats", "2"],
               "cuda-quick": ["--repeats", "2", "--full-repeats", "1"]},
              {"cpu": 600, "cpu-quick": 240, "cuda": 210, "cuda-quick": 150}),
    Benchmark("train-step", "bench_train_step.py",
              "RPO vs DPO step time; LoRA vs full DPO peak memory (SD1.5 architecture)",
              "RPO / DPO <= 1.05, LoRA / full <= 0.6",
              {"cpu": ["--repeats", "3", "--tiny-steps", "10"],
               "cpu-quick": ["--repeats", "2", "--tiny-steps", "3", "--skip-sd15-arch"],
               "cuda": ["--repeats", "5", "--tiny-steps", "4", "--threads", "0"],
               "cuda-quick": ["--repeats", "2", "--tiny-steps", "2", "--threads", "0"]},
              {"cpu": 1200, "cpu-quick": 300, "cuda": 240, "cuda-quick": 180}),
    Benchmark("methods", "bench_methods.py",
              "E11's methods and options: step time against the method each answers (kto, mapo, winner_preserving, "
              "ema), tiny-sd15 LoRA and full, micro-base full, SD1.5 architecture LoRA",
              "kto / dpo, winner_preserving / base, ema / without <= 1.05; mapo / dpo <= 0.7",
              {"cpu": ["--rounds", "20", "--arch-rounds", "5"],
               "cpu-quick": ["--rounds", "3", "--skip-sd15-arch"],
               "cuda": ["--rounds", "20", "--arch-rounds", "10", "--threads", "0"],
               "cuda-quick": ["--rounds", "5", "--arch-rounds", "3", "--threads", "0"]},
              {"cpu": 1500, "cpu-quick": 300, "cuda": 300, "cuda-quick": 180}),
    Benchmark("scorers", "bench_scorers.py",
              "preference scorers: images/s, wrapper vs raw forward at full size",
              "wrapper / raw forward <= 1.2 (full size)",
              {"cpu": ["--repeats", "6"], "cpu-quick": ["--repeats", "2", "--skip-full"],
               "cuda": ["--repeats", "3", "--threads", "0"], "cuda-quick": ["--repeats", "2", "--threads", "0"]},
              {"cpu": 900, "cpu-quick": 240, "cuda": 180, "cuda-quick": 120}),
    Benchmark("micro", "bench_micro.py",
              "micro-base: `micro preferences` images/s and pairs/s; SFT/DPO/RPO steps/s at M = 16; RPO vs DPO "
              "step time at M = 8 and 32", "RPO / DPO <= 1.05 (M = 8 and 32)",
              {"cpu": ["--prompts", "24", "--train-steps", "20", "--rounds", "30"],
               "cpu-quick": ["--prompts", "8", "--train-steps", "6", "--rounds", "10"],
               "cuda": ["--prompts", "24", "--train-steps", "20", "--rounds", "30", "--threads", "0"],
               "cuda-quick": ["--prompts", "8", "--train-steps", "6", "--rounds", "10", "--threads", "0"]},
              {"cpu": 480, "cpu-quick": 180, "cuda": 180, "cuda-quick": 120}),
    Benchmark("micro-world", "bench_micro_world.py",
              "world v2 vs v1: UNet training step time and sampling img/s side by side; build time per stage; "
              "`micro check --n 64` wall time", "micro check / 5 minutes <= 1",
              {"cpu": ["--rounds", "5"], "cpu-quick": ["--rounds", "2", "--batch", "32", "--skip-check"],
               "cuda": ["--rounds", "5", "--threads", "0"], "cuda-quick": ["--rounds", "2", "--skip-check"]},
              {"cpu": 900, "cpu-quick": 240, "cuda": 600, "cuda-quick": 180}),
    Benchmark("train-pool", "bench_train_pool.py",
              "`micro compare` training of 4 runs one at a time (one thread) vs two at a time (--jobs 2)",
              "two at a time / one at a time <= 0.6",
              {"cpu": ["--steps", "60", "--repeats", "2"], "cpu-quick": ["--steps", "15", "--repeats", "1"],
               "cuda": ["--steps", "60", "--repeats", "2"], "cuda-quick": ["--steps", "15", "--repeats", "1"]},
              {"cpu": 900, "cpu-quick": 300, "cuda": 600, "cuda-quick": 240}),
    Benchmark("style", "bench_style.py",
              "`train --style micro-sketch` + `evaluate --style micro-sketch` wall time, default budget, fresh home; "
              "style probe fit time", "train + evaluate / 10 minutes <= 1",
              {"cpu": [], "cpu-quick": ["--steps", "40"], "cuda": ["--threads", "0"],
               "cuda-quick": ["--threads", "0", "--steps", "40"]},
              {"cpu": 900, "cpu-quick": 300, "cuda": 300, "cuda-quick": 180}),
    Benchmark("demo", "bench_demo.py",
              "`rpo-bench demo --quick` and `rpo-bench demo` wall time, each from a fresh home",
              "--quick / 3 minutes <= 1, default / 10 minutes <= 1",
              {"cpu": [], "cpu-quick": ["--skip-default"], "cuda": [], "cuda-quick": ["--skip-default"]},
              {"cpu": 1200, "cpu-quick": 400, "cuda": 900, "cuda-quick": 300}),
    # The report runs on the CPU whatever --device says (SQLite, bootstraps, formatting): the profiles only set
    # how often each time is repeated.
    Benchmark("report", "bench_report.py",
              "`rpo-bench report` on a 100,000-score store: markdown and HTML time; JSON / CSV export time",
              "markdown <= 5 s, HTML <= 30 s",
              {"cpu": ["--repeats", "3"], "cpu-quick": ["--repeats", "1"], "cuda": ["--repeats", "3"],
               "cuda-quick": ["--repeats", "1"]},
              {"cpu": 300, "cpu-quick": 180, "cuda": 300, "cuda-quick": 180}),
    # The evaluate half checks out the code before E9 (--before, default c1f45d9) into its temporary home; at full
    # size its two cold runs (10,000 micro-base images each) are most of the time.
    Benchmark("integrity", "bench_integrity.py",
              "E9's cost: warm re-run of evaluate over 10,000 cached images before vs after; atomic checkpoint "
              "and text writes vs plain writes", "warm after / before <= 1.5, warm / cold <= 0.05",
              {"cpu": [], "cpu-quick": ["--prompts", "100", "--seeds", "5", "--repeats", "3", "--save-repeats", "5",
                                        "--text-repeats", "30"],
               "cuda": ["--threads", "0"],
               "cuda-quick": ["--threads", "0", "--prompts", "100", "--seeds", "5", "--repeats", "3",
                              "--save-repeats", "5", "--text-repeats", "30"]},
              {"cpu": 2400, "cpu-quick": 300, "cuda": 900, "cuda-quick": 300}),
    # E10's cost: the code before the package layout (--before, default E9's last commit) in a temporary worktree.
    Benchmark("startup", "bench_startup.py",
              "`rpo-bench --help`, `rpo-bench evaluate --help` wall time and `import rpo_bench` import time, before "
              "vs after E10's package layout", "help after / before <= 1.1",
              {"cpu": ["--repeats", "10"], "cpu-quick": ["--repeats", "3"], "cuda": ["--repeats", "10"],
               "cuda-quick": ["--repeats", "3"]},
              {"cpu": 300, "cpu-quick": 120, "cuda": 300, "cuda-quick": 120}),
)
BY_NAME = {b.name: b for b in BENCHMARKS}


class BadOption(Exception):
    """A bad command-line value: one `error:` line, exit code 2 (no rpo_bench import needed for that)."""


# -- options --------------------------------------------------------------------------------------------------
def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: fp16, full-size architectures")
    parser.add_argument("--only", default="", help="comma-separated benchmark names (see --list)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (~2 min on a CPU)")
    parser.add_argument("--budget", type=float, default=0,
                        help="total seconds for the whole run: each benchmark's timeout is cut to what is left")
    parser.add_argument("--results-dir", default=str(HERE / "results"), help="where the JSON results go")
    args = parser.parse_args(argv)
    if args.device not in DEVICES:
        raise BadOption(f"--device {args.device!r} is not a benchmark device; accepted: {', '.join(DEVICES)}")
    if args.budget < 0:
        raise BadOption(f"--budget {args.budget:g}: must be a number of seconds > 0 (0 or absent: no budget)")
    args.selected = select(args.only)
    return args


def select(only: str) -> list[Benchmark]:
    names = [name.strip().replace("_", "-") for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise BadOption(f"--only {only!r}: unknown benchmark {', '.join(unknown)}; accepted: {', '.join(BY_NAME)}")
    return [BY_NAME[name] for name in names] if names else list(BENCHMARKS)


def check_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise BadOption("--device cuda: no CUDA GPU is visible to torch here; accepted on this machine: cpu")


def check_results_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadOption(f"--results-dir {path}: cannot create it ({exc.strerror}); give a writable folder") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise BadOption(f"--results-dir {path}: not writable; give a writable folder")


# -- machine description ---------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _versions() -> dict[str, str | None]:
    found = {}
    for name in ("rpo-bench", "torch", "diffusers", "transformers", "accelerate", "peft", "open_clip_torch",
                 "numpy", "pillow"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _gpu() -> dict | None:
    """nvidia-smi first: asking torch for the properties would open a CUDA context in this parent process,
    which holds GPU memory for the whole run (torch is the fallback, on machines without nvidia-smi)."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                               "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        done = None
    if done is not None and done.returncode == 0 and done.stdout.strip():
        gpus = [[part.strip() for part in line.split(",")] for line in done.stdout.strip().splitlines()]
        name, memory_mib, driver = gpus[0]
        return {"name": name, "memory_gib": round(float(memory_mib) / 1024, 1), "count": len(gpus),
                "driver": driver, "cuda": _torch_cuda_version()}
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "memory_gib": round(props.total_memory / 1024**3, 1),
            "count": torch.cuda.device_count(), "cuda": torch.version.cuda}


def _torch_cuda_version() -> str | None:
    import torch

    return torch.version.cuda


def machine(device: str) -> dict:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    status = _git("status", "--porcelain")
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "usable_cores": affinity, "memory_gib": _memory_gib(),
            "gpu": _gpu() if device == "cuda" else None, "platform": platform.platform(),
            "python": platform.python_version(), "versions": _versions(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(status) if status is not None else None}


# -- running ------------------------------------------------------------------------------------------------------
def _kill_group(child: subprocess.Popen) -> None:
    """SIGKILL the benchmark and its children, and wait until none is left: a grandchild still dying could
    otherwise write into the temporary folder while it is being removed, and leave it behind."""
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(child.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def run_one(bench: Benchmark, device: str, profile: str, timeout: float) -> dict:
    """Run one benchmark script in its own process group; its output streams to this terminal."""
    with tempfile.TemporaryDirectory(prefix="rpo-bench-rows-") as tmp:
        rows_file = Path(tmp) / "rows.json"
        command = [sys.executable, str(HERE / bench.script), "--device", device, "--json", str(rows_file),
                   *bench.options[profile]]
        print(f"\n=== {bench.name}: {' '.join(command[1:])} (timeout {timeout:.0f} s)", flush=True)
        started = time.perf_counter()
        # A session of its own, so a timeout stops the benchmark's children (memory probes) as well.
        # TMPDIR inside our temporary folder: a benchmark killed by its timeout cannot clean its temporary home,
        # and this `with` block removes it then.
        child = subprocess.Popen(command, cwd=ROOT, start_new_session=True, env={**os.environ, "TMPDIR": tmp})
        try:
            code = child.wait(timeout=timeout)
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            _kill_group(child)
            status = f"timed out after {timeout:.0f} s"
        except KeyboardInterrupt:
            _kill_group(child)
            raise
        seconds = time.perf_counter() - started
        rows = json.loads(rows_file.read_text()) if status == "ok" and rows_file.is_file() else []
    if status == "ok" and not rows:
        status = "failed (no results written)"
    # The command as a person would rerun it alone (without the temporary --json file).
    alone = ["python", f"benchmarks/{bench.script}", "--device", device, *bench.options[profile]]
    return {"status": status, "seconds": round(seconds, 1), "command": " ".join(alone), "measures": bench.measures,
            "targets": bench.targets, "rows": rows}


def run_all(args: argparse.Namespace, report: dict, save: Callable[[dict], None]) -> None:
    """Fills report["benchmarks"], saving after each one: an interrupted run keeps what it measured."""
    deadline = time.monotonic() + args.budget if args.budget else None
    results = report["benchmarks"]
    profile = report["profile"]
    for bench in args.selected:
        timeout = float(bench.timeout_s[profile])
        if deadline is not None:
            left = deadline - time.monotonic()
            if left < 10:  # not enough left to start a process, let alone measure
                results[bench.name] = {"status": "skipped: --budget spent", "seconds": 0, "rows": [],
                                       "measures": bench.measures, "targets": bench.targets}
                continue
            timeout = min(timeout, left)
        results[bench.name] = run_one(bench, args.device, profile, timeout)
        results[bench.name]["measured_by"] = {"date": report["date"], "command": report["command"]}
        save(report)


# -- report ---------------------------------------------------------------------------------------------------------
def _measured(r: dict) -> str:
    value = r["ratio"] if r["ratio"] is not None else r["value"]
    if value is None:  # a measurement that could not be made (the row's `what` says why)
        return "-"
    return f"{value:.3f}" if r["unit"] == "ratio" else f"{value:.3g} {r['unit']}"


def table_rows(report: dict) -> list[tuple[str, str, str, str]]:
    lines = []
    for name, result in report["benchmarks"].items():
        if result["status"] != "ok":
            lines.append((f"{name}: {result['status']}", "-", result["targets"], "error"))
        for r in result["rows"]:
            verdict = "-" if r["holds"] is None else ("yes" if r["holds"] else "no")
            lines.append((r["what"], _measured(r), r["target"] or "-", verdict))
    return lines


def print_table(report: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column, justify in (("what", "left"), ("measured", "right"), ("target", "left"), ("holds", "center")):
        table.add_column(column, justify=justify)
    styles = {"yes": "green", "no": "bold red", "error": "bold red"}
    for what, measured, target, verdict in table_rows(report):
        table.add_row(what, measured, target, f"[{styles[verdict]}]{verdict}[/]" if verdict in styles else verdict)
    Console(width=max(shutil.get_terminal_size((140, 20)).columns, 140)).print(table)


def results_paths(results_dir: Path, profile: str, stamp: str) -> tuple[Path, Path]:
    return results_dir / f"{profile}-{stamp}.json", results_dir / f"{profile}-latest.json"


def latest_results(previous: dict | None, report: dict) -> dict:
    """What `<profile>-latest.json` holds after a finished run: this run's report, plus every benchmark it did not
    measure (not selected by --only, or skipped for --budget) from the previous latest file, when that file
    describes the same machine. So `--only X` updates X's numbers without dropping the others; `measured_by` on
    each benchmark says which run its numbers come from."""
    same_machine = (previous is not None and previous.get("profile") == report["profile"]
                    and previous.get("machine", {}).get("cpu") == report["machine"]["cpu"]
                    and previous.get("machine", {}).get("gpu") == report["machine"]["gpu"])
    if not same_machine:
        return report
    kept = {}
    for name, result in previous.get("benchmarks", {}).items():
        mine = report["benchmarks"].get(name)
        if mine is None or mine["status"].startswith("skipped"):
            kept[name] = {**result, "measured_by": result.get("measured_by") or
                          {"date": previous.get("date"), "command": previous.get("command")}}
    merged = {**report["benchmarks"], **kept}
    order = [b.name for b in BENCHMARKS] + sorted(set(merged) - set(BY_NAME))
    return {**report, "benchmarks": {name: merged[name] for name in order if name in merged}}


def _read_latest(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent or unreadable: this run's report replaces it
        return None


def list_benchmarks() -> None:
    for bench in BENCHMARKS:
        print(f"{bench.name:20s} {bench.measures}\n{'':20s} target: {bench.targets}")


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
        if args.list:
            list_benchmarks()
            return 0
        if args.device == "cuda":
            check_cuda()
        check_results_dir(Path(args.results_dir))  # before running: a result that cannot be saved is lost
    except BadOption as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    now = datetime.datetime.now(datetime.timezone.utc)
    started = time.perf_counter()
    command = " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)])
    profile = args.device + ("-quick" if args.quick else "")
    report = {"date": now.isoformat(timespec="seconds"), "command": command, "device": args.device,
              "profile": profile, "complete": False, "machine": machine(args.device), "benchmarks": {}}
    stamped, latest = results_paths(Path(args.results_dir), profile, now.strftime("%Y%m%dT%H%M%SZ"))

    def save(partial: dict) -> None:
        partial["seconds"] = round(time.perf_counter() - started, 1)
        write_json_atomically(stamped, partial)

    run_all(args, report, save)
    report["complete"] = True
    save(report)
    write_json_atomically(latest, latest_results(_read_latest(latest), report))  # only a finished run updates it
    print()
    print_table(report, f"rpo-bench benchmarks, {profile}, {report['seconds']:.0f} s")
    print(f"results: {stamped} (and {latest})")
    return 0 if all(b["status"] == "ok" for b in report["benchmarks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
