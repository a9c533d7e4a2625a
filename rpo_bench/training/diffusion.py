"""The diffusion side of a training step: text and image encoding, and per-sample denoising errors.

Text goes through the pipeline's own `encode_prompt` (the code that serves inference), so SD1.5 and SDXL are
conditioned in training exactly as when they generate. Per-sample error is the MEAN squared error over all
latent elements (METHOD.md), never the sum.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import torch


class DiffusionParts:
    def __init__(self, pipe, family: str, resolution: int, device: torch.device, weight_dtype: torch.dtype):
        from diffusers import DDPMScheduler  # noqa: PLC0415 - diffusers loads in seconds: on first use

        self.pipe, self.family, self.resolution = pipe, family, resolution
        self.device, self.weight_dtype = device, weight_dtype
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.vae_scale = pipe.vae_scale_factor
        self.latent_shape = (pipe.unet.config.in_channels, resolution // self.vae_scale, resolution // self.vae_scale)
        for module in self.frozen_modules():
            module.requires_grad_(False)
            module.eval()

    def frozen_modules(self) -> list[torch.nn.Module]:
        names = ("vae", "text_encoder", "text_encoder_2")
        return [getattr(self.pipe, n) for n in names if getattr(self.pipe, n, None) is not None]

    @torch.no_grad()
    def encode_text(self, captions: Sequence[str]) -> dict[str, Any]:
        if self.family == "sdxl":
            embeds, _, pooled, _ = self.pipe.encode_prompt(list(captions), device=self.device,
                                                           num_images_per_prompt=1,
                                                           do_classifier_free_guidance=False)
            size = self.resolution
            # (original size, crop top-left, target size): images are resized and centre-cropped to `size`.
            time_ids = torch.tensor([[size, size, 0, 0, size, size]], device=self.device, dtype=embeds.dtype)
            return {"encoder_hidden_states": embeds,
                    "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids.repeat(len(captions), 1)}}
        embeds, _ = self.pipe.encode_prompt(list(captions), self.device, 1, False)
        return {"encoder_hidden_states": embeds}

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor, posterior_noise: torch.Tensor) -> torch.Tensor:
        """Sample the VAE posterior with given noise (mean + std * noise), so the draw is reproducible."""
        vae = self.pipe.vae
        posterior = vae.encode(pixels.to(self.device, vae.dtype)).latent_dist
        latents = posterior.mean + posterior.std * posterior_noise.to(self.device, posterior.mean.dtype)
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return ((latents - shift) * vae.config.scaling_factor).float()

    def denoising_error(self, unet: Callable, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                        condition: dict[str, Any], return_residual: bool = False):
        """[B] mean squared error of the UNet's prediction (epsilon or v, as the scheduler is configured); with
        `return_residual`, also the residual prediction - target itself (what Diffusion-SDPO's scale reads)."""
        scheduler = self.noise_scheduler
        noise = noise.to(self.device)
        timesteps = timesteps.to(self.device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        prediction_type = scheduler.config.prediction_type
        target = noise if prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, timesteps)
        prediction = unet(noisy.to(self.weight_dtype), timesteps, **condition).sample
        residual = prediction.float() - target.float()
        error = residual.pow(2).mean(dim=tuple(range(1, prediction.ndim)))
        return (error, residual) if return_residual else error


def repeat_condition(condition: dict[str, Any], times: int) -> dict[str, Any]:
    """The same prompts for winners and losers: stack the condition twice along the batch."""
    out: dict[str, Any] = {"encoder_hidden_states": condition["encoder_hidden_states"].repeat(times, 1, 1)}
    if "added_cond_kwargs" in condition:
        out["added_cond_kwargs"] = {k: v.repeat(times, 1) for k, v in condition["added_cond_kwargs"].items()}
    return out


@contextmanager
def adapters_disabled(unet):
    """The LoRA reference: the same UNet with its adapters off (no second copy in memory)."""
    unet.disable_adapters()
    try:
        yield unet
    finally:
        unet.enable_adapters()
