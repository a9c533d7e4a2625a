"""The micro VAE: an AutoencoderKL with 4x downsampling (32x32 renders -> 4x8x8 latents).

4x rather than SD's 8x: at 32 px an 8x VAE would leave 4x4 latents, too coarse for shape and position.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from rpo_bench.core.progress import progress_bar
from rpo_bench.micro.training_data import StyleMix, training_batch
from rpo_bench.micro.vae_losses import (
    PatchDiscriminator,
    RandomFeatures,
    chroma_loss,
    discriminator_loss,
    generator_loss,
    perceptual_loss,
    vivid_chroma_loss,
)


def build_micro_vae(latent_channels: int = 4, downsampling: int = 4):
    """`downsampling` 4 (the build's: 8x8 latents) or 2 (16x16 latents, for experiments/micro_vae_styles.py)."""
    from diffusers import AutoencoderKL  # noqa: PLC0415 - diffusers loads in seconds: on first use

    widths = {4: (32, 64, 64), 2: (32, 64)}[downsampling]  # each block after the first halves the resolution
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * len(widths),
                         up_block_types=("UpDecoderBlock2D",) * len(widths), block_out_channels=widths,
                         layers_per_block=1, latent_channels=latent_channels, norm_num_groups=32, sample_size=32)


def train_micro_vae(seed: int = 0, steps: int = 1500, batch_size: int = 64, kl_weight: float = 1e-6,
                    show_progress: bool = True, mix: StyleMix = StyleMix(), latent_channels: int = 4,
                    downsampling: int = 4, perceptual_weight: float = 0.0, adversarial_weight: float = 0.0,
                    adversarial_start: float = 0.3, lowpass_weight: float = 0.0,
                    chroma_weight: float = 0.0, vivid_chroma_weight: float = 0.0, latent_noise: float = 0.0):
    """Returns the trained VAE (its scaling factor set to 1 / std of the latents) and a report with PSNR.
    `mix`, `latent_channels` and `downsampling` are the build's unless an experiment asks otherwise.
    `perceptual_weight` and `adversarial_weight` add vae_losses' texture-keeping terms to pixel MSE; the
    discriminator starts after `adversarial_start` of the steps, once reconstructions are roughly right (as SD's
    `disc_start`), so that it sharpens a layout rather than inventing one. `lowpass_weight` adds MSE between 4x4
    average-pooled images: it holds each region's mean colour (what the judge's hue reading uses) without asking
    for the stroke phase that pixel MSE would average away. `chroma_weight` adds vae_losses.chroma_loss: the local
    mean hue, which decides a sketch's colour name. `latent_noise` > 0 decodes each latent with Gaussian noise
    added, its scale drawn per image up to that share of the latents' std: a diffusion model's latents are never
    exactly an encoder's, and a decoder that has only seen exact ones turns the difference into grain."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 100)
    vae = build_micro_vae(latent_channels, downsampling)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    features = RandomFeatures() if perceptual_weight > 0 else None
    discriminator = PatchDiscriminator() if adversarial_weight > 0 else None
    if discriminator is not None:
        d_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.9), weight_decay=0.0)
    first_adversarial = int(adversarial_start * steps)
    vae.train()
    with progress_bar("micro VAE", steps, show_progress) as advance:
        for step in range(steps):
            images, _ = training_batch(rng, batch_size, split="all", mix=mix)
            posterior = vae.encode(images).latent_dist
            latents = posterior.sample()
            if latent_noise:  # draws nothing when 0, so that earlier recipes keep their bytes
                scale = latent_noise * latents.detach().std() * torch.rand(len(latents), 1, 1, 1)
                latents = latents + scale * torch.randn_like(latents)
            reconstruction = vae.decode(latents).sample
            loss = F.mse_loss(reconstruction, images) + kl_weight * posterior.kl().mean()
            if features is not None:
                loss = loss + perceptual_weight * perceptual_loss(features, reconstruction, images)
            if lowpass_weight:
                loss = loss + lowpass_weight * F.mse_loss(F.avg_pool2d(reconstruction, 4), F.avg_pool2d(images, 4))
            if chroma_weight:
                loss = loss + chroma_weight * chroma_loss(reconstruction, images)
            if vivid_chroma_weight:
                loss = loss + vivid_chroma_weight * vivid_chroma_loss(reconstruction, images)
            adversarial = discriminator is not None and step >= first_adversarial
            if adversarial:
                loss = loss + adversarial_weight * generator_loss(discriminator.requires_grad_(False), reconstruction)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if adversarial:
                d_loss = discriminator_loss(discriminator.requires_grad_(True), images, reconstruction)
                d_optimizer.zero_grad(set_to_none=True)
                d_loss.backward()
                d_optimizer.step()
            advance(1)
    return vae, calibrate(vae.eval(), seed, mix)


def calibrate(vae, seed: int, mix: StyleMix) -> dict:
    """Set the VAE's scaling factor to 1 / std of its latents on the training mix (so that the UNet sees unit
    variance, as SD's 0.18215 does) and return it with the PSNR of the same batch's reconstructions."""
    with torch.no_grad():
        images, _ = training_batch(np.random.default_rng(seed + 101), 256, split="all", mix=mix)
        latents = vae.encode(images).latent_dist.mean
        reconstruction = vae.decode(latents).sample.clamp(-1, 1)
        mse = F.mse_loss((reconstruction + 1) / 2, (images + 1) / 2).item()
        scaling = 1.0 / latents.std().item()
    vae.register_to_config(scaling_factor=scaling)
    return {"psnr_db": round(10 * math.log10(1 / mse), 2), "scaling_factor": round(scaling, 5)}
