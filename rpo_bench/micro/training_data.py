"""Unlimited (render, prompt) training batches for the micro world's CLIP, VAE and base UNet.

The base model must follow ordinary prompts with plain renders and rarely drift into a style on its own, so
that style alignment has room to show: most samples are plain, a few are styled with the style named in the
prompt, and a very few are styled while the prompt does not say so (like the unlabeled style in web data).

The micro CLIP (world v2) also sees partial and mixed styles: a render blended with the plain render of the same
scene (or with another style's), captioned with how much of which style it has ("..., with a faint touch of
pencil sketch", "..., half watercolor and half pixel art"), so that its image embedding carries the degree of a
style, which a style probe must read on the partly stylised images a style-trained model draws.

The base UNet of world v2 also learns from noisy captions (`caption_noise`): web alt-text often names a colour or
a shape the picture does not show, one reason SD follows prompts imperfectly while drawing sharply. A caption's
content attributes are each swapped for another value with that probability (the image stays as rendered), so the
base draws crisp scenes that sometimes miss what the prompt asked: the room preference alignment has to work in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from rpo_bench.micro.render import render_batch
from rpo_bench.micro.scenes import CONTENT_ATTRIBUTES, STYLES, VOCABULARIES, Scene, sample_scenes, scene_prompt


@dataclass(frozen=True)
class StyleMix:
    styled_named: float = 0.08  # styled render, style named in the prompt
    styled_unnamed: float = 0.02  # styled render, plain prompt
    partial: float = 0.0  # a partial or mixed style, its degree named in the prompt (the micro CLIP's mix)


STYLE_WORDS = {"sketch": "pencil sketch", "vangogh": "van gogh", "pixel": "pixel art", "watercolor": "watercolor"}
MIXED_SHARE = 0.3  # of the partial renders: two styles blended instead of one style and plain


DEGREES = ((0.4, "with a faint touch of"), (0.7, "half in"), (1.01, "mostly in"))


def degree_words(strength: float) -> str:
    """Three steps of how much of a style a render has (five steps measured no better: docs/micro-world.md)."""
    return next(words for bound, words in DEGREES if strength < bound)


def _partial(scene, rng: np.random.Generator, styled: list[str]) -> tuple[list, list[float], str]:
    """(the scenes to blend, their weights, the caption's style clause) of one partial or mixed render."""
    first = styled[int(rng.integers(len(styled)))]
    if rng.random() < MIXED_SHARE:
        second = styled[int(rng.integers(len(styled) - 1))]
        second = second if second != first else styled[-1]
        return ([replace(scene, style=first), replace(scene, style=second)], [0.5, 0.5],
                f"half {STYLE_WORDS[first]} and half {STYLE_WORDS[second]}")
    strength = float(rng.uniform(0.15, 0.95))
    return ([replace(scene, style="plain"), replace(scene, style=first)], [1 - strength, strength],
            f"{degree_words(strength)} {STYLE_WORDS[first]}")


def miscaption(scene: Scene, rng: np.random.Generator, noise: float, split: str) -> Scene:
    """The scene a noisy caption describes: each content attribute swapped for another value with probability
    `noise`. In the training split a swap never names a held-out shape x colour pair, so micro-test stays unseen."""
    swaps = rng.random(len(CONTENT_ATTRIBUTES)) < noise
    picks = rng.random(len(CONTENT_ATTRIBUTES))
    for attribute, swap, pick in zip(CONTENT_ATTRIBUTES, swaps, picks, strict=True):
        if not swap:
            continue
        others = [v for v in VOCABULARIES[attribute] if v != getattr(scene, attribute)
                  and (split != "train" or not replace(scene, **{attribute: v}).held_out)]
        if others:
            scene = replace(scene, **{attribute: others[int(pick * len(others))]})
    return scene


def training_batch(rng: np.random.Generator, n: int, split: str = "train", mix: StyleMix = StyleMix(),
                   jitter: bool = True, caption_noise: float = 0.0) -> tuple[torch.Tensor, list[str]]:
    """Images in [-1, 1] as [n, 3, 32, 32] float32, and their prompts; `caption_noise` > 0 miscaptions content
    (see `miscaption`); at 0 it draws nothing from `rng`, so the worlds built without it keep their bytes."""
    scenes = sample_scenes(rng, n, split=split, styles=("plain",))
    draws = rng.random(n)
    styled = [s for s in STYLES if s != "plain"]
    prompts, blends = [], {}
    whole = mix.styled_named + mix.styled_unnamed
    for i, scene in enumerate(scenes):
        if whole <= draws[i] < whole + mix.partial:
            blended, weights, clause = _partial(scene, rng, styled)
            blends[i] = (blended, weights)
            prompts.append(f"{scene_prompt(scene)}, {clause}")
            continue
        if draws[i] < whole:
            scenes[i] = replace(scene, style=styled[int(rng.integers(len(styled)))])
        named = scenes[i] if draws[i] < mix.styled_named else replace(scenes[i], style="plain")
        if caption_noise > 0:
            named = miscaption(named, rng, caption_noise, split)
        prompts.append(scene_prompt(named))
    seeds = rng.integers(0, 2**31, size=n).tolist() if jitter else [None] * n
    pixels = render_batch(scenes, seeds)
    for i, (blended, weights) in blends.items():  # the same seed: the same geometry under both styles
        layers = render_batch(blended, [seeds[i]] * len(blended)).astype(np.float32)
        pixels[i] = np.clip(np.rint(np.tensordot(np.asarray(weights, dtype=np.float32), layers, axes=1)), 0, 255)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return images, prompts
