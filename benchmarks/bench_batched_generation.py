"""Images per second of batched generation against one prompt at a time, on tiny-sd15.

`generate_batches` runs a whole batch through one pipeline call so per-call costs (text encoding, scheduler
setup, Python overhead per step, VAE decode launch) are paid once per batch instead of once per image. This
prints the speed-up, measured side by side in one process with the two settings alternated over several
repetitions (a ratio of medians, not an absolute time, because the machine is shared and noisy).

With `--full-size` (the default with `--device cuda`) it also measures images/s of the real architectures with
random full-size weights under protocol spo-ddim20 (DDIM 20 steps, CFG 5): SD1.5 at 512 px and SDXL at 1024 px,
at batch 1 and a larger batch, in the device's dtype (fp16 on cuda). On a CPU `--arch-scale mini` runs the same
code on narrow copies of those architectures (how the tests exercise it).

    .venv/bin/python benchmarks/bench_batched_generation.py [--repeats 7] [--prompts 16] [--device cpu|cuda]
        [--full-size] [--full-repeats 2] [--arch-scale full|mini] [--json FILE]
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HOME = Path(tempfile.mkdtemp(prefix="rpo-bench-bench-"))
atexit.register(shutil.rmtree, HOME, ignore_errors=True)  # also when an import below fails
os.environ["RPO_BENCH_HOME"] = str(HOME)  # before importing rpo_bench: the tiny model is built in there
os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.common` when run as a file
from benchmarks.common import (  # noqa: E402
    ARCH_SCALES,
    add_common_options,
    build_on,
    dtype_for,
    parameters,
    positive,
    row,
    run_script,
    sd15_pipeline,
    sdxl_pipeline,
)
from rpo_bench.evaluation.generate import GenerationItem, generate_batches  # noqa: E402
from rpo_bench.evaluation.prompts import load_prompt_set  # noqa: E402
from rpo_bench.evaluation.protocols import PROTOCOLS  # noqa: E402
from rpo_bench.models.catalog import resolve_model  # noqa: E402
from rpo_bench.models.loader import load_pipeline  # noqa: E402

BATCH_SIZES = (8, 16)
TARGET = 2.0
# Full size: (family, builder, batch sizes, images per measurement); SDXL's 1024 px batch of 4 is already
# 4x SD1.5's pixels at batch 4, and a GPU is saturated well before either.
FULL_SIZE = (("sd15", sd15_pipeline, (1, 8), 16), ("sdxl", sdxl_pipeline, (1, 4), 8))


def images_per_second(pipe, protocol, family: str, items: list[GenerationItem], batch_size: int) -> float:
    start = time.perf_counter()
    # Each batch comes back as PIL images, which waits for the GPU: no extra synchronisation needed.
    count = sum(len(batch) for batch in generate_batches(pipe, protocol, family, items, batch_size))
    return count / (time.perf_counter() - start)


def items_for(count: int) -> list[GenerationItem]:
    prompts = load_prompt_set("smoke").prompts
    items = [GenerationItem(f"{p.index}-{seed}", p, seed) for seed in range(count) for p in prompts]
    return items[:count]


def alternate(pipe, protocol, family: str, items: list[GenerationItem], sizes: tuple[int, ...],
              repeats: int) -> dict[int, list[float]]:
    """images/s per batch size, after one warm-up call each, the sizes alternated within every round."""
    for size in sizes:  # warm-up: first calls pay one-off allocations, lazy initialisation, kernel selection
        images_per_second(pipe, protocol, family, items[:max(size, 2)], size)
    rates: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(repeats):
        for size in sizes:  # alternated, so slow phases of a shared machine hit every setting alike
            rates[size].append(images_per_second(pipe, protocol, family, items, size))
    return rates


def tiny_rows(args: argparse.Namespace) -> list[dict]:
    spec = resolve_model("tiny-sd15")
    protocol = PROTOCOLS.get("tiny")
    start = time.perf_counter()
    # builds the tiny model on first use; excluded from timings
    pipe = load_pipeline(spec, device=args.device, dtype=dtype_for(args.device))
    print(f"tiny-sd15 build + load (excluded): {time.perf_counter() - start:.2f} s")
    items = items_for(args.prompts)
    print(f"{len(items)} images, protocol {protocol.name} ({protocol.sampler}, {protocol.steps} steps, "
          f"{protocol.resolution[spec.family]} px), device {args.device}, torch threads {torch.get_num_threads()} "
          f"(default), cpus {os.cpu_count()}")
    sizes = (1, *BATCH_SIZES)
    rates = alternate(pipe, protocol, spec.family, items, sizes, args.repeats)
    medians = {size: statistics.median(values) for size, values in rates.items()}
    for size in sizes:
        print(f"batch_size={size:>2}: {medians[size]:7.2f} images/s median of {args.repeats}, best "
              f"{max(rates[size]):.2f} (all: {', '.join(f'{r:.2f}' for r in rates[size])})")
    rows = [row("generation tiny-sd15 64 px, batch 1", medians[1], "images/s", device=args.device)]
    for size in BATCH_SIZES:
        ratio = medians[size] / medians[1]
        paired = statistics.median(b / a for a, b in zip(rates[1], rates[size], strict=True))
        best = max(rates[size]) / max(rates[1])
        verdict = "ok" if ratio >= TARGET else "MISSED"
        print(f"batch {size}: batched / one-at-a-time images/s = {ratio:.2f} (target >= {TARGET})  {verdict}  "
              f"[median of paired ratios {paired:.2f}, best / best {best:.2f}]")
        rows.append(row(f"generation tiny-sd15: batch {size} / batch 1 images/s", ratio, "ratio", ratio,
                        f">= {TARGET}", batched_images_per_s=medians[size], one_images_per_s=medians[1],
                        paired=paired, best_over_best=best, repeats=args.repeats, images=len(items)))
    spread = max(max(values) / min(values) for values in rates.values())
    if spread > 2:  # contention stalls the threads' barriers; one-image batches suffer most (most barriers)
        print(f"note: up to {spread:.0f}x spread between repetitions: the machine was busy during the run; "
              "trust the ratios when they agree, or rerun with more --repeats")
    del pipe
    return rows


def full_size_rows(args: argparse.Namespace) -> list[dict]:
    """images/s of SD1.5 at 512 px and SDXL at 1024 px (mini scale: 64 px) with random weights."""
    protocol = PROTOCOLS.get("spo-ddim20")
    dtype = dtype_for(args.device)
    rows = []
    for family, builder, sizes, count in FULL_SIZE:
        start = time.perf_counter()
        pipe = build_on(args.device, dtype, lambda builder=builder: builder(args.arch_scale))
        pipe.set_progress_bar_config(disable=True)
        native = pipe.unet.config.sample_size * pipe.vae_scale_factor
        proto = protocol
        if args.arch_scale == "mini":  # the protocol's 512 / 1024 px on a mini model would only measure the VAE
            proto = dataclasses.replace(protocol, resolution={family: native})
        px = proto.resolution[family]
        print(f"{family} {args.arch_scale} architecture: UNet {parameters(pipe.unet) / 1e6:.0f}M parameters, "
              f"{str(dtype).removeprefix('torch.')}, built on {args.device} in {time.perf_counter() - start:.1f} s "
              f"(excluded); {count} images at {px} px, {proto.steps} DDIM steps, CFG {proto.guidance[family]}")
        rates = alternate(pipe, proto, family, items_for(count), sizes, args.full_repeats)
        medians = {size: statistics.median(values) for size, values in rates.items()}
        label = f"generation {family} {args.arch_scale} {px} px {str(dtype).removeprefix('torch.')}"
        for size in sizes:
            print(f"  {label}, batch {size}: {medians[size]:.3f} images/s (median of {args.full_repeats})")
            rows.append(row(f"{label}, batch {size}", medians[size], "images/s", device=args.device,
                            unet_parameters=parameters(pipe.unet), steps=proto.steps, repeats=args.full_repeats))
        ratio = medians[sizes[-1]] / medians[sizes[0]]
        rows.append(row(f"{label}: batch {sizes[-1]} / batch 1 images/s", ratio, "ratio"))
        del pipe
        if args.device == "cuda":
            torch.cuda.empty_cache()  # the next architecture needs the memory
    return rows


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="alternating repetitions (median reported)")
    parser.add_argument("--prompts", type=int, default=16, help="images per measurement (smoke x seeds)")
    parser.add_argument("--full-size", action=argparse.BooleanOptionalAction, default=None,
                        help="also measure SD1.5 512 px and SDXL 1024 px (default: on with --device cuda)")
    parser.add_argument("--full-repeats", type=int, default=2, help="alternating repetitions at full size")
    parser.add_argument("--arch-scale", choices=ARCH_SCALES, default="full",
                        help="mini: narrow copies of the full-size architectures (a fast check of the code path)")
    add_common_options(parser)
    return parser


def main(args: argparse.Namespace) -> list[dict]:
    args.repeats, args.prompts = positive("--repeats", args.repeats), positive("--prompts", args.prompts)
    args.full_repeats = positive("--full-repeats", args.full_repeats)
    rows = tiny_rows(args)
    if args.full_size or (args.full_size is None and args.device == "cuda"):
        rows += full_size_rows(args)
    return rows


if __name__ == "__main__":
    try:
        raise SystemExit(run_script(main, parser()))
    finally:
        shutil.rmtree(HOME, ignore_errors=True)
