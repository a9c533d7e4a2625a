"""The images and prompts both sides score: deterministic, made with numpy and PIL, no download.

The images are chosen to exercise what preprocessing can get wrong: odd sizes and aspect ratios (resize of the
shorter side, centre crop), a tiny image (upsampling), a 224 x 224 image (no resize at all), an RGBA and a
grayscale image (conversion to RGB). The prompts include punctuation and non-ASCII text (tokenizer cleaning) and a
prompt longer than CLIP's 77 and ImageReward's 35 tokens (truncation). They are written as PNG files (lossless,
mode kept), so both virtualenvs read byte-identical inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

# What --only accepts, and the scorers each name stands for (rpo-bench metric names).
SCORER_GROUPS = {"hps": ["hpsv2", "hpsv2.1"], "hpsv2": ["hpsv2"], "hpsv2.1": ["hpsv2.1"],
                 "imagereward": ["imagereward"], "pickscore": ["pickscore"], "aesthetic": ["aesthetic"]}
DEFAULT_GROUPS = "hps,imagereward,pickscore,aesthetic"

LONG_PROMPT = (
    "a highly detailed oil painting of an old lighthouse standing on a rocky cliff above a stormy sea at dusk, "
    "with crashing waves, seagulls circling the lamp, a small fishing boat fighting the swell in the foreground, "
    "dramatic clouds lit in orange and purple by the setting sun, rain streaks, wet rocks reflecting the light, "
    "a winding path with a wooden fence leading up to the keeper's cottage, warm light in its windows, "
    "in the style of the romantic painters of the nineteenth century, trending on artstation, 8k, masterpiece"
)

# (file stem, width, height, PIL mode, prompt)
CASES = [
    ("square_512", 512, 512, "RGB", "a photo of a cat sitting on a windowsill"),
    ("landscape_640x480", 640, 480, "RGB", "a red car parked next to a blue house, at sunset"),
    ("odd_333x517", 333, 517, "RGB", "Café au lait — “quoted” words, émojis 🎨✨ & punctuation?! (50% off)"),
    ("tiny_100x60", 100, 60, "RGB", LONG_PROMPT),
    ("rgba_300x300", 300, 300, "RGBA", "an astronaut riding a horse on the moon"),
    ("gray_256x384", 256, 384, "L", "A charcoal drawing of mountains, in the style of Van Gogh"),
    ("large_1024x768", 1024, 768, "RGB", "two dogs playing in the snow, golden hour"),
    ("exact_224", 224, 224, "RGB", "a bowl of fruit on a wooden table, studio lighting"),
]


def make_image(index: int, width: int, height: int, mode: str) -> Image.Image:
    """Smooth colour fields, stripes, a disc and noise: varied content at several frequencies, so that resizing
    differences would show and the random models' scores differ from image to image."""
    rng = np.random.default_rng(1000 + index)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    x, y = x / max(width - 1, 1), y / max(height - 1, 1)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(1, 12, size=2).tolist() + [rng.uniform(0, 2 * np.pi)]
        field = 0.5 + 0.25 * np.sin(2 * np.pi * (fx * x + fy * y) + phase) + 0.25 * rng.uniform(-1, 1) * (x - y)
        channels.append(field)
    img = np.stack(channels, axis=-1)
    cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
    disc = (x - cx) ** 2 + (y - cy) ** 2 < r ** 2
    img[disc] = rng.uniform(0, 1, size=3)
    img[(np.floor(x * 16) % 2 == 0) & (y > 0.8)] *= 0.3  # a band of hard-edged stripes
    img += rng.normal(0, 0.04, size=img.shape)
    rgb = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    image = Image.fromarray(rgb, "RGB")
    if mode == "RGBA":
        alpha = (np.clip(0.3 + 0.7 * x, 0, 1) * 255).astype(np.uint8)  # a horizontal transparency ramp
        image = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    elif mode == "L":
        image = image.convert("L")
    return image


def write_inputs(folder: Path) -> Path:
    """Write the PNGs and `inputs.json` (file, prompt, size, mode for each pair) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for index, (stem, width, height, mode, prompt) in enumerate(CASES):
        name = f"{index:02d}_{stem}.png"
        make_image(index, width, height, mode).save(folder / name)
        pairs.append({"file": name, "prompt": prompt, "size": [width, height], "mode": mode})
    (folder / "inputs.json").write_text(json.dumps(pairs, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return folder


def read_inputs(folder: Path) -> tuple[list[Image.Image], list[str], list[dict]]:
    """(images as opened from the PNGs, prompts, the pair descriptions)."""
    pairs = json.loads((folder / "inputs.json").read_text(encoding="utf-8"))
    images = []
    for pair in pairs:
        with Image.open(folder / pair["file"]) as image:
            image.load()
            images.append(image)
    return images, [p["prompt"] for p in pairs], pairs
