"""The micro world's renderer and grammar: determinism, distinct styles, prompt round trips, a clean split."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from rpo_bench.core.errors import BadInputError
from rpo_bench.micro import prompt_files
from rpo_bench.micro.render import render, render_array, render_batch
from rpo_bench.micro.scenes import (
    ATTRIBUTES,
    COLOURS,
    HELD_OUT_PAIRS,
    SHAPES,
    STYLES,
    Scene,
    all_scenes,
    parse_prompt,
    sample_scenes,
    scene_prompt,
)

SCENE = Scene("triangle", "orange", "large", "left", "white", "vangogh")


@pytest.mark.parametrize("style", STYLES)
def test_render_is_deterministic(style):
    scene = replace(SCENE, style=style)
    assert render(scene).tobytes() == render(scene).tobytes()
    assert render(scene, seed=7).tobytes() == render(scene, seed=7).tobytes()
    assert render(scene, seed=7).tobytes() != render(scene, seed=8).tobytes()  # seeds vary the image...
    assert render(scene).size == (32, 32) and render(scene).mode == "RGB"


def test_batch_equals_single_renders_and_other_sizes_work():
    scenes = sample_scenes(np.random.default_rng(0), 20)
    seeds = list(range(20))
    batch = render_batch(scenes, seeds)
    assert batch.shape == (20, 32, 32, 3) and batch.dtype == np.uint8
    for i in (0, 7, 19):
        assert np.array_equal(batch[i], render_array(scenes[i], seed=seeds[i]))
    assert render_array(SCENE, size=64, supersample=2).shape == (64, 64, 3)


def test_sampling_is_seeded():
    first = sample_scenes(np.random.default_rng(5), 50)
    assert first == sample_scenes(np.random.default_rng(5), 50)
    assert first != sample_scenes(np.random.default_rng(6), 50)


def _stats(image: np.ndarray) -> dict[str, float]:
    rgb = image.astype(float)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    chroma = rgb.max(-1) - rgb.min(-1)
    border_chroma = np.median(border.max(-1) - border.min(-1))
    return {"border_std": float(border.std(0).mean()), "unique": len(np.unique(image.reshape(-1, 3), axis=0)),
            "graphite": int(((rgb.mean(-1) < 90) & (chroma < 20)).sum()),
            "object_chroma": float(np.clip(chroma - border_chroma, 0, None).sum())}


def test_each_style_has_its_signature():
    """Measured on the same content in every style: what a viewer (and the style metric) tells them apart by."""
    scenes = [Scene(shape, colour, "large", "center", "white") for shape in SHAPES for colour in COLOURS[:3]]
    stats = {style: [_stats(render_array(replace(s, style=style), seed=i)) for i, s in enumerate(scenes)]
             for style in STYLES}

    def mean(style, key):
        return float(np.mean([row[key] for row in stats[style]]))

    assert mean("plain", "border_std") == 0.0  # flat background
    assert mean("vangogh", "border_std") == max(mean(s, "border_std") for s in STYLES) > 10  # swirling sky
    assert mean("pixel", "unique") <= 4 < min(mean(s, "unique") for s in STYLES if s != "pixel")  # no antialiasing
    assert mean("sketch", "graphite") > 5 and all(mean(s, "graphite") == 0 for s in ("plain", "watercolor"))
    assert mean("watercolor", "object_chroma") < 0.75 * mean("plain", "object_chroma")  # pale washes
    for a in STYLES:  # and every pair of styles differs clearly on the same scene
        for b in STYLES[STYLES.index(a) + 1:]:
            diff = np.abs(render_array(replace(SCENE, style=a)).astype(int) - render_array(replace(SCENE, style=b)))
            assert diff.mean() > 8, (a, b)


def test_prompt_round_trip_for_every_scene_and_style():
    for scene in all_scenes("all", styles=STYLES):
        expected = {a: getattr(scene, a) for a in ATTRIBUTES if not (a == "style" and scene.style == "plain")}
        assert parse_prompt(scene_prompt(scene)) == expected, scene
    expected = "a large red circle on the left, gray background"
    assert scene_prompt(Scene("circle", "red", "large", "left", "gray")) == expected


def test_parse_prompt_reads_only_what_is_asked():
    assert parse_prompt("a photo of a dog") == {}
    assert parse_prompt("A big grey box in the middle") == {"shape": "square", "size": "large", "position": "center"}
    assert parse_prompt("a red circle on a white background") == {"shape": "circle", "colour": "red",
                                                                  "background": "white"}
    assert "colour" not in parse_prompt("a red and blue circle")  # ambiguous: not guessed
    assert parse_prompt("a tiny triangle, watercolour") == {"shape": "triangle", "size": "small", "style": "watercolor"}


def test_unknown_attribute_values_are_refused():
    with pytest.raises(BadInputError, match="unknown colour 'teal'"):
        Scene(colour="teal")


def test_held_out_split_is_disjoint_and_covers_every_value():
    train, test = set(all_scenes("train")), set(all_scenes("test"))
    assert not train & test and train | test == set(all_scenes("all"))
    assert {(s.shape, s.colour) for s in test} == set(HELD_OUT_PAIRS)
    assert {s.shape for s in test} == set(SHAPES) and {s.colour for s in test} == set(COLOURS)
    assert all((s.shape, s.colour) not in HELD_OUT_PAIRS for s in sample_scenes(np.random.default_rng(0), 200, "train"))


def test_prompt_files_are_current_and_respect_the_split():
    sets = prompt_files.micro_prompt_sets()
    for name, records in sets.items():
        lines = (prompt_files.PROMPTS_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        hint = f"{name} is stale: python -m rpo_bench.micro.prompt_files"
        assert [json.loads(line) for line in lines] == records, hint
    pairs = {name: [(parse_prompt(r["prompt"]), r["category"]) for r in records] for name, records in sets.items()}
    assert all((p["shape"], p["colour"]) not in HELD_OUT_PAIRS for p, _ in pairs["micro-train"])
    assert all(((p["shape"], p["colour"]) in HELD_OUT_PAIRS) == (c == "unseen") for p, c in pairs["micro-test"])
    assert 120 <= len(pairs["micro-test"]) <= 200
    for style in prompt_files.ALIGNMENT_STYLES:
        rows = pairs[f"micro-style-{style}"]
        assert all(("style" in p) == (c == "worded") and p.get("style", style) == style for p, c in rows)
        assert all((p["shape"], p["colour"]) in HELD_OUT_PAIRS for p, _ in rows)
