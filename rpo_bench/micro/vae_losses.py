"""What makes the micro VAE keep texture: a perceptual loss on fixed random features and a patch discriminator.

Pixel MSE alone averages a brush stroke whose phase the latent cannot pin down into its mean colour, which the
judge then reads as a flat image (E7 measured micro-base's VAE keeping 0.035 of vangogh). Stable Diffusion's VAE
keeps texture with LPIPS (pretrained VGG features) and a PatchGAN; neither pretrained network can be downloaded
here, so:

- `RandomFeatures`: three fixed, seeded, never-trained 3x3 conv layers at three scales. Shallow random filters
  carry enough texture statistics to synthesise textures (Ustyuzhaninov et al., 2017) and already rank
  distortions better than pixel distances (Zhang et al., 2018), so the loss compares their activations (where
  strokes are) and their Gram matrices (what strokes look like: orientation and frequency, wherever they are).
  They never see a label, so the VAE is not trained to please the judge: it is trained to keep whatever local
  structure a render has, and the judge, trained separately on labels, is what measures whether that was enough.
- `PatchDiscriminator`: a small PatchGAN trained from scratch beside the VAE with the hinge loss, as in SD's
  autoencoder training; it penalises reconstructions whose 8x8-pixel patches are too smooth to be renders.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RandomFeatures(nn.Module):
    """Fixed random conv features at 32, 16 and 8 pixels; the same weights for the same seed, never trained."""

    def __init__(self, seed: int = 7, widths: tuple[int, ...] = (32, 64, 64)):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        layers, c_in = [], 3
        for width in widths:
            conv = nn.Conv2d(c_in, width, 3, padding=1)
            with torch.no_grad():
                # He-normal weights, zero-mean filters: each responds to local structure, not to mean colour
                weight = torch.randn(conv.weight.shape, generator=generator) * (2.0 / (9 * c_in)) ** 0.5
                conv.weight.copy_(weight - weight.mean(dim=(1, 2, 3), keepdim=True))
                conv.bias.zero_()
            layers.append(conv)
            c_in = width
        self.layers = nn.ModuleList(layers)
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        features, x = [], images
        for i, conv in enumerate(self.layers):
            x = F.relu(conv(x if i == 0 else F.avg_pool2d(x, 2)))
            features.append(x)
        return features


def _gram(features: torch.Tensor) -> torch.Tensor:
    flat = features.flatten(2)
    return flat @ flat.transpose(1, 2) / flat.shape[-1]


def perceptual_loss(net: RandomFeatures, reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Mean over scales of the activations' L1 distance plus the Gram matrices' L1 distance, each normalised by
    the target's magnitude so that no scale dominates."""
    total = reconstruction.new_zeros(())
    with torch.no_grad():
        targets = net(images)
    for made, target in zip(net(reconstruction), targets, strict=True):
        scale = target.abs().mean().clamp(min=1e-6)
        gram_target = _gram(target)
        total = total + (made - target).abs().mean() / scale
        total = total + (_gram(made) - gram_target).abs().mean() / gram_target.abs().mean().clamp(min=1e-6)
    return total / len(targets)


class PatchDiscriminator(nn.Module):
    """32x32 images -> 8x8 logits, each seeing about 14 pixels: real render patch or reconstruction."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.GroupNorm(8, 2 * width), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.GroupNorm(8, 2 * width), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 1, 3, padding=1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def discriminator_loss(discriminator: PatchDiscriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss (SD's autoencoder recipe)."""
    return 0.5 * (F.relu(1 - discriminator(real)).mean() + F.relu(1 + discriminator(fake.detach())).mean())


def generator_loss(discriminator: PatchDiscriminator, fake: torch.Tensor) -> torch.Tensor:
    return -discriminator(fake).mean()


# RGB -> the two chroma axes of YIQ (I: orange-blue, Q: purple-green); luma is left to the other losses.
_CHROMA = torch.tensor([[0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _chroma(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] RGB -> [N, 2, H, W] YIQ chroma."""
    return torch.einsum("ij,njhw->nihw", _CHROMA.to(images), images)


def chroma_loss(reconstruction: torch.Tensor, images: torch.Tensor, pool: int = 2) -> torch.Tensor:
    """MSE between the chroma (YIQ's I and Q) of pool x pool averaged images. A sketch's colour lives in a few
    hatched pixels whose mean chroma is small: red and orange hatching differ by about 15 levels of green. The
    perceptual and adversarial terms accept a hatch of the wrong hue as well as the right one, and pixel MSE
    weighs that shift like any other error, so reconstructions drifted to the neighbouring colour name; this
    term asks for the local mean hue alone, whatever the stroke phase."""
    return F.mse_loss(_chroma(F.avg_pool2d(reconstruction, pool)), _chroma(F.avg_pool2d(images, pool)))


def vivid_chroma_loss(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Per-pixel chroma error weighted by the render's own chroma squared (normalised to mean 1 per image): the
    hue of the vivid pixels. A person names a hatched drawing's colour from its strokes, not from the paper
    between them; pooled chroma lets a VAE keep the mean while shifting the strokes' hue (a red hatch drawn
    orange on a paler fill), which is how sketch colour was lost (docs/micro-world.md)."""
    made, target = _chroma(reconstruction), _chroma(images)
    vividness = target.pow(2).sum(1, keepdim=True)
    weight = vividness / vividness.mean(dim=(2, 3), keepdim=True).clamp(min=1e-6)
    return (weight * (made - target).pow(2)).sum(1).mean()
