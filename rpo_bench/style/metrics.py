"""Style metrics (METHOD.md "Style alignment"): `style-prob:S`, `style-sim:S` and `base-sim:S`.

All three embed images with the style's CLIP (`rpo_bench.style.embedding`). Style gained (style-prob, style-sim)
is reported beside content kept (base-sim, and the CLIP score to the content prompt, `content_metric`), so that
style bought by forgetting the prompt or by changing every image shows up.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from rpo_bench.core.errors import BadInputError
from rpo_bench.metrics.base import Metric
from rpo_bench.models.catalog import resolve_model
from rpo_bench.models.loader import model_fingerprint
from rpo_bench.style.availability import absent_style
from rpo_bench.style.embedding import StyleEmbedder
from rpo_bench.style.probe import (
    cached_probe,
    centroid_fingerprint,
    load_or_build_centroid,
    load_or_fit_probe,
    probe_fingerprint,
)
from rpo_bench.style.registry import STYLES, get_style

FORMULA_VERSION = "1"


class _StyleMetric(Metric):
    higher_is_better = True
    example_arg = "micro-sketch"

    def __init__(self, arg: str | None = None):
        if not arg:
            raise BadInputError(f"{self.name} needs a style; accepted: {self.name}:S with S one of "
                                f"{', '.join(STYLES.names())} (or a style of your registry.toml)")
        super().__init__(arg)
        self.style = get_style(arg)
        self._device = "cpu"
        self._embedder = StyleEmbedder(self.style)  # checks the style's embedding now, before any work

    def absent_entries(self) -> list:
        """The metric's files, then its style's (its CLIP, and references streamed from a Hub dataset)."""
        return [*super().absent_entries(), absent_style(self.style.name)]

    def load(self, device: str, dtype) -> None:
        self._embedder.load(device, dtype)
        self._device = device

    def unload(self) -> None:
        self._embedder.unload()

    def hub_files(self) -> list:
        """The style's CLIP (what `rpo-bench download style-prob:S` fetches; the references come with
        `rpo-bench styles fetch S`)."""
        return self._embedder.hub_files()

    def _embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not self._embedder.loaded:  # scoring without an explicit load (tests, notebooks): CPU is plenty
            import torch  # noqa: PLC0415 - torch loads in seconds: on first use

            self.load("cpu", torch.float32)
        return self._embedder.embed(images)

    def _fit_embedder(self, dtype) -> StyleEmbedder:
        """Fits (probe, centroid) use float32 embeddings whatever the scoring dtype, so one cached fit serves all."""
        import torch  # noqa: PLC0415 - torch loads in seconds: on first use

        if dtype == torch.float32:
            return self._embedder
        return StyleEmbedder(self.style).load(self._device, torch.float32)


class StyleProb(_StyleMetric):
    """Probability that the image is in style S, from the style's logistic probe on CLIP image embeddings."""

    name = "style-prob"
    aspect, aspect_rank = "style", 1
    value_range = (0.0, 1.0)
    summary = ("probability that the image is in style S (logistic probe on CLIP image embeddings, references vs "
               "base images; its held-out accuracy is printed beside it); style-prob:S")

    def __init__(self, arg: str | None = None):
        super().__init__(arg)
        self._probe = None

    @property
    def version(self) -> str:
        identity = self._embedder.identity
        return f"{FORMULA_VERSION}+probe-{probe_fingerprint(self.style, identity)}+{identity}"

    def load(self, device: str, dtype) -> None:
        super().load(device, dtype)
        self._probe = cached_probe(self.style, self._embedder.identity)
        if self._probe is None:
            self._probe = load_or_fit_probe(self.style, self._fit_embedder(dtype), device=device)

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        embeddings = self._embed(images)
        return self._probe.probability(embeddings).tolist()

    def notes(self) -> list[str]:
        """The probe's held-out accuracy; read from its cache when this run scored nothing (never fits)."""
        probe = self._probe or cached_probe(self.style, self._embedder.identity)
        return [probe.note(self.key)] if probe is not None else []


class StyleSim(_StyleMetric):
    """Cosine between the image embedding and the normalised mean of the reference embeddings."""

    name = "style-sim"
    aspect, aspect_rank = "style", 4
    value_range = (-1.0, 1.0)
    summary = "cosine of the CLIP image embedding to the style's reference centroid; style-sim:S"

    def __init__(self, arg: str | None = None):
        super().__init__(arg)
        self._centroid: np.ndarray | None = None

    @property
    def version(self) -> str:
        identity = self._embedder.identity
        return f"{FORMULA_VERSION}+centroid-{centroid_fingerprint(self.style, identity)}+{identity}"

    def load(self, device: str, dtype) -> None:
        super().load(device, dtype)
        self._centroid = load_or_build_centroid(self.style, self._fit_embedder(dtype))

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        embeddings = self._embed(images)
        return (embeddings @ self._centroid).tolist()


class BaseSim(_StyleMetric):
    """Content kept: CLIP image cosine to the base model's image of the same prompt, seed, protocol and dtype."""

    name = "base-sim"
    aspect, aspect_rank = "content", 9  # content kept, by the image itself: after every text-based measure
    value_range = (-1.0, 1.0)
    summary = ("content kept: CLIP image cosine (the style's CLIP) to the style's base model's image for the same "
               "prompt and seed; needs the base model in --models; base-sim:S")

    @property
    def paired_with_model(self) -> str:
        return self.style.base_model

    @property
    def version(self) -> str:
        base = model_fingerprint(resolve_model(self.style.base_model))[:16]
        return f"{FORMULA_VERSION}+base-{base}+{self._embedder.identity}"

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        raise BadInputError(f"{self.key} compares each image with {self.style.base_model}'s image for the same "
                            "prompt and seed, which only `rpo-bench evaluate` has; accepted there, with "
                            f"{self.style.base_model} among --models")

    def score_pairs(self, images: Sequence[Image.Image], base_images: Sequence[Image.Image]) -> list[float]:
        if len(images) != len(base_images):
            raise ValueError(f"{len(images)} images and {len(base_images)} base images")
        both = self._embed([*images, *base_images])
        return np.sum(both[:len(images)] * both[len(images):], axis=1).tolist()
