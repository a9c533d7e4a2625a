"""The micro world's prompt sets, written as the project's prompt files (prompts/micro-*.jsonl).

- micro-train: every plain scene of the seen shape x colour pairs (216), category = shape.
- micro-test: all 108 held-out scenes (category "unseen") plus 36 seen scenes (category "seen") as a control,
  balanced over every attribute value, so a report shows the generalisation gap directly.
- micro-style-<S>: 36 held-out scenes as plain content prompts (category "content": a style-aligned model should
  show the style without being asked) and the same scenes with S's words (category "worded").
Regenerate: `python -m rpo_bench.micro.prompt_files` (deterministic for a seed; tests check the files match).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from rpo_bench.core.atomic import atomic_write
from rpo_bench.micro.scenes import (
    BACKGROUNDS,
    COLOURS,
    HELD_OUT_PAIRS,
    POSITIONS,
    SHAPES,
    SIZES,
    STYLES,
    Scene,
    all_scenes,
    scene_prompt,
)

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"
ALIGNMENT_STYLES = tuple(style for style in STYLES if style != "plain")


def _records(scenes: list[tuple[Scene, str]], rng: np.random.Generator) -> list[dict[str, str]]:
    """Shuffled, so that the first k prompts of a file are a fair sample of it."""
    order = rng.permutation(len(scenes))
    return [{"prompt": scene_prompt(scenes[i][0]), "category": scenes[i][1]} for i in order]


def _seen_controls() -> list[Scene]:
    """Three scenes per seen pair; across them every size, position and background appears equally often."""
    seen = [(shape, colour) for shape in SHAPES for colour in COLOURS if (shape, colour) not in HELD_OUT_PAIRS]
    return [Scene(shape, colour, SIZES[(k + j) % 2], POSITIONS[j], BACKGROUNDS[(j + k) % 3])
            for k, (shape, colour) in enumerate(seen) for j in range(3)]


def _style_content(style_index: int) -> list[Scene]:
    """Six scenes per held-out pair, one per size x position combination, backgrounds rotating with the style."""
    pairs = sorted(HELD_OUT_PAIRS)
    return [Scene(shape, colour, SIZES[j % 2], POSITIONS[j % 3], BACKGROUNDS[(j + k + style_index) % 3])
            for k, (shape, colour) in enumerate(pairs) for j in range(6)]


def micro_prompt_sets(seed: int = 0) -> dict[str, list[dict[str, str]]]:
    """Set name -> records ({"prompt", "category"}), in the order they are written."""
    rng = np.random.default_rng(seed)
    sets = {"micro-train": _records([(s, s.shape) for s in all_scenes("train")], rng),
            "micro-test": _records([(s, "unseen") for s in all_scenes("test")]
                                   + [(s, "seen") for s in _seen_controls()], rng)}
    for index, style in enumerate(ALIGNMENT_STYLES):
        content = _style_content(index)
        sets[f"micro-style-{style}"] = _records([(s, "content") for s in content]
                                                + [(replace(s, style=style), "worded") for s in content], rng)
    return sets


def write_prompt_files(out_dir: str | Path = PROMPTS_DIR, seed: int = 0) -> list[Path]:
    """Write every micro prompt set atomically; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, records in micro_prompt_sets(seed).items():
        path = out / f"{name}.jsonl"
        atomic_write(path, "".join(json.dumps(record) + "\n" for record in records))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the micro world's prompt files.")
    parser.add_argument("--out", default=str(PROMPTS_DIR))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in write_prompt_files(args.out, args.seed):
        print(path)


if __name__ == "__main__":
    main()
