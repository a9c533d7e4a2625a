"""The style probe and the reference centroid of METHOD.md "Style alignment", fitted once and cached as JSON.

Probe: an L2-regularised logistic regression on the style's CLIP image embeddings (`rpo_bench.style.embedding`),
positives = the style's reference images, negatives = the base model's images of the references' own captions.
Negatives are drawn from the references' content captions, not from the held-out evaluation prompts, on purpose:
the evaluation prompts are never probe training data, so a model cannot score well by drawing what the probe saw,
and the probe learns "style vs no style" on matched content (each reference has a base image of its caption).

Everything is deterministic: a fixed 80/20 split (per class, by each image's sha256, never by position, so the
split does not move when references are reordered), features standardised with the fitted fifth's statistics
(folded into the stored weights), and L-BFGS-B from zeros in float64. The held-out fifth measures accuracy; the
stored weights are the fit on the other 80%. A probe is named by a hash of everything it depends on (references,
CLIP weights, base model, protocol, FORMAT) and, once written, is only ever read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rpo_bench.core.atomic import atomic_write
from rpo_bench.core.config import safe_child
from rpo_bench.evaluation.protocols import PROTOCOLS
from rpo_bench.models.catalog import resolve_model
from rpo_bench.models.loader import model_fingerprint
from rpo_bench.style.base_images import base_images_for_references
from rpo_bench.style.embedding import StyleEmbedder
from rpo_bench.style.registry import Style, reference_images, references_fingerprint, style_home

log = logging.getLogger(__name__)
FORMAT = 1  # bump when the split, the features or the fit change: it renames every cached probe and centroid
REGULARISATION_C = 1.0  # scikit-learn's default C: mean log-loss + |w|^2 / (2 C n)
HELD_OUT_EVERY = 5  # every fifth image of each class (in sha256 order) is held out: a 80/20 split
BASE_IMAGES_PER_REFERENCE = 1


# -- identities ---------------------------------------------------------------------------------------------------
def _short_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def base_identity(style: Style) -> dict[str, str]:
    """The base model and protocol its negative images come from (their fingerprints, not just their names)."""
    spec = resolve_model(style.base_model)
    protocol = style.protocol or spec.protocol
    return {"base_model": style.base_model, "base_fingerprint": model_fingerprint(spec), "protocol": protocol,
            "protocol_fingerprint": PROTOCOLS.get(protocol).fingerprint(spec.family)}


def probe_inputs(style: Style, embedding_identity: str) -> dict[str, Any]:
    return {"style": style.name, "references": references_fingerprint(style), "embedding": embedding_identity,
            **base_identity(style), "per_reference": BASE_IMAGES_PER_REFERENCE, "c": REGULARISATION_C,
            "format": FORMAT}


def centroid_inputs(style: Style, embedding_identity: str) -> dict[str, Any]:
    return {"style": style.name, "references": references_fingerprint(style), "embedding": embedding_identity,
            "format": FORMAT}


def _cache_path(style: Style, kind: str, fingerprint: str) -> Path:
    return safe_child(style_home(style), f"{kind}-{fingerprint}.json", what="style cache file")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def _read_json(path: Path) -> dict[str, Any] | None:
    """A cached fit, or None when absent or unreadable (a damaged cache file is fitted again and replaced)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("%s is unreadable (%s): fitting it again", path, type(exc).__name__)
        return None


# -- embeddings, computed once per process ------------------------------------------------------------------------
_REFERENCE_EMBEDDINGS: dict[tuple[str, str], np.ndarray] = {}


def reference_embeddings(style: Style, embedder: StyleEmbedder) -> np.ndarray:
    """The references' unit embeddings, in reference order; shared by the probe and the centroid."""
    key = (references_fingerprint(style), embedder.identity)
    if key not in _REFERENCE_EMBEDDINGS:
        _REFERENCE_EMBEDDINGS[key] = embedder.embed([reference.image for reference in reference_images(style)])
    return _REFERENCE_EMBEDDINGS[key]


def image_sha256(image: Image.Image) -> str:
    """Of the decoded pixels (mode, size, bytes): independent of how a PNG encoder compresses them."""
    digest = hashlib.sha256(f"{image.mode}:{image.size}\0".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


# -- the fit ------------------------------------------------------------------------------------------------------
def held_out_mask(shas: list[str]) -> np.ndarray:
    """True for every HELD_OUT_EVERY-th item in sha256 order: a split that depends on the images, not their order."""
    order = sorted(range(len(shas)), key=lambda i: (shas[i], i))
    mask = np.zeros(len(shas), dtype=bool)
    for rank, index in enumerate(order):
        mask[index] = rank % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
    return mask


def fit_logistic(features: np.ndarray, labels: np.ndarray,
                 c: float = REGULARISATION_C) -> tuple[np.ndarray, float, dict]:
    """L2-regularised logistic regression (bias not penalised) by L-BFGS-B from zeros, float64, on standardised
    features; returns (weights, bias) on the raw features and the optimiser's report."""
    from scipy.optimize import minimize  # noqa: PLC0415 - scipy loads slowly: only for statistics
    from scipy.special import expit  # noqa: PLC0415 - scipy loads slowly: only for statistics

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std < 1e-12] = 1.0  # a constant coordinate carries nothing; keep it finite
    z = (x - mean) / std
    n, d = z.shape
    penalty = 1.0 / (c * n)

    def loss_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:d], theta[d]
        logits = z @ w + b
        loss = float(np.mean(np.logaddexp(0.0, logits) - y * logits) + 0.5 * penalty * (w @ w))
        residual = (expit(logits) - y) / n
        return loss, np.concatenate([z.T @ residual + penalty * w, [residual.sum()]])

    result = minimize(loss_and_gradient, np.zeros(d + 1), jac=True, method="L-BFGS-B",
                      options={"maxiter": 2_000})
    w, b = result.x[:d], float(result.x[d])
    # fold the standardisation in, so that scoring is one dot product on the raw unit embeddings
    weights = w / std
    bias = b - float(weights @ mean)
    return weights, bias, {"converged": bool(result.success), "iterations": int(result.nit)}


