"""Deterministic procedural renderer of micro scenes: numpy only, thousands of 32x32 images per second.

Shapes are signed distance fields; edges and fine textures are computed on a supersampled grid (only in the
object's bounding box) and box-filtered down, colour is composited at the output size. Every style keeps the
content readable (shape, hue, size, position, background tone) and adds its own visual signature:
- plain: flat colour on a flat background.
- sketch: toned paper with grain, a graphite outline and diagonal coloured-pencil hatching.
- vangogh: saturated palette, swirling brush strokes in the sky, strokes following the object's contour.
- pixel: no antialiasing, a one-pixel dark outline and a 2x2 checker-dithered background.
- watercolor: pale blotchy washes with soft wobbly edges and a darker wet rim, on light paper.
Arithmetic is float32 (numpy's float64 sine is 15x slower here); identical arguments give identical bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image

from rpo_bench.micro.scenes import Scene

COLOUR_RGB = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 225), "yellow": (235, 215, 35),
              "purple": (145, 60, 200), "orange": (250, 130, 20)}
# Each style renders the three background tones its own way (paper, night sky, ...): light / mid / dark.
BACKGROUND_RGB = {
    "plain": {"white": (245, 245, 245), "gray": (128, 128, 128), "black": (15, 15, 15)},
    "sketch": {"white": (242, 238, 226), "gray": (172, 168, 158), "black": (48, 47, 50)},
    "vangogh": {"white": (238, 228, 190), "gray": (92, 112, 150), "black": (18, 26, 70)},
    "pixel": {"white": (236, 240, 236), "gray": (120, 124, 132), "black": (22, 20, 34)},
    "watercolor": {"white": (250, 247, 240), "gray": (186, 184, 178), "black": (58, 56, 62)},
}
X_CENTRES = {"left": 0.25, "center": 0.5, "right": 0.75}
RADII = {"small": 0.11, "large": 0.2}  # radius of the equal-area circle, as a fraction of the image side
SQUARE_HALF = 0.886  # half side of the square with the circle's area, per unit radius
TRIANGLE_R = 1.4  # triangle circumradius per unit radius (a little under equal area, so large ones fit the frame)
EXTENT = {"circle": 1.0, "square": SQUARE_HALF * math.sqrt(2), "triangle": TRIANGLE_R}
F32 = np.float32


@lru_cache(maxsize=16)
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1], read-only and shared between renders."""
    u = ((np.arange(n) + 0.5) / n).astype(F32)
    y, x = np.meshgrid(u, u, indexing="ij")
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _geometry(scene: Scene, rng: np.random.Generator | None) -> tuple[float, float, float, float]:
    """Centre, radius and rotation; a seeded render jitters them a little, never across an attribute boundary."""
    cx, cy, r, rot = X_CENTRES[scene.position], 0.5, RADII[scene.size], 0.0
    if rng is not None:
        jitter = rng.uniform(-1.0, 1.0, size=4)
        cx += 0.03 * jitter[0]
        cy += 0.07 * jitter[1]
        r *= 1.0 + 0.1 * jitter[2]
        rot = math.radians(12.0 * jitter[3]) if scene.shape != "circle" else 0.0
    return float(cx), float(cy), float(r), float(rot)


def signed_distance(shape: str, x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float,
                    rot: float) -> np.ndarray:
    """Negative inside the shape; exact for the circle, a bound for the polygons (enough for antialiasing)."""
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - r
    c, s = math.cos(rot), math.sin(rot)
    qx, qy = c * dx + s * dy, c * dy - s * dx
    if shape == "square":
        return np.maximum(np.abs(qx), np.abs(qy)) - SQUARE_HALF * r
    # pointing up (image y grows downwards), centroid at the centre, inradius = circumradius / 2
    return np.maximum(np.maximum(qy, 0.866 * qx - 0.5 * qy), -0.866 * qx - 0.5 * qy) - 0.5 * TRIANGLE_R * r


