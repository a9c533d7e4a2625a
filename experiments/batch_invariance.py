"""How far an image moves with the batch it was generated in: per-pixel differences against batch size 1.

Every image is generated at batch size 1 (the reference) and again inside batches of each other size, at each
torch thread count, from the same seed; the 8-bit differences are pooled per model and thread count. A last row
per model compares batch 1 at each thread count against batch 1 at the first one (threads move bytes too).

With `--cost` it measures instead what batch invariance by construction would cost: every network called once
per image inside the batch (the text encoders per prompt, the UNet per image's CFG pair, the VAE per latent),
so each image always meets the same tensor shapes; it prints the largest difference to batch 1 that leaves
and images/s against today's whole-batch calls, alternated side by side.
Tests and the CPU demo use tiny-sd15 and tiny-sdxl under protocol `tiny`; the micro world uses micro-base
under `micro` on its held-out prompts.

    python experiments/batch_invariance.py [--models tiny-sd15,tiny-sdxl,micro-base] [--threads 1,2]
        [--batch-sizes 1-16] [--images 16]
    python experiments/batch_invariance.py --cost [--models ...] [--batch-sizes 1,16] [--images 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rpo_bench.evaluation.generate import GenerationItem, generate_batches  # noqa: E402
from rpo_bench.evaluation.prompts import load_prompt_set  # noqa: E402
from rpo_bench.evaluation.protocols import PROTOCOLS  # noqa: E402
from rpo_bench.models.catalog import resolve_model  # noqa: E402
from rpo_bench.models.loader import load_pipeline  # noqa: E402

PROMPTS = {"micro-base": "micro-test"}  # the micro world's held-out prompts; the tiny models: the tests' smoke set


@dataclass
class Differences:
    """Per-pixel |difference| counts (index = 8-bit levels) and each compared image's largest difference."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))
    image_max: list[int] = field(default_factory=list)
    image_share_two: list[float] = field(default_factory=list)  # each image's share of values >= 2 levels off
    worst: tuple[int, int | str] = (0, "-")  # (largest difference, where it was seen)

    def add(self, a: np.ndarray, b: np.ndarray, where: int | str) -> None:
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        self.counts += np.bincount(diff.ravel(), minlength=256)
        self.image_max.append(int(diff.max()))
        self.image_share_two.append(float((diff >= 2).mean()))
        if diff.max() > self.worst[0]:
            self.worst = (int(diff.max()), where)

    def quantile(self, q: float) -> int:
        return int(np.searchsorted(np.cumsum(self.counts), q * self.counts.sum()))

    def row(self, label: str) -> str:
        total = self.counts.sum()
        over_two = sum(m > 2 for m in self.image_max)
        return (f"| {label} | {len(self.image_max)} | {total:,} | {100 * self.counts[0] / total:.2f} | "
                f"{100 * self.counts[1] / total:.2f} | {self.counts[2]} | {self.counts[3:].sum()} | "
                f"{self.mean():.4f} | {self.quantile(0.999)} | {self.worst[0]} (at {self.worst[1]}) | {over_two} | "
                f"{100 * max(self.image_share_two):.3f} |")

    def mean(self) -> float:
        return float((self.counts * np.arange(256)).sum() / self.counts.sum())


def parse_sizes(text: str) -> list[int]:
    if "-" in text:
        low, high = (int(part) for part in text.split("-"))
        return list(range(low, high + 1))
    return [int(part) for part in text.split(",")]


def generate(pipe, protocol, family: str, items: list[GenerationItem], batch_size: int) -> dict[str, np.ndarray]:
    out = {}
    for batch in generate_batches(pipe, protocol, family, items, batch_size):
        out.update({item.key: np.asarray(image) for item, image in batch})
    return out


def _setup(name: str, count: int):
    """The model's spec, its own protocol, `count` items over its prompts (seeds from 100) and its pipeline."""
    spec = resolve_model(name)
    protocol = PROTOCOLS.get(spec.protocol)
    prompts = load_prompt_set(PROMPTS.get(name, "smoke")).prompts
    items = [GenerationItem(f"k{i}", prompts[i % len(prompts)], seed=100 + i) for i in range(count)]
    pipe = load_pipeline(spec)
    pipe.set_progress_bar_config(disable=True)
    return spec, protocol, items, pipe


def measure(name: str, threads: list[int], sizes: list[int], count: int) -> list[str]:
    spec, protocol, items, pipe = _setup(name, count)
    rows, first_reference = [], None
    across_threads = Differences()
    for thread_count in threads:
        torch.set_num_threads(thread_count)
        reference = generate(pipe, protocol, spec.family, items, 1)
        if first_reference is None:
            first_reference = reference
        else:
            for key, image in reference.items():
                across_threads.add(first_reference[key], image, f"{thread_count} threads")
        differences = Differences()
        for size in sizes:
            if size == 1:
                continue
            batched = generate(pipe, protocol, spec.family, items, size)
            for key, image in reference.items():
                differences.add(image, batched[key], f"batch {size}")
        rows.append(differences.row(f"{name}, {thread_count} thread{'s' * (thread_count > 1)}, batch "
                                    f"{sizes[0]}-{sizes[-1]} vs 1"))
    if across_threads.image_max:
        rows.append(across_threads.row(f"{name}, batch 1, {threads[0]} vs {'/'.join(map(str, threads[1:]))} threads"))
    return rows


def _rows(value, index: torch.Tensor, n: int):
    if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == n:
        return value[index]
    if isinstance(value, dict):
        return {key: _rows(item, index, n) for key, item in value.items()}
    return value


