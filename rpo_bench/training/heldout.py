"""A held-out slice of the preference pairs, measured during training: is the model learning the preference or
memorising its training pairs?

Pairs are held out a whole prompt at a time (a prompt's other pairs in training would leak it), chosen by hashing
(seed, caption), so the slice does not depend on the order of the rows. Each held-out pair gets one fixed timestep
and noise (batches.heldout_randomness), and the reference's errors on them are computed once, so every
evaluation differs from the previous one only by the weights.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from rpo_bench.core.errors import BadInputError
from rpo_bench.training import losses
from rpo_bench.training.batches import heldout_randomness, image_to_tensor
from rpo_bench.training.config import HELDOUT_CAP
from rpo_bench.training.diffusion import DiffusionParts, repeat_condition
from rpo_bench.training.methods.dpo import DPOConfig

# A method without a dpo-half beta (SFT, MaPO, KTO) has its held-out margin on DPO's default beta, so that it reads
# on the scale of a default DPO run.
SFT_MARGIN_BETA = DPOConfig.__dataclass_fields__["beta"].default
KEYS = ("heldout_acc", "heldout_margin", "heldout_err_w", "heldout_err_l", "heldout_d_w", "heldout_d_l")


def heldout_target(setting: float, num_pairs: int) -> int:
    """How many pairs --heldout-pairs asks for: a fraction (capped) or a count."""
    if setting <= 0:
        return 0
    if setting < 1:
        return min(HELDOUT_CAP, math.floor(setting * num_pairs))
    return int(setting)


def split_heldout(captions: Sequence[str], setting: float, seed: int) -> tuple[list[int], list[int]]:
    """(training indices, held-out indices), both in data order. Whole prompts are held out, in the order of
    sha256(seed, caption), until at least the target number of pairs is reached."""
    target = heldout_target(setting, len(captions))
    if target == 0:
        return list(range(len(captions))), []
    by_caption: dict[str, list[int]] = {}
    for index, caption in enumerate(captions):
        by_caption.setdefault(caption, []).append(index)
    order = sorted(by_caption, key=lambda c: hashlib.sha256(f"{seed}\0{c}".encode()).hexdigest())
    held: list[int] = []
    for caption in order:
        if len(held) >= target:
            break
        held.extend(by_caption[caption])
    if len(held) >= len(captions):
        raise BadInputError(f"--heldout-pairs {setting:g} leaves no pair to train on: the data has {len(captions)} "
                            f"pairs over {len(by_caption)} prompts, held out a whole prompt at a time; accepted: "
                            "a smaller number, or 0 for no held-out pairs")
    held_set = set(held)
    return [i for i in range(len(captions)) if i not in held_set], sorted(held)


@dataclass
class _Chunk:
    """Inputs of one forward pass over held-out pairs, kept on the CPU between evaluations: winners' then losers'
    latents, noise and timesteps, the prompts' condition, and the reference's errors once known."""

    condition: dict[str, Any]
    latents: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor
    ref_err: torch.Tensor | None = None


def _moved(condition: dict[str, Any], device) -> dict[str, Any]:
    return {k: _moved(v, device) if isinstance(v, dict) else v.to(device) for k, v in condition.items()}


class HeldOutEvaluator:
    """Held-out accuracy, margin and errors of a UNet against the reference, over this process's share of the
    held-out pairs, summed over processes (the numbers do not depend on how many processes run)."""

    def __init__(self, data, indices: Sequence[int], parts: DiffusionParts, seed: int, beta: float | None,
                 chunk_size: int, accelerator) -> None:
        self.data, self.parts, self.accelerator = data, parts, accelerator
        self.indices = list(indices)
        self.beta = beta if beta is not None else SFT_MARGIN_BETA
        rank, world = accelerator.process_index, accelerator.num_processes
        mine = self.indices[rank::world]
        self.chunks = [self._encode(mine[i:i + chunk_size], seed) for i in range(0, len(mine), chunk_size)]

    def _encode(self, positions: list[int], seed: int) -> _Chunk:
        parts = self.parts
        draws = heldout_randomness(seed, positions, parts.latent_shape,
                                   parts.noise_scheduler.config.num_train_timesteps)
        pairs = [self.data[i] for i in positions]
        with self.accelerator.autocast():
            condition = parts.encode_text([p.caption for p in pairs])
            z_w = parts.encode_images(torch.stack([image_to_tensor(p.winner, parts.resolution) for p in pairs]),
                                      draws.vae_noise_w)
            z_l = parts.encode_images(torch.stack([image_to_tensor(p.loser, parts.resolution) for p in pairs]),
                                      draws.vae_noise_l)
        return _Chunk(_moved(condition, "cpu"), torch.cat([z_w, z_l]).cpu(), torch.cat([draws.noise, draws.noise]),
                      torch.cat([draws.timesteps, draws.timesteps]))

    def _errors(self, unet, chunk: _Chunk) -> torch.Tensor:
        device = self.parts.device
        with torch.no_grad(), self.accelerator.autocast():
            return self.parts.denoising_error(unet, chunk.latents.to(device), chunk.noise, chunk.timesteps,
                                              repeat_condition(_moved(chunk.condition, device), 2)).float().cpu()

    def measure_reference(self, unet, context: Callable[[], Any] = nullcontext) -> None:
        """The reference's errors, once: `context` switches `unet` into the reference (LoRA adapters off)."""
        with _evaluating(unet), context():
            for chunk in self.chunks:
                chunk.ref_err = self._errors(unet, chunk)

    def evaluate(self, unet) -> dict[str, float]:
        sums = torch.zeros(1 + len(KEYS), dtype=torch.float64)  # pairs, then the sum behind each key
        with _evaluating(unet):
            for chunk in self.chunks:
                err, ref = self._errors(unet, chunk), chunk.ref_err
                m = err.shape[0] // 2
                d_w, d_l = err[:m] - ref[:m], err[m:] - ref[m:]
                # Ties are judged in the errors' own precision (float32), sums are kept in float64.
                credit = losses.preference_credit(d_w - d_l, err[:m] + ref[:m] + err[m:] + ref[m:])
                logits = losses.dpo_logits(d_w, d_l, self.beta)
                values = (credit, logits, err[:m], err[m:], d_w, d_l)
                sums += torch.tensor([m, *(v.double().sum().item() for v in values)], dtype=torch.float64)
        if self.accelerator.num_processes > 1:
            sums = self.accelerator.reduce(sums.to(self.accelerator.device), reduction="sum").cpu()
        n = sums[0].item()
        return {"heldout_pairs": int(n), **{key: (sums[i + 1] / n).item() for i, key in enumerate(KEYS)}}


class _evaluating:  # noqa: N801 - used as a context manager, like torch.no_grad
    """eval() for the measurement (no dropout), then the module's own mode back."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module, self.was_training = module, module.training

    def __enter__(self) -> None:
        self.module.eval()

    def __exit__(self, *exc_info) -> None:
        self.module.train(self.was_training)
