"""Batched, seeded generation: an image depends on (model, protocol, prompt, seed), never on the batch.

Each image's initial latents are drawn on the CPU in float32 from its own seed, so the noise is identical at
any batch size, in any order, on any device; stochastic samplers get one generator per image as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from rpo_bench.prompts import Prompt
from rpo_bench.protocols import Protocol, apply_sampler


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


def generate_batches(
    pipe,
    protocol: Protocol,
    family: str,
    items: Sequence[GenerationItem],
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[list[tuple[GenerationItem, object]]]:
    """Yield [(item, PIL image)] one batch at a time, so the caller can persist each batch before the next."""
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
        yield list(zip(batch, result.images, strict=True))
