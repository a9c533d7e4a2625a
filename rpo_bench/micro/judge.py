"""The micro world's ground-truth judge: a hybrid of a small CNN and two analytic measurements.

Why hybrid: a CNN trained on degraded renders stays right about shape, size, background and style on blurry,
blobby generations where measurements fail, while the hue of the object's pixels and the centroid of its mask
are the more trustworthy readings of colour and position on generated images. Where both parts read the same
attribute (colour, position) the judge reports whether they agree, so a disagreement rate flags images the
judge itself finds ambiguous.

Retrain (deterministic for a given seed, step count and torch build):
    python -m rpo_bench.micro.judge --seed 0 --steps 3000 --out rpo_bench/micro/assets
"""

from __future__ import annotations

import argparse
import colorsys
import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from rpo_bench.core.atomic import atomic_path, atomic_write
from rpo_bench.core.errors import BadInputError, MissingWeightsError
from rpo_bench.core.progress import progress_bar
from rpo_bench.micro.degrade import DEGRADATIONS, augment
from rpo_bench.micro.render import COLOUR_RGB, X_CENTRES, render_batch
from rpo_bench.micro.scenes import ATTRIBUTES, STYLES, VOCABULARIES, parse_prompt, sample_scenes

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
WEIGHTS_FILE, CONFIG_FILE = "judge.safetensors", "judge.json"
IMAGE_SIZE = 32
TRAIN_SEED_FLOOR = 2**32  # training renders use seeds >= this; any smaller render seed is fresh to the judge
ANALYTIC = ("colour", "position")
_HUES = np.array([colorsys.rgb_to_hsv(*(c / 255 for c in COLOUR_RGB[name]))[0] for name in VOCABULARIES["colour"]])
_X_CENTRES = np.array([X_CENTRES[p] for p in VOCABULARIES["position"]])


