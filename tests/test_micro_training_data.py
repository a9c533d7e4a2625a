"""The micro world's training mixes: the base's stays as it was, the CLIP's (world v2) adds partial and mixed
styles whose captions say how much of which style the render has."""

from __future__ import annotations

import hashlib

import numpy as np

from rpo_bench.micro.render import render_batch
from rpo_bench.micro.scenes import Scene
from rpo_bench.micro.training_data import DEGREES, STYLE_WORDS, StyleMix, training_batch


def test_partial_renders_blend_the_same_scene_and_say_so():
    images, prompts = training_batch(np.random.default_rng(0), 200, mix=StyleMix(styled_named=0.2, partial=0.5))
    partial = [i for i, p in enumerate(prompts) if any(f"{d} " in p for _, d in DEGREES)]
    mixed = [i for i, p in enumerate(prompts) if " and half " in p]
    assert 50 < len(partial) < 120 and 10 < len(mixed) < 60  # about 70% and 30% of half the renders
    assert all(any(words in prompts[i] for words in STYLE_WORDS.values()) for i in partial + mixed)
    plain = images[[i for i, p in enumerate(prompts) if p.endswith("background")]]
    blended = images[partial]
    # a blend with texture differs more from a flat colour than a plain render does, and less than a full style
    assert blended.std(dim=(2, 3)).mean() > plain.std(dim=(2, 3)).mean() * 0.5


def test_a_blend_lies_between_its_two_renders():
    """The blend is computed pixel by pixel from the two renders under the same seed (same geometry)."""
    from rpo_bench.micro.training_data import _partial

    rng = np.random.default_rng(3)
    scene = Scene(shape="square", colour="blue")
    blended, weights, clause = _partial(scene, rng, ["sketch", "vangogh", "pixel", "watercolor"])
    layers = render_batch(blended, [42] * len(blended)).astype(np.float32)
    mixed = np.tensordot(np.asarray(weights, dtype=np.float32), layers, axes=1)
    assert np.all(mixed >= layers.min(axis=0) - 1e-3) and np.all(mixed <= layers.max(axis=0) + 1e-3)
    assert abs(sum(weights) - 1) < 1e-6 and clause


def test_the_base_mix_is_unchanged_by_the_partial_option():
    """World v1's stream: a mix without partial styles draws the same renders and prompts as before it existed."""
    images, prompts = training_batch(np.random.default_rng(5), 8)
    assert prompts[0] == "a small red triangle on the left, gray background, in the style of van gogh"
    assert hashlib.sha256(images.numpy().tobytes()).hexdigest()[:12] == "66dca0a28d25"


def test_noisy_captions_name_wrong_values_at_the_asked_rate_and_never_a_held_out_pair():
    """World v2's base learns from captions whose content attributes are each wrong with probability p (web
    alt-text), so it draws crisp scenes that sometimes miss the prompt; no caption names a micro-test pair."""
    from rpo_bench.micro.scenes import CONTENT_ATTRIBUTES, HELD_OUT_PAIRS, parse_prompt, sample_scenes
    from rpo_bench.micro.training_data import miscaption

    rng = np.random.default_rng(0)
    scenes = sample_scenes(rng, 2000, split="train", styles=("plain",))
    captioned = [miscaption(scene, rng, 0.2, "train") for scene in scenes]
    wrong = np.mean([[getattr(a, k) != getattr(b, k) for k in CONTENT_ATTRIBUTES]
                     for a, b in zip(scenes, captioned, strict=True)])
    assert 0.17 < wrong < 0.21  # a held-out pair is never the swap, so a few swaps have fewer choices
    assert not any(scene.held_out for scene in captioned)
    _, prompts = training_batch(np.random.default_rng(1), 400, caption_noise=0.3)
    assert not any((parse_prompt(p).get("shape"), parse_prompt(p).get("colour")) in HELD_OUT_PAIRS for p in prompts)
