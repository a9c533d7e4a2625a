"""Batched, seeded generation: an image is (model, protocol, prompt, seed), up to a few 8-bit levels of the batch.

Each image's initial latents are drawn on the CPU in float32 from its own seed, so the noise and the prompt an
image starts from are identical at any batch size, in any order, on any device; stochastic samplers get one
generator per image as well.

The pixels are not bit-identical across batch sizes: oneDNN and MKL on the CPU (like GPU libraries) pick their
convolution and matmul kernels by tensor shape, so the UNet, text encoders and VAE return results that differ
in the last float32 bit at another batch size (or thread count), and 10-20 guided sampling steps amplify that
about 1000-fold. Calling every network once per image makes the images bit-identical, at 0.20-0.35x the CPU
throughput at batch 16 (experiments/batch_invariance.py --cost), so the difference is measured and bounded
instead (experiments/batch_invariance.py; tests/test_generate.py), and each batch reports the batch size
and threads it was generated with, for the store to record beside the image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from rpo_bench.evaluation.prompts import Prompt
from rpo_bench.evaluation.protocols import Protocol, apply_sampler


@dataclass(frozen=True)
class GenerationItem:
    key: str
    prompt: Prompt
    seed: int


def output_size(pipe, protocol: Protocol, family: str) -> tuple[int, int]:
    size = protocol.resolution[family] or pipe.unet.config.sample_size * pipe.vae_scale_factor
    return size, size


def initial_latents(pipe, seed: int, height: int, width: int) -> torch.Tensor:
    shape = (1, pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)


class GeneratedBatch(list):
    """[(item, PIL image)] of one pipeline call, with the two settings besides the key that move its pixels."""

    def __init__(self, pairs, threads: int):
        super().__init__(pairs)
        self.threads = threads  # torch's intra-op threads at generation (a CPU's kernels split work by it)

    @property
    def batch_size(self) -> int:
        """The number of images generated together (the last batch may be smaller than the one asked for)."""
        return len(self)


def generate_batches(
    pipe,
    protocol: Protocol,
    family: str,
    items: Sequence[GenerationItem],
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[GeneratedBatch]:
    """Yield [(item, PIL image)] one batch at a time, so the caller can persist each batch before the next,
    with its `batch_size` and `threads` to record beside each image."""
    apply_sampler(pipe, protocol)
    height, width = output_size(pipe, protocol, family)
    device, dtype = pipe.unet.device, pipe.unet.dtype
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        latents = torch.cat([initial_latents(pipe, item.seed, height, width) for item in batch])
        generators = [torch.Generator("cpu").manual_seed(item.seed) for item in batch]
        negative = [protocol.negative_prompt] * len(batch) if protocol.negative_prompt else None
        result = pipe(
            prompt=[item.prompt.text for item in batch],
            negative_prompt=negative,
            num_inference_steps=protocol.steps,
            guidance_scale=protocol.guidance[family],
            height=height,
            width=width,
            latents=latents.to(device=device, dtype=dtype),
            generator=generators,
            eta=protocol.eta,
            output_type="pil",
        )
        if on_batch is not None:
            on_batch(len(batch))
        yield GeneratedBatch(zip(batch, result.images, strict=True), torch.get_num_threads())
