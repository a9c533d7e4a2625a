"""Images per second of batched generation against one prompt at a time, on tiny-sd15.

`generate_batches` runs a whole batch through one pipeline call so per-call costs (text encoding, scheduler
setup, Python overhead per step, VAE decode launch) are paid once per batch instead of once per image. This
prints the speed-up, measured side by side in one process with the two settings alternated over several
repetitions (a ratio of medians, not an absolute time, because the machine is shared and noisy).

    .venv/bin/python benchmarks/bench_batched_generation.py [--repeats 7] [--prompts 16]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

HOME = Path(tempfile.mkdtemp(prefix="rpo-bench-bench-"))
os.environ["RPO_BENCH_HOME"] = str(HOME)  # before importing rpo_bench: the tiny model is built in there
os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402

from rpo_bench.generate import GenerationItem, generate_batches  # noqa: E402
from rpo_bench.models.catalog import resolve_model  # noqa: E402
from rpo_bench.models.loader import load_pipeline  # noqa: E402
from rpo_bench.prompts import load_prompt_set  # noqa: E402
from rpo_bench.protocols import PROTOCOLS  # noqa: E402

BATCH_SIZES = (8, 16)
TARGET = 2.0


def images_per_second(pipe, protocol, family: str, items: list[GenerationItem], batch_size: int) -> float:
    start = time.perf_counter()
    count = sum(len(batch) for batch in generate_batches(pipe, protocol, family, items, batch_size))
    return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="alternating repetitions (median reported)")
    parser.add_argument("--prompts", type=int, default=16, help="images per measurement (smoke x seeds)")
    args = parser.parse_args()
    args.repeats = max(args.repeats, 1)

    spec = resolve_model("tiny-sd15")
    protocol = PROTOCOLS.get("tiny")
    start = time.perf_counter()
    pipe = load_pipeline(spec, device="cpu")  # builds the tiny model on first use; excluded from timings
    print(f"tiny-sd15 build + load (excluded): {time.perf_counter() - start:.2f} s")
    prompts = load_prompt_set("smoke").prompts
    items = [GenerationItem(f"{p.index}-{seed}", p, seed) for seed in range(args.prompts) for p in prompts]
    items = items[:args.prompts]
    print(f"{len(items)} images, protocol {protocol.name} ({protocol.sampler}, {protocol.steps} steps, "
          f"{protocol.resolution[spec.family]} px), torch threads {torch.get_num_threads()} (default), "
          f"cpus {os.cpu_count()}")

    sizes = (1, *BATCH_SIZES)
    for size in sizes:  # warm-up: first calls pay one-off allocations and lazy initialisation
        images_per_second(pipe, protocol, spec.family, items[:max(size, 2)], size)
    rates: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(args.repeats):
        for size in sizes:  # alternated, so slow phases of a shared machine hit every setting alike
            rates[size].append(images_per_second(pipe, protocol, spec.family, items, size))

    medians = {size: statistics.median(values) for size, values in rates.items()}
    for size in sizes:
        print(f"batch_size={size:>2}: {medians[size]:7.2f} images/s median of {args.repeats}, best "
              f"{max(rates[size]):.2f} (all: {', '.join(f'{r:.2f}' for r in rates[size])})")
    for size in BATCH_SIZES:
        ratio = medians[size] / medians[1]
        paired = statistics.median(b / a for a, b in zip(rates[1], rates[size], strict=True))
        best = max(rates[size]) / max(rates[1])
        verdict = "ok" if ratio >= TARGET else "MISSED"
        print(f"batch {size}: batched / one-at-a-time images/s = {ratio:.2f} (target >= {TARGET})  {verdict}  "
              f"[median of paired ratios {paired:.2f}, best / best {best:.2f}]")
    spread = max(max(values) / min(values) for values in rates.values())
    if spread > 2:  # contention stalls the threads' barriers; one-image batches suffer most (most barriers)
        print(f"note: up to {spread:.0f}x spread between repetitions: the machine was busy during the run; "
              "trust the ratios when they agree, or rerun with more --repeats")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    finally:
        shutil.rmtree(HOME, ignore_errors=True)
