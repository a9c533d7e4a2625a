"""The micro world's grammar: what a scene is, how it is worded, how prompts are read back, and the split.

A scene is the *content* of an image (what a prompt can ask for). Rendering nuisances (small jitter, texture
phase) belong to the renderer's seed, so that one prompt has many valid images, as in real text-to-image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from itertools import product

import numpy as np

from rpo_bench.core.errors import BadInputError

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES = ("small", "large")
POSITIONS = ("left", "center", "right")
BACKGROUNDS = ("gray", "white", "black")
STYLES = ("plain", "sketch", "vangogh", "pixel", "watercolor")
CONTENT_ATTRIBUTES = ("shape", "colour", "size", "position", "background")
ATTRIBUTES = (*CONTENT_ATTRIBUTES, "style")
VOCABULARIES: dict[str, tuple[str, ...]] = {"shape": SHAPES, "colour": COLOURS, "size": SIZES,
                                            "position": POSITIONS, "background": BACKGROUNDS, "style": STYLES}

# The held-out rule: a shape x colour pair is held out when (colour index + 1) % 3 == shape index. That holds out
# six pairs, every colour exactly once and every shape twice (red and yellow squares, green and purple triangles,
# blue and orange circles), so `micro-test` asks for each attribute value yet only in combinations never trained on.
HELD_OUT_PAIRS = frozenset((SHAPES[(c + 1) % 3], colour) for c, colour in enumerate(COLOURS))

POSITION_WORDS = {"left": "on the left", "center": "in the center", "right": "on the right"}
STYLE_TEMPLATES = {"plain": "{}", "sketch": "a pencil sketch of {}", "vangogh": "{}, in the style of van gogh",
                   "pixel": "pixel art of {}", "watercolor": "a watercolor painting of {}"}


@dataclass(frozen=True)
class Scene:
    shape: str = "circle"
    colour: str = "red"
    size: str = "large"
    position: str = "center"
    background: str = "gray"
    style: str = "plain"

    def __post_init__(self):
        for attribute, vocabulary in VOCABULARIES.items():
            if getattr(self, attribute) not in vocabulary:
                raise BadInputError(f"micro scene: unknown {attribute} {getattr(self, attribute)!r}; "
                                    f"accepted: {', '.join(vocabulary)}")

    @property
    def held_out(self) -> bool:
        return (self.shape, self.colour) in HELD_OUT_PAIRS

    def as_dict(self) -> dict[str, str]:
        return {attribute: getattr(self, attribute) for attribute in ATTRIBUTES}


def scene_prompt(scene: Scene) -> str:
    """"a large red circle on the left, gray background", wrapped in the style's words for non-plain styles."""
    content = (f"a {scene.size} {scene.colour} {scene.shape} {POSITION_WORDS[scene.position]}, "
               f"{scene.background} background")
    return STYLE_TEMPLATES[scene.style].format(content)


# Synonyms users and captioners write; each maps to one vocabulary value. Longest phrases are matched first.
_SYNONYMS: dict[str, dict[str, str]] = {
    "shape": {"circle": "circle", "disc": "circle", "disk": "circle", "round": "circle", "square": "square",
              "box": "square", "triangle": "triangle", "triangular": "triangle"},
    "colour": {c: c for c in COLOURS} | {"violet": "purple"},
    "size": {"small": "small", "tiny": "small", "little": "small", "large": "large", "big": "large",
             "huge": "large"},
    "position": {"left": "left", "right": "right", "center": "center", "centre": "center", "middle": "center",
                 "centered": "center", "centred": "center"},
    "background": {"gray": "gray", "grey": "gray", "white": "white", "black": "black"},
    "style": {"pencil sketch": "sketch", "sketch": "sketch", "pencil drawing": "sketch", "van gogh": "vangogh",
              "vangogh": "vangogh", "pixel art": "pixel", "pixel-art": "pixel", "8-bit": "pixel",
              "watercolor": "watercolor", "watercolour": "watercolor", "plain": "plain"},
}
_TONE = r"(gray|grey|white|black)"
_BACKGROUND_RE = re.compile(rf"\b{_TONE}\s+(?:back)?ground\b|\bbackground\s+(?:is\s+)?{_TONE}\b")


def _find(words: dict[str, str], text: str) -> str | None:
    """The value of the earliest synonym in the text (whole words only); None when none or conflicting values."""
    hits = sorted((m.start(), value) for phrase, value in words.items()
                  for m in re.finditer(rf"\b{re.escape(phrase)}\b", text))
    values = {value for _, value in hits}
    return hits[0][1] if len(values) == 1 else None


def parse_prompt(prompt: str) -> dict[str, str]:
    """The attributes a prompt asks for, and only those: a judge must not score what was never requested.

    Ambiguous mentions (two different colours for the object) are left out rather than guessed.
    """
    text = prompt.lower()
    requested: dict[str, str] = {}
    background = _BACKGROUND_RE.search(text)
    if background:
        requested["background"] = _SYNONYMS["background"][background.group(1) or background.group(2)]
        text = text[:background.start()] + " " + text[background.end():]
    for attribute in ("shape", "colour", "size", "position", "style"):
        value = _find(_SYNONYMS[attribute], text)
        if value is not None:
            requested[attribute] = value
    return {attribute: requested[attribute] for attribute in ATTRIBUTES if attribute in requested}


def all_scenes(split: str = "all", styles: tuple[str, ...] = ("plain",)) -> list[Scene]:
    """Every scene of a split in a fixed order: "train" (seen shape x colour pairs), "test" (held out) or "all"."""
    if split not in ("train", "test", "all"):
        raise BadInputError(f"micro split {split!r}; accepted: train, test, all")
    scenes = [Scene(*values) for values in product(SHAPES, COLOURS, SIZES, POSITIONS, BACKGROUNDS, styles)]
    if split == "all":
        return scenes
    return [scene for scene in scenes if scene.held_out == (split == "test")]


def sample_scenes(rng: np.random.Generator, n: int, split: str = "all",
                  styles: tuple[str, ...] = STYLES) -> list[Scene]:
    """n scenes drawn uniformly from a split (with replacement), styles uniform too: seeded, so reproducible."""
    pool = all_scenes(split, styles=("plain",))
    picks = rng.integers(0, len(pool), size=n)
    style_picks = rng.integers(0, len(styles), size=n)
    return [replace(pool[i], style=styles[s]) for i, s in zip(picks, style_picks, strict=True)]
