"""What goes into one micro-step: which pairs, and the per-pair randomness, as pure functions of the step.

Everything random is drawn from a generator seeded by (seed, micro-step, position of the pair in the GLOBAL
batch). So a run resumed from a checkpoint replays exactly the data and noise of an uninterrupted run, and a
pair gets the same timestep and noise whether it is trained on 1 process or on 2: the property the
`--contrast global` test relies on.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image


def _seed_for(*parts: int) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


# The "micro-step" of the held-out pairs' draws: no training step has it (steps count from 0, and -1 seeds the epoch
# permutations), so a held-out pair's noise never coincides with a training draw.
HELDOUT_STREAM = -2


def pair_generator(seed: int, micro_step: int, position: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(_seed_for(seed, micro_step, position))


@functools.lru_cache(maxsize=4)
def _epoch_order(num_pairs: int, seed: int, epoch: int, stream: int = -1) -> torch.Tensor:
    """One permutation per epoch, drawn once: at Pick-a-Pic size a fresh randperm every micro-step would cost
    more than the step's data loading. `stream` keeps separate sequences apart (an unpaired method's classes)."""
    return torch.randperm(num_pairs, generator=torch.Generator("cpu").manual_seed(_seed_for(seed, stream, epoch)))


def stream_slice(num_items: int, seed: int, start: int, count: int, stream: int = -1) -> list[int]:
    """Items [start, start + count) of an endless sequence that visits all `num_items` once per epoch, in a new
    order every epoch."""
    indices: list[int] = []
    while len(indices) < count:
        epoch, offset = divmod(start + len(indices), num_items)
        take = min(count - len(indices), num_items - offset)
        indices.extend(_epoch_order(num_items, seed, epoch, stream)[offset:offset + take].tolist())
    return indices


def global_batch_indices(num_pairs: int, seed: int, micro_step: int, global_batch: int) -> list[int]:
    """Pair indices of one global micro-batch: consecutive slices of a new permutation every epoch."""
    return stream_slice(num_pairs, seed, micro_step * global_batch, global_batch)


@dataclass
class PairRandomness:
    """Per-pair draws; winner and loser share timestep and noise (the Diffusion-DPO convention)."""

    timesteps: torch.Tensor  # [M] long
    noise: torch.Tensor  # [M, C, h, w]
    drop_caption: list[bool]
    vae_noise_w: torch.Tensor  # [M, C, h, w] for sampling the VAE posterior
    vae_noise_l: torch.Tensor


def draw_randomness(seed: int, micro_step: int, positions: Sequence[int], latent_shape: tuple[int, int, int],
                    num_train_timesteps: int, caption_dropout: float, timestep_sharing: str) -> PairRandomness:
    timesteps, noise, drops, vae_w, vae_l = [], [], [], [], []
    shared_t = None
    if timestep_sharing == "batch":  # one t for the whole global micro-batch
        shared_t = torch.randint(0, num_train_timesteps, (1,), generator=pair_generator(seed, micro_step, -1))
    for position in positions:
        generator = pair_generator(seed, micro_step, position)
        t = torch.randint(0, num_train_timesteps, (1,), generator=generator)
        timesteps.append(shared_t if shared_t is not None else t)
        noise.append(torch.randn(latent_shape, generator=generator))
        drops.append(bool(torch.rand((), generator=generator).item() < caption_dropout))
        vae_w.append(torch.randn(latent_shape, generator=generator))
        vae_l.append(torch.randn(latent_shape, generator=generator))
    return PairRandomness(torch.cat(timesteps), torch.stack(noise), drops, torch.stack(vae_w), torch.stack(vae_l))


def image_to_tensor(image: Image.Image, resolution: int) -> torch.Tensor:
    """Resize the short side to `resolution`, centre-crop, scale to [-1, 1] (the SD training convention)."""
    image = image.convert("RGB")
    width, height = image.size
    scale = resolution / min(width, height)
    resized = image.resize((max(resolution, round(width * scale)), max(resolution, round(height * scale))),
                           Image.Resampling.BICUBIC)
    left = (resized.width - resolution) // 2
    top = (resized.height - resolution) // 2
    cropped = resized.crop((left, top, left + resolution, top + resolution))
    pixels = torch.frombuffer(bytearray(cropped.tobytes()), dtype=torch.uint8).view(resolution, resolution, 3)
    return pixels.permute(2, 0, 1).float().div(127.5).sub(1.0)


def heldout_randomness(seed: int, positions: Sequence[int], latent_shape: tuple[int, int, int],
                       num_train_timesteps: int) -> PairRandomness:
    """One fixed timestep and noise per held-out pair (by its position in the data), the same at every evaluation,
    so the held-out curve moves only because the weights do. No caption dropout: the held-out question is about
    the prompts."""
    return draw_randomness(seed, HELDOUT_STREAM, positions, latent_shape, num_train_timesteps, 0.0, "pair")
