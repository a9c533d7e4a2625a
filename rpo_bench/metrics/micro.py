"""The micro world's ground-truth metrics: `micro-oracle[:attribute]`, `micro-oracle:prob` and `micro-style:S`.

Unlike learned human-preference scorers, these measure what the prompt asked for, with a judge whose accuracy on
held-out renders is recorded next to its weights (rpo_bench/micro/assets/judge.json).
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from rpo_bench.core.errors import BadInputError
from rpo_bench.metrics.base import Metric
from rpo_bench.micro.judge import MicroJudge, weights_sha256
from rpo_bench.micro.scenes import ATTRIBUTES, STYLES

FORMULA_VERSION = "1"
_ALIASES = {"color": "colour"}
PROBABILITY = "prob"  # micro-oracle:prob: the judge's mean probability of the requested values (continuous)


class _MicroMetric(Metric):
    value_range = (0.0, 1.0)
    higher_is_better = True

    def __init__(self, arg: str | None = None):
        super().__init__(arg)
        self._judge: MicroJudge | None = None

    @property
    def version(self) -> str:
        return f"{FORMULA_VERSION}+judge-{weights_sha256()[:16]}"

    def load(self, device: str, dtype) -> None:
        """The judge runs in float32 whatever `dtype` says: it is tiny, and its accuracy was measured so."""
        self._judge = MicroJudge.load(device=device)

    def unload(self) -> None:
        self._judge = None

    @property
    def judge(self) -> MicroJudge:
        if self._judge is None:  # scoring without an explicit load (tests, notebooks): CPU is plenty
            self.load("cpu", None)
        return self._judge


class MicroOracle(_MicroMetric):
    """Share of the requested attributes the image shows; `micro-oracle:colour` scores one attribute only;
    `micro-oracle:prob` the judge's mean probability of the requested values (finer than the 0.2 steps of the
    share, for ranking a prompt's images; the share stays the ground truth to report)."""

    name = "micro-oracle"
    aspect, aspect_rank = "content", 0  # the ground truth first
    summary = ("micro world ground truth: share of the prompt's attributes (shape, colour, size, position, "
               "background, style) the image shows; micro-oracle:<attribute> for one; micro-oracle:prob for the "
               "judge's mean probability of the requested values")

    def __init__(self, arg: str | None = None):
        attribute = _ALIASES.get(arg, arg) if arg else None
        if attribute is not None and attribute not in (*ATTRIBUTES, PROBABILITY):
            raise BadInputError(f"micro-oracle: unknown attribute {arg!r}; accepted: {', '.join(ATTRIBUTES)}, "
                                f"or {PROBABILITY} (the judge's probability of the requested values)")
        super().__init__(attribute)
        self.attribute = attribute

    def score_details(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[dict[str, float]]:
        """Every requested attribute (1/0), `overall`, and whether the CNN and the measurements agree."""
        return self.judge.score(images, prompts)

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        if self.attribute == PROBABILITY:
            return [row["overall"] for row in self.judge.requested_probabilities(images, prompts)]
        rows = self.score_details(images, prompts)
        if self.attribute is None:
            return [row["overall"] for row in rows]
        for prompt, row in zip(prompts, rows, strict=True):
            if self.attribute not in row:
                raise BadInputError(f"micro-oracle:{self.attribute}: prompt {prompt!r} does not ask for a "
                                    f"{self.attribute}")
        return [row[self.attribute] for row in rows]


class MicroStyle(_MicroMetric):
    """Probability that the image is in style S, from the judge's style head; `micro-style:S`."""

    name = "micro-style"
    aspect, aspect_rank = "style", 0  # the ground truth first
    example_arg = "vangogh"
    summary = f"micro world: probability that the image is in a style; micro-style:<{'|'.join(STYLES)}>"

    def __init__(self, arg: str | None = None):
        if arg not in STYLES:
            given = f"unknown style {arg!r}" if arg else "needs a style"
            raise BadInputError(f"micro-style: {given}; accepted: "
                                + ", ".join(f"micro-style:{style}" for style in STYLES))
        super().__init__(arg)
        self.style = arg

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        return self.judge.style_probability(images, self.style)
