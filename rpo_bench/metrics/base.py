"""The metric interface: a named, versioned scorer of (image, prompt) pairs with a declared direction."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from PIL import Image

from rpo_bench.hub.availability import entry_from_files


class Metric(ABC):
    """Scores a batch of images with their prompts, one float per image.

    `version` must change whenever a number could change (formula, preprocessing, weights): it is part of
    every stored score's key, so scores of different versions are never averaged together.
    """

    name: str = ""
    higher_is_better: bool = True
    value_range: tuple[float, float] = (float("-inf"), float("inf"))
    summary: str = ""
    example_arg: str | None = None  # set by metrics that cannot be used without an argument (micro-style:S)
    # What the number is about, so reports can pair "style gained" with "content kept" without knowing metric
    # names: "preference" (human-preference scorers), "content" (does the image show the prompt) or "style".
    # Among metrics of one aspect, the lowest aspect_rank speaks for it (the ground-truth judge before a probe).
    aspect: str = "preference"
    aspect_rank: int = 0

    def __init__(self, arg: str | None = None):
        self.arg = arg

    @property
    def key(self) -> str:
        """The name a user typed, including its argument: what the store's `metric` column holds."""
        return f"{self.name}:{self.arg}" if self.arg else self.name

    @property
    @abstractmethod
    def version(self) -> str:
        """Includes the identity of the weights; must be cheap (no weight loading): it decides what to score."""

    @abstractmethod
    def load(self, device: str, dtype) -> None:
        """Load weights once per evaluate run."""

    @abstractmethod
    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        ...

    # A paired metric (base-sim:S) compares each image with this model's image for the same prompt and seed;
    # evaluate finds that image and calls `score_pairs` instead of `score`.
    paired_with_model: str | None = None

    def score_pairs(self, images: Sequence[Image.Image], base_images: Sequence[Image.Image]) -> list[float]:
        raise NotImplementedError(f"{self.key} is not a paired metric")

    def notes(self) -> list[str]:
        """Lines to print wherever the metric is reported (a learned probe's held-out accuracy); none by default."""
        return []

    def hub_files(self) -> list:
        """The `HubFiles` this metric reads from the Hub (what `rpo-bench download NAME` fetches); none by default,
        and none when the metric's argument points at local weights."""
        return []

    def absent_entries(self) -> list:
        """Rows for the preflight (hub.availability.AbsentEntry, None when all is here): this metric's own Hub
        files first, then anything else it needs (a style metric adds its style, whose references and CLIP come
        with `rpo-bench download STYLE`)."""
        return [entry_from_files(self.key, "metrics", self.hub_files())]

    def unload(self) -> None:  # noqa: B027 - optional hook, most metrics need nothing
        """Free device memory before the next metric loads."""