def probabilities(weights: np.ndarray, bias: float, embeddings: np.ndarray) -> np.ndarray:
    from scipy.special import expit  # noqa: PLC0415 - scipy loads slowly: only for statistics

    return expit(np.asarray(embeddings, dtype=np.float64) @ weights + bias)


@dataclass(frozen=True)
class StyleProbe:
    weights: np.ndarray
    bias: float
    accuracy: float  # on the held-out fifth
    held_out: int  # images in the held-out fifth
    references: int  # positives the stored weights were fitted on
    base_images: int  # negatives the stored weights were fitted on
    fingerprint: str
    path: Path
    fit_seconds: float | None = None  # None when read from the cache

    def probability(self, embeddings: np.ndarray) -> np.ndarray:
        return probabilities(self.weights, self.bias, embeddings)

    def note(self, metric_key: str) -> str:
        return (f"{metric_key}: probe held-out accuracy {self.accuracy:.2f} ({self.held_out} images; fitted on "
                f"{self.references} references, {self.base_images} base images)")

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> StyleProbe:
        return cls(np.asarray(data["weights"], dtype=np.float64), float(data["bias"]), float(data["accuracy"]),
                   int(data["held_out"]), int(data["fit"]["references"]), int(data["fit"]["base_images"]),
                   str(data["fingerprint"]), path)


def probe_fingerprint(style: Style, embedding_identity: str) -> str:
    return _short_hash(probe_inputs(style, embedding_identity))


def cached_probe(style: Style, embedding_identity: str) -> StyleProbe | None:
    """The stored probe, or None; never fits (for reporting a probe without loading any model)."""
    fingerprint = probe_fingerprint(style, embedding_identity)
    path = _cache_path(style, "probe", fingerprint)
    data = _read_json(path)
    return StyleProbe.from_json(data, path) if data is not None else None


def load_or_fit_probe(style: Style, embedder: StyleEmbedder, *, device: str = "auto",
                      show_progress: bool = True) -> StyleProbe:
    """The cached probe, or a new fit (the embedder must be loaded): generates the base images on first use."""
    cached = cached_probe(style, embedder.identity)
    if cached is not None:
        return cached

    inputs = probe_inputs(style, embedder.identity)
    fingerprint = _short_hash(inputs)
    negatives = [image for images in base_images_for_references(style, BASE_IMAGES_PER_REFERENCE, device=device,
                                                                 show_progress=show_progress) for image in images]
    started = time.perf_counter()
    positive_x = reference_embeddings(style, embedder)
    negative_x = embedder.embed(negatives)
    x = np.concatenate([positive_x, negative_x])
    y = np.concatenate([np.ones(len(positive_x)), np.zeros(len(negative_x))])
    # split each class on its own, so both fifths keep the classes' proportions
    held = np.concatenate([held_out_mask([r.sha256 for r in reference_images(style)]),
                           held_out_mask([image_sha256(image) for image in negatives])])
    weights, bias, report = fit_logistic(x[~held], y[~held])
    predicted = probabilities(weights, bias, x[held]) >= 0.5
    accuracy = float(np.mean(predicted == (y[held] == 1))) if held.any() else float("nan")
    seconds = time.perf_counter() - started
    data = {"format": FORMAT, "fingerprint": fingerprint, "inputs": inputs, "weights": weights.tolist(),
            "bias": bias, "accuracy": accuracy, "held_out": int(held.sum()),
            "fit": {"references": int((~held[y == 1]).sum()), "base_images": int((~held[y == 0]).sum()), **report}}
    path = _cache_path(style, "probe", fingerprint)
    _write_json(path, data)
    probe = StyleProbe.from_json(data, path)
    log.info("style %s: probe fitted in %.2f s, held-out accuracy %.3f", style.name, seconds, accuracy)
    return replace(probe, fit_seconds=seconds)


# -- the reference centroid ---------------------------------------------------------------------------------------
def centroid_fingerprint(style: Style, embedding_identity: str) -> str:
    return _short_hash(centroid_inputs(style, embedding_identity))


def load_or_build_centroid(style: Style, embedder: StyleEmbedder) -> np.ndarray:
    """The normalised mean of the references' unit embeddings (cached; built with a loaded embedder)."""
    inputs = centroid_inputs(style, embedder.identity)
    fingerprint = _short_hash(inputs)
    path = _cache_path(style, "centroid", fingerprint)
    data = _read_json(path)
    if data is None:
        mean = reference_embeddings(style, embedder).mean(axis=0)
        data = {"format": FORMAT, "fingerprint": fingerprint, "inputs": inputs,
                "references": len(reference_images(style)), "centroid": (mean / np.linalg.norm(mean)).tolist()}
        _write_json(path, data)
    return np.asarray(data["centroid"], dtype=np.float64)
