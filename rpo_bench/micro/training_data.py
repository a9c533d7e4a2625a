"""Unlimited (render, prompt) training batches for the micro world's CLIP, VAE and base UNet.

The base model must follow ordinary prompts with plain renders and rarely drift into a style on its own, so
that style alignment has room to show: most samples are plain, a few are styled with the style named in the
prompt, and a very few are styled while the prompt does not say so (like the unlabeled style in web data).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from rpo_bench.micro.render import render_batch
from rpo_bench.micro.scenes import STYLES, sample_scenes, scene_prompt


@dataclass(frozen=True)
class StyleMix:
    styled_named: float = 0.08  # styled render, style named in the prompt
    styled_unnamed: float = 0.02  # styled render, plain prompt


def training_batch(rng: np.random.Generator, n: int, split: str = "train", mix: StyleMix = StyleMix(),
                   jitter: bool = True) -> tuple[torch.Tensor, list[str]]:
    """Images in [-1, 1] as [n, 3, 32, 32] float32, and their prompts."""
    scenes = sample_scenes(rng, n, split=split, styles=("plain",))
    draws = rng.random(n)
    styled = [s for s in STYLES if s != "plain"]
    prompts = []
    for i, scene in enumerate(scenes):
        if draws[i] < mix.styled_named + mix.styled_unnamed:
            scenes[i] = replace(scene, style=styled[int(rng.integers(len(styled)))])
        named = scenes[i] if draws[i] < mix.styled_named else replace(scenes[i], style="plain")
        prompts.append(scene_prompt(named))
    seeds = rng.integers(0, 2**31, size=n).tolist() if jitter else None
    pixels = render_batch(scenes, seeds)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return images, prompts