def _concatenated(parts: list):
    first = parts[0]
    if torch.is_tensor(first):
        return torch.cat(parts)
    if isinstance(first, tuple | list):
        return type(first)(_concatenated(list(group)) for group in zip(*parts, strict=True))
    if isinstance(first, dict):  # transformers' and diffusers' ModelOutput are dicts
        return type(first)(**{key: _concatenated([part[key] for part in parts]) for key in first})
    return first


def _split_forward(module, groups_of):
    """Make `module` run its rows group by group (a fixed shape per image) and concatenate the outputs."""
    forward = module.forward

    def split(first, *args, **kwargs):
        n = first.shape[0]
        parts = []
        for group in groups_of(n):
            index = torch.tensor(group)
            parts.append(forward(first[index], *_rows(list(args), index, n), **_rows(kwargs, index, n)))
        inverse = torch.argsort(torch.tensor([row for group in groups_of(n) for row in group]))
        return _reordered(_concatenated(parts), inverse)

    module.forward = split


def _reordered(value, inverse: torch.Tensor):
    if torch.is_tensor(value):
        return value[inverse] if value.dim() > 0 and value.shape[0] == len(inverse) else value
    if isinstance(value, tuple | list):
        return type(value)(_reordered(item, inverse) for item in value)
    if isinstance(value, dict):
        return type(value)(**{key: _reordered(item, inverse) for key, item in value.items()})
    return value


@contextlib.contextmanager
def per_image_calls(pipe, guided: bool):
    """Text encoders per prompt, the UNet per image (its uncond and cond rows together), the VAE per latent."""
    singles = lambda n: [[row] for row in range(n)]  # noqa: E731
    pairs = lambda n: [[row, n // 2 + row] for row in range(n // 2)]  # noqa: E731  diffusers: [uncond..., cond...]
    encoders = [m for m in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if m is not None]
    for encoder in encoders:
        _split_forward(encoder, singles)
    _split_forward(pipe.unet, pairs if guided else singles)
    pipe.vae.enable_slicing()
    try:
        yield
    finally:
        for module in (*encoders, pipe.unet):
            del module.forward  # the class's forward again
        pipe.vae.disable_slicing()


def images_per_second(pipe, protocol, family: str, items: list[GenerationItem], batch_size: int) -> float:
    started = time.perf_counter()
    generate(pipe, protocol, family, items, batch_size)
    return len(items) / (time.perf_counter() - started)


def cost(name: str, threads: int, sizes: list[int], count: int, rounds: int) -> list[str]:
    spec, protocol, items, pipe = _setup(name, count)
    torch.set_num_threads(threads)
    guided = protocol.guidance[spec.family] > 1
    with per_image_calls(pipe, guided):
        reference = generate(pipe, protocol, spec.family, items, 1)
        largest = {size: max(int(np.abs(reference[key].astype(np.int16) - image).max())
                             for key, image in generate(pipe, protocol, spec.family, items, size).items())
                   for size in sizes}
    rates: dict[tuple[bool, int], list[float]] = {}
    for _ in range(rounds):  # alternated, so a busy phase of a shared machine hits both arrangements alike
        for split in (False, True):
            with per_image_calls(pipe, guided) if split else contextlib.nullcontext():
                for size in sizes:
                    rates.setdefault((split, size), []).append(
                        images_per_second(pipe, protocol, spec.family, items, size))
    rows = []
    for size in sizes:
        whole, split = (statistics.median(rates[(flag, size)]) for flag in (False, True))
        rows.append(f"| {name}, {threads} thread{'s' * (threads > 1)} | {size} | {whole:.1f} | {split:.1f} | "
                    f"{split / whole:.2f} | {largest[size]} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny-sd15,tiny-sdxl,micro-base")
    parser.add_argument("--threads", default="1,2", help="torch intra-op thread counts, comma-separated")
    parser.add_argument("--batch-sizes", default="1-16", help="a range (1-16) or a list (1,4,16)")
    parser.add_argument("--images", type=int, default=16, help="images (prompt x seed) per batch size")
    parser.add_argument("--cost", action="store_true", help="measure per-image network calls instead")
    parser.add_argument("--rounds", type=int, default=3, help="--cost: alternated rounds, medians reported")
    args = parser.parse_args(argv)
    previous = torch.get_num_threads()
    threads, sizes = [int(t) for t in args.threads.split(",")], parse_sizes(args.batch_sizes)
    print(f"torch {torch.__version__}, CPU kernels {torch.backends.cpu.get_cpu_capability()}, "
          f"{os.cpu_count()} cpus, {args.images} images per batch size\n")
    if args.cost:
        print("| model, threads | batch size | images/s, whole-batch calls | images/s, per-image calls | ratio | "
              "max difference to batch 1, per-image calls |")
        print("|---|---|---|---|---|---|")
        try:
            for name in args.models.split(","):
                for thread_count in threads:
                    for line in cost(name, thread_count, sizes, args.images, args.rounds):
                        print(line, flush=True)
        finally:
            torch.set_num_threads(previous)
        return
    print("| model, threads, comparison | images compared | pixel values | % equal | "
          "% 1 level | values 2 levels | values > 2 levels | mean | p99.9 | max | images with max > 2 | "
          "worst image: % values >= 2 levels |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    try:
        for name in args.models.split(","):
            for line in measure(name, threads, sizes, args.images):
                print(line, flush=True)
    finally:
        torch.set_num_threads(previous)


if __name__ == "__main__":
    main()
