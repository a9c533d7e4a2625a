"""The micro VAE's texture-keeping losses: fixed random features that tell a texture from its blur, and a patch
discriminator loss that pushes reconstructions towards renders."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rpo_bench.micro.render import render_batch
from rpo_bench.micro.scenes import Scene
from rpo_bench.micro.vae_losses import (
    PatchDiscriminator,
    RandomFeatures,
    discriminator_loss,
    generator_loss,
    perceptual_loss,
)


def _vangogh(n: int = 4) -> torch.Tensor:
    pixels = render_batch([Scene(style="vangogh")] * n, list(range(n)))
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def test_random_features_are_fixed_by_their_seed_and_never_trained():
    a, b, c = RandomFeatures(seed=3), RandomFeatures(seed=3), RandomFeatures(seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)
    assert not any(p.requires_grad for p in a.parameters())


def test_perceptual_loss_sees_a_blurred_texture_that_pixel_mse_barely_does():
    images = _vangogh()
    blurred = F.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)
    shifted_colour = images + 0.05  # a small flat change: as much pixel error, no texture lost
    net = RandomFeatures()
    assert perceptual_loss(net, images, images).item() == 0.0
    mse_ratio = F.mse_loss(blurred, images) / F.mse_loss(shifted_colour, images)
    perceptual_ratio = perceptual_loss(net, blurred, images) / perceptual_loss(net, shifted_colour, images)
    assert perceptual_ratio > 2 * mse_ratio  # blur costs far more, relative to a flat shift, than under MSE


def test_discriminator_losses_train_towards_renders():
    torch.manual_seed(0)
    real = _vangogh(8)
    fake = F.avg_pool2d(real, 3, stride=1, padding=1, count_include_pad=False)
    discriminator = PatchDiscriminator()
    assert discriminator(real).shape == (8, 1, 8, 8)
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
    first = discriminator_loss(discriminator, real, fake).item()
    for _ in range(30):
        loss = discriminator_loss(discriminator, real, fake)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first
    assert generator_loss(discriminator, fake).item() > generator_loss(discriminator, real).item()


def test_train_micro_vae_with_texture_losses_is_seeded():
    from rpo_bench.micro.vae_train import train_micro_vae

    runs = [train_micro_vae(seed=1, steps=3, batch_size=4, show_progress=False, downsampling=2, perceptual_weight=1.0,
                            adversarial_weight=0.1, adversarial_start=0.0, lowpass_weight=1.0, chroma_weight=1.0,
                            vivid_chroma_weight=1.0, latent_noise=0.3)[0] for _ in range(2)]
    a, b = (np.concatenate([p.detach().numpy().ravel() for p in vae.parameters()]) for vae in runs)
    assert np.array_equal(a, b)


def test_a_heavier_kl_keeps_the_posterior_wider_and_latents_centred():
    """World v2's KL weight (1e-5, not SD's 1e-6): the build's decoder must meet a diffusion model's imperfect
    latents, so the posterior must not collapse to a point far from zero (docs/micro-world.md)."""
    import torch

    from rpo_bench.micro.training_data import training_batch
    from rpo_bench.micro.vae_train import train_micro_vae

    images, _ = training_batch(np.random.default_rng(9), 16, split="all")
    posteriors = []
    for kl in (1e-6, 1e-2):
        vae, _ = train_micro_vae(seed=1, steps=30, batch_size=8, show_progress=False, downsampling=2, kl_weight=kl)
        with torch.no_grad():
            posteriors.append(vae.encode(images).latent_dist)
    light, heavy = posteriors
    assert heavy.std.mean() > light.std.mean()  # held nearer N(0, 1)'s unit width (a full build: 0.09 against 0.02)
    assert heavy.mean.abs().mean() < light.mean.abs().mean() / 2


def test_chroma_loss_sees_a_hue_shift_and_ignores_brightness():
    """The term that holds a sketch's colour name: red hatching turned orange costs, a lighter image does not
    (I and Q are blind to grey), and neither does swapping two pixels inside one pooled 2x2 cell."""
    from rpo_bench.micro.vae_losses import chroma_loss

    red = torch.tensor([220, 40, 40]) / 127.5 - 1
    orange = torch.tensor([250, 130, 20]) / 127.5 - 1
    images = red.view(1, 3, 1, 1).expand(2, 3, 8, 8).clone()
    assert chroma_loss(images, images).item() == 0.0
    assert chroma_loss(images + 0.2, images).item() < 1e-10
    assert chroma_loss(orange.view(1, 3, 1, 1).expand(2, 3, 8, 8), images).item() > 1e-3
    striped = images.clone()
    striped[:, :, 0::2, 0::2] = 1.0  # paper in one pixel of every 2x2 cell
    swapped = images.clone()
    swapped[:, :, 1::2, 1::2] = 1.0  # the same paper in another pixel of the cell: the stroke's phase moved
    assert chroma_loss(swapped, striped).item() < 1e-10


def test_vivid_chroma_loss_weighs_a_strokes_hue_above_the_papers():
    """Red strokes on white paper: the same orange shift costs far more on the strokes than on the paper, and a
    perfect reconstruction costs nothing."""
    from rpo_bench.micro.vae_losses import vivid_chroma_loss

    red = torch.tensor([220, 40, 40]) / 127.5 - 1
    paper = torch.tensor([240, 240, 240]) / 127.5 - 1
    shift = (torch.tensor([250, 130, 20]) - torch.tensor([220, 40, 40])) / 127.5
    images = paper.view(1, 3, 1, 1).expand(2, 3, 8, 8).clone()
    images[:, :, ::4] = red.view(1, 3, 1, 1)  # every fourth row a stroke
    strokes = images.clone()
    strokes[:, :, ::4] += shift.view(1, 3, 1, 1)
    on_paper = images.clone()
    on_paper[:, :, 1::4] += shift.view(1, 3, 1, 1)
    assert vivid_chroma_loss(images, images).item() == 0.0
    assert vivid_chroma_loss(strokes, images).item() > 20 * vivid_chroma_loss(on_paper, images).item()
