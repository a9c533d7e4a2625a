"""Degradations that make clean renders look like a small diffusion model's samples: blurry, blobby, noisy,
colour-shifted, slightly misplaced. The judge trains on them so that it stays right on generated images, and its
accuracy is reported under each of them. Tensors are float (N, 3, H, W) in [0, 1]; every random draw comes from
the caller's torch.Generator, so a degradation is reproducible.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_INV = torch.linalg.inv(_YIQ)


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable blur with one sigma (in pixels) per image; sigma near 0 leaves the image as it is.
    Seven shifted, weighted copies per axis: far faster on a CPU than a grouped convolution per image."""
    h, w = x.shape[-2:]
    t = torch.arange(-3, 4, dtype=x.dtype)
    kernel = torch.exp(-(t[None] ** 2) / (2 * sigma.clamp(min=1e-3)[:, None].to(x) ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True))[:, :, None, None, None]
    padded = F.pad(x, (3, 3, 0, 0), mode="replicate")
    x = sum(kernel[:, k] * padded[..., k:k + w] for k in range(7))
    padded = F.pad(x, (0, 0, 3, 3), mode="replicate")
    return sum(kernel[:, k] * padded[..., k:k + h, :] for k in range(7))


def blobby(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Lose the finest detail (corners, strokes) the way a small VAE decoder does: down, then back up."""
    small = F.avg_pool2d(x, factor)
    return F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)


def jpeg_like(x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """8x8 block-DCT quantisation in luma/chroma (YIQ), chroma at half resolution: JPEG's blocks and bleeding."""
    n, _, h, w = x.shape
    ycc = torch.einsum("ij,njhw->nihw", _YIQ.to(x), x)
    chroma = F.interpolate(F.avg_pool2d(ycc[:, 1:], 2), size=(h, w), mode="nearest")
    ycc = torch.cat([ycc[:, :1], chroma], 1)
    k = torch.arange(8, dtype=x.dtype)
    dct = torch.cos(math.pi * (2 * k[None] + 1) * k[:, None] / 16) * math.sqrt(2 / 8)
    dct[0] /= math.sqrt(2)
    dct2 = torch.kron(dct, dct)  # the 2-D DCT of a flattened 8x8 block, as one matrix product
    blocks = ycc.reshape(n, 3, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(n, 3, -1, 64)
    table = (1 + 0.5 * (k[:, None] + k[None])).reshape(64) * torch.tensor([1.0, 2.0, 2.0])[:, None, None]
    q = step.to(x)[:, None, None, None] * table[None].to(x)
    blocks = (torch.round(blocks @ dct2.T / q) * q) @ dct2
    blocks = blocks.reshape(n, 3, h // 8, w // 8, 8, 8)
    ycc = blocks.permute(0, 1, 2, 4, 3, 5).reshape(n, 3, h, w)
    return torch.einsum("ij,njhw->nihw", _YIQ_INV.to(x), ycc)


def colour_jitter(x: torch.Tensor, gen: torch.Generator, hue_degrees: float = 6.0) -> torch.Tensor:
    """Brightness, contrast, saturation and a small hue rotation: small enough never to cross a colour name."""
    n = x.shape[0]
    theta = torch.deg2rad(_uniform(gen, n, -hue_degrees, hue_degrees))
    yiq = torch.einsum("ij,njhw->nihw", _YIQ.to(x), x)
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    i, q = yiq[:, 1], yiq[:, 2]
    saturation = _uniform(gen, n, 0.7, 1.3)[:, None, None]
    yiq = torch.stack([yiq[:, 0], saturation * (cos * i - sin * q), saturation * (sin * i + cos * q)], 1)
    x = torch.einsum("ij,njhw->nihw", _YIQ_INV.to(x), yiq)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (x - mean) * _uniform(gen, n, 0.8, 1.2)[:, None, None, None]
    return x * _uniform(gen, n, 0.85, 1.15)[:, None, None, None]


def shift_scale(x: torch.Tensor, gen: torch.Generator, pixels: float = 1.5, scale: float = 0.05,
                degrees: float = 6.0) -> torch.Tensor:
    """A small random translation, zoom and turn; the border colour fills what comes into view."""
    n, _, h, _ = x.shape
    angle = torch.deg2rad(_uniform(gen, n, -degrees, degrees))
    s = _uniform(gen, n, 1 - scale, 1 + scale)
    shift = _uniform(gen, 2 * n, -pixels, pixels).reshape(n, 2) * (2.0 / h)
    theta = torch.stack([torch.stack([s * torch.cos(angle), -s * torch.sin(angle), shift[:, 0]], 1),
                         torch.stack([s * torch.sin(angle), s * torch.cos(angle), shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask[:, None, None, None], a, b)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The training distribution: a fifth of the images stay clean, the rest get a random mix of everything."""
    n = x.shape[0]

    def coin(p: float) -> torch.Tensor:
        return torch.rand(n, generator=gen) < p

    keep = coin(0.2)
    out = _where(coin(0.7), shift_scale(x, gen), x)
    out = _where(coin(0.8), colour_jitter(out, gen), out)
    out = _where(coin(0.6), gaussian_blur(out, _uniform(gen, n, 0.3, 1.3)), out)
    out = _where(coin(0.15), blobby(out), out)
    out = _where(coin(0.3), jpeg_like(out.clamp(0, 1), _uniform(gen, n, 0.01, 0.06)), out)
    out = out + torch.randn(out.shape, generator=gen) * (_uniform(gen, n, 0, 0.06) * coin(0.5))[:, None, None, None]
    return _where(keep, x, out.clamp(0, 1))


# Fixed-strength degradations for reporting the judge's robustness, one failure mode each, plus the mixture.
DEGRADATIONS = {
    "blur": lambda x, gen: gaussian_blur(x, torch.full((x.shape[0],), 1.0)),
    "blobby": lambda x, gen: blobby(x),
    "noise": lambda x, gen: (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1),
    "jpeg": lambda x, gen: jpeg_like(x, torch.full((x.shape[0],), 0.04)).clamp(0, 1),
    "jitter": lambda x, gen: colour_jitter(shift_scale(x, gen), gen).clamp(0, 1),
    "mixed": augment,
}
