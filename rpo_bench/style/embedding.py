"""The CLIP image embedder of a style: what style-prob, style-sim and base-sim compare images by.

`style.embedding` names the CLIP the way the CLIP-score metrics do, so the same weights serve both and each style
has one matching "CLIP score to the content prompt" metric (`content_metric`):
- "micro-clip": the micro world's CLIP (shipped with rpo-bench);
- "tiny-clip:N": a random tiny CLIP (seed N), for tests;
- a Hugging Face CLIP id or a local CLIP folder (like `clip:ARG`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from rpo_bench.core.errors import BadInputError
from rpo_bench.metrics.clip_score import DEFAULT_BACKBONE, ClipScore, HFClipBackbone, MicroClipScore, TinyClipScore
from rpo_bench.style.registry import Style

EMBEDDING_ACCEPTED = ("micro-clip, tiny-clip:N (N a seed), a Hugging Face CLIP id such as "
                      "openai/clip-vit-large-patch14, or a local CLIP folder")


def content_metric(style: Style) -> str:
    """The CLIP-score metric that uses the style's embedding: "CLIP score to the content prompt"."""
    embedding = style.embedding.strip()
    if embedding == "micro-clip":
        return "micro-clip"
    if embedding == "tiny-clip" or embedding.startswith("tiny-clip:"):
        _, _, seed = embedding.partition(":")
        return f"tiny-clip:{seed or 0}"
    if embedding.startswith("open_clip:") or not embedding:
        # The style metrics read transformers CLIPs only (HFClipBackbone); open_clip models have another API.
        raise BadInputError(f"style {style.name!r}: embedding = {embedding!r}; accepted: {EMBEDDING_ACCEPTED}")
    return "clip" if embedding == DEFAULT_BACKBONE else f"clip:{embedding}"


def clip_metric(style: Style) -> ClipScore:
    """The unloaded CLIP-score metric of the style's embedding; it knows where the weights are and their identity."""
    name, _, arg = content_metric(style).partition(":")
    kind = {"micro-clip": MicroClipScore, "tiny-clip": TinyClipScore, "clip": ClipScore}[name]
    return kind(arg or None)


class StyleEmbedder:
    """L2-normalised CLIP image embeddings of one style's CLIP, in batches, as float64 numpy rows."""

    def __init__(self, style: Style):
        self.style = style
        self._metric = clip_metric(style)
        self._backbone: HFClipBackbone | None = None

    @property
    def identity(self) -> str:
        """The CLIP's formula version and weights (hub commit or folder hash), without loading them."""
        return self._metric.version

    @property
    def loaded(self) -> bool:
        return self._backbone is not None

    def hub_files(self) -> list:
        """The CLIP's Hub files (none for micro-clip, tiny-clip and local folders)."""
        return self._metric.hub_files()

    def load(self, device: str, dtype) -> StyleEmbedder:
        if self._backbone is None:
            self._backbone = HFClipBackbone(self._metric.backbone_source(), device, dtype, self._metric.key)
        return self

    def embed(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """(n, d) unit rows; an empty input gives (0, 0)."""
        import torch  # noqa: PLC0415 - torch loads in seconds: on first use

        if self._backbone is None:
            raise RuntimeError("StyleEmbedder.embed before load")
        chunks = []
        for start in range(0, len(images), batch_size):
            batch = [image.convert("RGB") for image in images[start:start + batch_size]]
            features = self._backbone.image_features(batch)
            chunks.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu().double().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 0))

    def unload(self) -> None:
        self._backbone = None