def _value_noise(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: a random (cells+1)^2 lattice, bilinearly upsampled to n x n."""
    lattice = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1)).astype(F32)
    t = (np.arange(n) + 0.5) / n * cells
    i = np.minimum(t.astype(int), cells - 1)
    f = (t - i).astype(F32)
    rows = lattice[i] * (1 - f)[:, None] + lattice[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _coverage(d: np.ndarray, pixel: float, softness: float = 1.0) -> np.ndarray:
    return np.clip(0.5 - d * (1.0 / (pixel * softness)), 0.0, 1.0)


def _box(field: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter down by an integer factor: the supersampling's antialiasing."""
    if factor == 1:
        return field
    h, w = field.shape[0] // factor, field.shape[1] // factor
    return field.reshape(h, factor, w, factor, *field.shape[2:]).mean(axis=(1, 3), dtype=F32)


def _object_field(field, shape: str, size: int, ss: int, geo, pad: float = 0.04) -> np.ndarray:
    """field(x, y, d) on the supersampled grid of the object's bounding box only, box-filtered into a
    size x size array of zeros: most of the image is background and needs no supersampling."""
    cx, cy, r, _ = geo
    reach = EXTENT[shape] * r + pad
    r0, r1 = max(int((cy - reach) * size), 0), min(math.ceil((cy + reach) * size), size)
    c0, c1 = max(int((cx - reach) * size), 0), min(math.ceil((cx + reach) * size), size)
    out = np.zeros((size, size), dtype=F32)
    if r1 <= r0 or c1 <= c0:
        return out
    x, y = _grid(size * ss)
    window = (slice(r0 * ss, r1 * ss), slice(c0 * ss, c1 * ss))
    xw, yw = x[window], y[window]
    out[r0:r1, c0:c1] = _box(field(xw, yw, signed_distance(shape, xw, yw, *geo), window), ss)
    return out


def _mix(base: np.ndarray, colour, alpha: np.ndarray) -> np.ndarray:
    return base + (np.asarray(colour, dtype=F32) - base) * alpha[..., None]


def _flat(n: int, colour, shade: np.ndarray | float = 1.0) -> np.ndarray:
    return np.asarray(colour, dtype=F32) * np.broadcast_to(np.asarray(shade, dtype=F32), (n, n))[..., None]


def _plain(scene, size, ss, geo, rng):
    pixel = 1.0 / (size * ss)
    alpha = _object_field(lambda x, y, d, w: _coverage(d, pixel), scene.shape, size, ss, geo)
    return _mix(_flat(size, BACKGROUND_RGB["plain"][scene.background]), COLOUR_RGB[scene.colour], alpha)


@lru_cache(maxsize=16)
def _diagonal_index(n: int) -> np.ndarray:
    index = np.add.outer(np.arange(n), np.arange(n))
    index.flags.writeable = False
    return index


def _sketch(scene, size, ss, geo, rng):
    n = size * ss
    pixel = 1.0 / n
    grain = 1.0 + 0.035 * _value_noise(rng, size, max(size // 3, 2)) + 0.02 * _value_noise(rng, size, 4)
    image = _flat(size, BACKGROUND_RGB["sketch"][scene.background], grain)
    diagonal = (np.arange(2 * n - 1) + 1.0) / n  # x + y takes only 2n - 1 values: hatch those once
    stripes = np.clip(np.sin(2 * np.pi * (diagonal / 0.095 + rng.uniform(0, 1))) * 2.2 - 0.3, 0, 1).astype(F32)
    hatch = _object_field(lambda x, y, d, w: stripes[_diagonal_index(n)[w]] * _coverage(d, pixel),
                          scene.shape, size, ss, geo)
    image = _mix(image, COLOUR_RGB[scene.colour], 0.85 * hatch)
    outline = _object_field(lambda x, y, d, w: _coverage(np.abs(d) - 0.022, pixel), scene.shape, size, ss, geo)
    graphite = (215, 215, 210) if scene.background == "black" else (55, 55, 60)
    return _mix(image, graphite, (0.78 + 0.2 * _value_noise(rng, size, 6)) * outline)


@lru_cache(maxsize=4)
def _swirl_bank(m: int, count: int = 64) -> np.ndarray:
    """Skies of three spiral vortices each (every pixel follows its nearest vortex), drawn once from a fixed
    seed: trig on every render would cost more than all the rest. With 8 flips/turns: 512 distinct skies."""
    rng = np.random.default_rng(20240611)
    x, y = _grid(m)
    bank = np.empty((count, m, m), dtype=F32)
    for k in range(count):
        nearest = np.full(x.shape, np.inf, dtype=F32)
        for vx, vy in rng.uniform(0.1, 0.9, size=(3, 2)):
            rho = np.sqrt((x - vx) ** 2 + (y - vy) ** 2)
            closer = rho < nearest
            nearest = np.where(closer, rho, nearest)
            bank[k] = np.where(closer, np.sin(2 * np.pi * rho / 0.11 + 2.0 * np.arctan2(y - vy, x - vx)), bank[k])
    bank.flags.writeable = False
    return bank


def _vangogh(scene, size, ss, geo, rng):
    """Textures at twice the output size: fine enough for strokes two to three output pixels wide."""
    factor = min(ss, 2)
    m = size * factor
    x, y = _grid(m)
    pick = rng.integers(0, 8 * 64)
    swirl = np.rot90(_swirl_bank(m)[pick % 64], k=(pick // 64) % 4)
    swirl = swirl.T if pick >= 4 * 64 else swirl
    accent = (250, 215, 70) if scene.background != "white" else (70, 110, 200)
    image = _flat(m, BACKGROUND_RGB["vangogh"][scene.background], 1.0 + 0.18 * swirl)
    image = _mix(image, accent, 0.4 * np.clip(swirl - 0.35, 0.0, 1.0))
    d = signed_distance(scene.shape, x, y, *geo) + 0.006 * swirl  # a brush-made, slightly ragged edge
    strokes = np.sin((2 * np.pi / 0.075) * d + 1.5 * _value_noise(rng, m, 5))
    colour = np.asarray(COLOUR_RGB[scene.colour], dtype=F32)
    saturated = np.clip(colour.mean() + 1.25 * (colour - colour.mean()), 0, 255)
    alpha = _coverage(d, 1.0 / m)
    body = saturated * (1.0 + 0.25 * strokes)[..., None]
    return _box(image + (body - image) * alpha[..., None], factor)


def _pixel(scene, size, ss, geo, rng):
    """One output pixel per sprite cell: 2x2 cells would make small shapes unreadable at 32 pixels."""
    x, y = _grid(size)
    inside = signed_distance(scene.shape, x, y, *geo) < 0
    ring = np.zeros_like(inside)
    ring[1:] |= inside[:-1]
    ring[:-1] |= inside[1:]
    ring[:, 1:] |= inside[:, :-1]
    ring[:, :-1] |= inside[:, 1:]
    ring &= ~inside
    cells = np.arange(size) // 2
    image = _flat(size, BACKGROUND_RGB["pixel"][scene.background], 1.0 - 0.1 * (np.add.outer(cells, cells) % 2))
    colour = np.asarray(COLOUR_RGB[scene.colour], dtype=F32)
    image = np.where(inside[..., None], colour, image)
    return np.where(ring[..., None], colour * 0.4, image)


def _watercolor(scene, size, ss, geo, rng):
    """Everything here is soft, so the output grid suffices (the edge ramp spans 1.5 pixels)."""
    x, y = _grid(size)
    image = _flat(size, BACKGROUND_RGB["watercolor"][scene.background],
                  1.0 + 0.02 * _value_noise(rng, size, max(size // 4, 2)))
    d = signed_distance(scene.shape, x, y, *geo) + 0.018 * _value_noise(rng, size, 5)
    wash = _coverage(d, 1.0 / size, softness=1.5)
    rim = np.clip(1.0 - np.abs(d + 0.02) / 0.02, 0.0, 1.0) * wash
    blotch = 0.5 + 0.12 * _value_noise(rng, size, 7)
    return _mix(image, COLOUR_RGB[scene.colour], np.clip(wash * blotch + 0.35 * rim, 0.0, 0.95))


STYLE_PAINTERS = {"plain": _plain, "sketch": _sketch, "vangogh": _vangogh, "pixel": _pixel,
                  "watercolor": _watercolor}


def render_array(scene: Scene, size: int = 32, supersample: int = 4, seed: int | None = None) -> np.ndarray:
    """uint8 (size, size, 3). seed None: the canonical image; an int: jittered geometry and its own texture."""
    rng = np.random.default_rng(0 if seed is None else seed)
    jittered = _geometry(scene, rng)  # drawn either way, so the texture stream does not depend on it
    geometry = _geometry(scene, None) if seed is None else jittered
    image = STYLE_PAINTERS[scene.style](scene, size, supersample, geometry, rng)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render(scene: Scene, size: int = 32, supersample: int = 4, seed: int | None = None) -> Image.Image:
    """The scene as an RGB image; identical bytes for identical arguments."""
    return Image.fromarray(render_array(scene, size, supersample, seed), mode="RGB")


def render_batch(scenes: Sequence[Scene], seeds: Sequence[int | None] | None = None, size: int = 32,
                 supersample: int = 4) -> np.ndarray:
    """uint8 (N, size, size, 3), for training loops that want arrays rather than PIL images."""
    seeds = [None] * len(scenes) if seeds is None else list(seeds)
    out = np.empty((len(scenes), size, size, 3), dtype=np.uint8)
    for i, (scene, seed) in enumerate(zip(scenes, seeds, strict=True)):
        out[i] = render_array(scene, size, supersample, seed)
    return out