class JudgeNet(nn.Module):
    """Four 3x3 convolutions and one hidden layer, a head per attribute: ~100k parameters, 400 kB."""

    def __init__(self, width: int = 16, hidden: int = 64):
        super().__init__()
        w = width

        def block(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.features = nn.Sequential(*block(3, w), *block(w, 2 * w, stride=2), *block(2 * w, 2 * w),
                                      nn.MaxPool2d(2), *block(2 * w, 4 * w), nn.MaxPool2d(2), nn.Flatten(),
                                      nn.Linear(4 * w * (IMAGE_SIZE // 8) ** 2, hidden), nn.ReLU())
        self.heads = nn.ModuleDict({a: nn.Linear(hidden, len(VOCABULARIES[a])) for a in ATTRIBUTES})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (N, 3, 32, 32) in [0, 1] -> logits per attribute."""
        h = self.features((x - 0.5) / 0.25)
        return {a: head(h) for a, head in self.heads.items()}


def to_tensor(images: Sequence[Image.Image] | np.ndarray) -> torch.Tensor:
    """PIL images (any size, resized with a box filter) or a uint8 array (N, 32, 32, 3) -> float (N, 3, 32, 32)."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise BadInputError(f"micro judge: image arrays must be uint8, got {images.dtype}")
        array = images
    else:
        if len(images) == 0:
            return torch.zeros(0, 3, IMAGE_SIZE, IMAGE_SIZE)
        array = np.stack([np.asarray(_fit(image)) for image in images])
    if array.ndim != 4 or array.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise BadInputError(f"micro judge: expected images of {IMAGE_SIZE}x{IMAGE_SIZE}x3, got {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float() / 255.0


def _fit(image: Image.Image) -> Image.Image:
    image = image.convert("RGB")
    return image if image.size == (IMAGE_SIZE, IMAGE_SIZE) else image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)


def analytic_readings(x: torch.Tensor) -> tuple[list[str], list[str], np.ndarray]:
    """Colour (mean hue of the object, weighted by chroma cubed: its most vivid pixels, not the paper showing
    through hatching or a JPEG-smeared outline), position (centroid of its mask) and the mask's mass in pixels.
    The background is the median of the border; the object is what differs from it most."""
    rgb = x.permute(0, 2, 3, 1).numpy().astype(np.float64)
    n, h, w, _ = rgb.shape
    border = np.concatenate([rgb[:, :2].reshape(n, -1, 3), rgb[:, -2:].reshape(n, -1, 3),
                             rgb[:, :, :2].reshape(n, -1, 3), rgb[:, :, -2:].reshape(n, -1, 3)], 1)
    distance = np.linalg.norm(rgb - np.median(border, axis=1)[:, None, None], axis=-1)
    top = np.quantile(distance.reshape(n, -1), 0.99, axis=1)[:, None, None]
    mask = np.clip(distance / np.maximum(0.5 * top, 1e-6) - 1.0, 0.0, 1.0) * (top > 0.08)
    mass = mask.sum(axis=(1, 2))
    xs = (np.arange(w) + 0.5) / w
    centroid = (mask * xs[None, None]).sum(axis=(1, 2)) / np.maximum(mass, 1e-6)
    positions = [VOCABULARIES["position"][i] for i in np.abs(centroid[:, None] - _X_CENTRES).argmin(1)]
    chroma = rgb.max(-1) - rgb.min(-1)
    hue = _hue(rgb)
    weight = mask * chroma**3
    vector = (weight[..., None] * np.stack([np.cos(2 * np.pi * hue), np.sin(2 * np.pi * hue)], -1)).sum((1, 2))
    mean_hue = np.mod(np.arctan2(vector[:, 1], vector[:, 0]) / (2 * np.pi), 1.0)
    gap = np.abs(mean_hue[:, None] - _HUES[None])
    colours = [VOCABULARIES["colour"][i] for i in np.minimum(gap, 1 - gap).argmin(1)]
    return colours, positions, mass


def _hue(rgb: np.ndarray) -> np.ndarray:
    """HSV hue in [0, 1) of an (..., 3) array, vectorised (colorsys works on one pixel)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    high, low = rgb.max(-1), rgb.min(-1)
    span = np.maximum(high - low, 1e-9)
    hue = np.where(high == r, (g - b) / span, np.where(high == g, 2.0 + (b - r) / span, 4.0 + (r - g) / span))
    return np.mod(hue / 6.0, 1.0)


class MicroJudge:
    """Load once, then call `attributes`, `score` or `style_probability` on batches of images."""

    def __init__(self, net: JudgeNet, config: dict, device: str = "cpu"):
        self.net = net.to(device).eval()
        self.config = config
        self.device = device

    @classmethod
    def load(cls, folder: str | Path | None = None, device: str = "cpu") -> MicroJudge:
        from safetensors.torch import load_file  # noqa: PLC0415 - safetensors pulls torch: on first use

        folder = Path(folder) if folder else ASSETS_DIR
        weights, config_path = folder / WEIGHTS_FILE, folder / CONFIG_FILE
        if not weights.is_file() or not config_path.is_file():
            raise MissingWeightsError(f"micro judge weights are missing in {folder}; retrain them with "
                                      "`python -m rpo_bench.micro.judge --out DIR`")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        net = JudgeNet(**config["architecture"])
        net.load_state_dict(load_file(str(weights)))
        return cls(net, config, device)

    @torch.no_grad()
    def _forward(self, images) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        x = to_tensor(images)
        probs: dict[str, list[np.ndarray]] = {a: [] for a in ATTRIBUTES}
        for start in range(0, len(x), 512):
            logits = self.net(x[start:start + 512].to(self.device))
            for a in ATTRIBUTES:
                probs[a].append(torch.softmax(logits[a].float(), -1).cpu().numpy())
        return x, {a: np.concatenate(p) if p else np.zeros((0, len(VOCABULARIES[a]))) for a, p in probs.items()}

    def attributes(self, images) -> list[dict]:
        """Per image: the judged value of every attribute, the CNN's probabilities, and both parts' readings."""
        return self._judge(images)[0]

    def _judge(self, images) -> tuple[list[dict], list[bool]]:
        """`attributes`, plus per image whether an object was found, i.e. whether the measurements decided colour
        and position (the requested-value probabilities need to know which part the judge trusted)."""
        x, probs = self._forward(images)
        if len(x) == 0:
            return [], []
        colours, positions, mass = analytic_readings(x)
        results, measured = [], []
        for i in range(len(x)):
            cnn = {a: VOCABULARIES[a][int(probs[a][i].argmax())] for a in ATTRIBUTES}
            analytic = {"colour": colours[i], "position": positions[i]}
            final = dict(cnn)
            measured.append(bool(mass[i] >= 2.0))
            if measured[-1]:  # an object was found: trust the measurements for what they measure
                final.update(analytic)
            results.append({**final,
                            "probabilities": {a: dict(zip(VOCABULARIES[a], map(float, probs[a][i]), strict=True))
                                              for a in ATTRIBUTES},
                            "cnn": cnn, "analytic": analytic,
                            "agreement": {a: cnn[a] == analytic[a] for a in ANALYTIC}})
        return results, measured

    @staticmethod
    def _requests(images, prompts: Sequence[str]) -> list[dict[str, str]]:
        if len(images) != len(prompts):
            raise BadInputError(f"micro judge: {len(images)} images but {len(prompts)} prompts")
        requests = [parse_prompt(prompt) for prompt in prompts]
        for prompt, request in zip(prompts, requests, strict=True):
            if not request:
                raise BadInputError(f"micro judge: prompt {prompt!r} asks for no micro-world attribute "
                                    f"({', '.join(ATTRIBUTES)}); use a micro prompt set such as micro-test")
        return requests

    def score(self, images, prompts: Sequence[str]) -> list[dict[str, float]]:
        """Per image: 1/0 for each attribute its prompt asks for, `overall` (their mean), `agree_<attribute>`."""
        requests = self._requests(images, prompts)
        scores = []
        for judged, request in zip(self.attributes(images), requests, strict=True):
            row = {a: float(judged[a] == value) for a, value in request.items()}
            row["overall"] = float(np.mean(list(row.values())))
            row.update({f"agree_{a}": float(judged["agreement"][a]) for a in ANALYTIC})
            scores.append(row)
        return scores

    def requested_probabilities(self, images, prompts: Sequence[str]) -> list[dict[str, float]]:
        """Per image: the judge's probability that each requested attribute shows its requested value, and
        `overall` (their mean) - a utility with the judge's ranking but no 0.2 steps, so fewer ties.

        Shape, size, background and style: the CNN's softmax probability. Colour and position, which the judge
        decides by measurement when it finds an object: the mean of the CNN's probability and the measurement's
        verdict (1 or 0), so the value is at or above 0.5 when the binary judge says yes, at or below when no;
        without an object, the CNN's probability alone, as the judge then falls back to the CNN."""
        requests = self._requests(images, prompts)
        judged, measured = self._judge(images)
        rows = []
        for reading, found, request in zip(judged, measured, requests, strict=True):
            row = {}
            for attribute, value in request.items():
                p = reading["probabilities"][attribute][value]
                if attribute in ANALYTIC and found:
                    p = 0.5 * (p + float(reading["analytic"][attribute] == value))
                row[attribute] = p
            row["overall"] = float(np.mean(list(row.values())))
            rows.append(row)
        return rows

    def style_probability(self, images, style: str) -> list[float]:
        """The CNN's probability that each image is in `style`."""
        if style not in STYLES:
            raise BadInputError(f"unknown micro style {style!r}; accepted: {', '.join(STYLES)}")
        _, probs = self._forward(images)
        return [float(p) for p in probs["style"][:, STYLES.index(style)]]


def weights_sha256(folder: str | Path | None = None) -> str:
    """Identity of the shipped weights, for metric versions: hashing 400 kB costs well under a millisecond."""
    path = (Path(folder) if folder else ASSETS_DIR) / WEIGHTS_FILE
    if not path.is_file():
        raise MissingWeightsError(f"micro judge weights {path} are missing")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fresh_renders(n: int, seed: int) -> tuple[np.ndarray, list]:
    """n renders over all scenes and styles, with render seeds below TRAIN_SEED_FLOOR: never seen in training."""
    rng = np.random.default_rng([seed, 7])
    scenes = sample_scenes(rng, n)
    seeds = rng.integers(0, TRAIN_SEED_FLOOR, size=n)
    return render_batch(scenes, [int(s) for s in seeds]), scenes


def measure_accuracy(judge: MicroJudge, n: int = 2000, seed: int = 1, degradation: str | None = None) -> dict:
    """Accuracy per attribute of the judge, of its CNN and of its analytic part, and their agreement."""
    images, scenes = fresh_renders(n, seed)
    if degradation is not None:
        x = DEGRADATIONS[degradation](to_tensor(images), torch.Generator().manual_seed(seed))
        images = (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    judged = judge.attributes(images)
    truth = [scene.as_dict() for scene in scenes]

    pairs = list(zip(judged, truth, strict=True))

    def rate(part: str | None, attributes: tuple[str, ...]) -> dict[str, float]:
        return {a: round(float(np.mean([(j[part] if part else j)[a] == t[a] for j, t in pairs])), 4)
                for a in attributes}

    return {"judge": rate(None, ATTRIBUTES), "cnn": rate("cnn", ATTRIBUTES), "analytic": rate("analytic", ANALYTIC),
            "agreement": {a: round(float(np.mean([j["agreement"][a] for j in judged])), 4) for a in ANALYTIC}}


def train_judge(seed: int = 0, steps: int = 3000, batch_size: int = 128, minutes: float | None = None,
                out_dir: str | Path | None = None, eval_size: int = 2000, progress: bool = True,
                threads: int = 1) -> dict:
    """Train the CNN on freshly rendered, augmented scenes (every batch new), measure it on fresh renders, and
    write weights + config atomically. Same seed and steps give the same weights; `minutes` only caps time.
    One thread by default: CPU reductions can depend on the thread count, and a tiny net gains little."""
    from safetensors.torch import save_file  # noqa: PLC0415 - safetensors pulls torch: on first use

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train(seed, steps, batch_size, minutes, out_dir, eval_size, progress, save_file)
    finally:
        torch.set_num_threads(previous_threads)


def _train(seed, steps, batch_size, minutes, out_dir, eval_size, progress, save_file) -> dict:
    torch.manual_seed(seed)
    rng, gen = np.random.default_rng([seed, 3]), torch.Generator().manual_seed(seed)
    architecture = {"width": 16, "hidden": 64}
    net = JudgeNet(**architecture)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    start, done, losses = time.perf_counter(), 0, []
    with progress_bar("training micro judge", steps, enabled=progress) as advance:
        for _ in range(steps):
            if minutes is not None and time.perf_counter() - start > 60 * minutes:
                break
            scenes = sample_scenes(rng, batch_size)
            seeds = rng.integers(TRAIN_SEED_FLOOR, 2**62, size=batch_size)
            x = augment(to_tensor(render_batch(scenes, [int(s) for s in seeds])), gen)
            logits = net(x)
            loss = sum(F.cross_entropy(logits[a], torch.tensor([VOCABULARIES[a].index(getattr(s, a))
                                                                for s in scenes])) for a in ATTRIBUTES)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            done += 1
            advance(1)
    seconds = time.perf_counter() - start
    judge = MicroJudge(net.eval(), {})
    accuracy = {"clean": measure_accuracy(judge, eval_size, seed=seed + 1)}
    for name in DEGRADATIONS:
        accuracy[name] = measure_accuracy(judge, eval_size, seed=seed + 1, degradation=name)
    config = {"architecture": architecture, "image_size": IMAGE_SIZE, "vocabularies": VOCABULARIES,
              "training": {"seed": seed, "steps": done, "steps_requested": steps, "batch_size": batch_size,
                           "seconds": round(seconds, 1), "final_loss": round(float(np.mean(losses[-50:])), 4),
                           "torch": torch.__version__, "threads": torch.get_num_threads(),
                           "command": f"python -m rpo_bench.micro.judge --seed {seed} --steps {steps}",
                           "wall_clock_note": "on a shared 2-core CPU; the time varies with load, the weights do not"},
              "evaluation": {"renders": eval_size, "render_seed": seed + 1,
                             "note": "fresh renders (render seeds below 2**32, never used in training) over all "
                                     "scenes and styles; `judge` is the hybrid's final answer"},
              "accuracy": accuracy}
    out = Path(out_dir) if out_dir else ASSETS_DIR
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
        os.chmod(tmp, 0o644)  # package data: readable by everyone, like the json beside it
    config["weights_sha256"] = weights_sha256(out)
    atomic_write(out / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description="Retrain the micro world's judge and measure it.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--minutes", type=float, default=None, help="time cap (makes the result time-dependent)")
    parser.add_argument("--out", default=str(ASSETS_DIR))
    args = parser.parse_args()
    config = train_judge(args.seed, args.steps, args.batch_size, args.minutes, args.out)
    print(json.dumps({"training": config["training"], "accuracy": config["accuracy"]}, indent=1))


if __name__ == "__main__":
    main()
