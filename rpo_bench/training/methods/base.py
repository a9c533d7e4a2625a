"""What a training method is to rpo-bench: a name, a config dataclass (its settings, which become `train` flags),
what it reads and needs, and its loss from the step's per-sample errors. One file per method (training/methods/),
registered in training.methods.METHODS; a user's method in their own package registers through the entry-point
group `rpo_bench.methods` and trains without touching rpo-bench.

A method file must stay light at import (no torch at module level): `rpo-bench train --help` reads every
registered method's config to build its flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rpo_bench.training.config import TrainConfig

if TYPE_CHECKING:
    from torch import Tensor


class Method:
    """Subclass it, set the class attributes, implement `loss`; register an instance."""

    name: str = ""
    title: str = ""  # what model cards and tables call it ("Diffusion-DPO")
    summary: str = ""  # one line for `rpo-bench methods`
    source: str = ""  # where its formula was read (paper and public code)
    config: type[TrainConfig] = TrainConfig  # the settings it reads: TrainConfig's and its own fields
    convention: str | None = None  # how its beta is scaled (recorded beside beta in every run), if it has one
    needs_reference: bool = True  # a forward of the frozen starting UNet for err_ref
    reads_losers: bool = True  # the step's data: winners and losers (False: the winners only, as SFT)
    unpaired: bool = False  # the step's data: single images labelled desirable or undesirable (KTO)
    # Settings of other methods that this one refuses with a reason beyond "not read by it" (what a user who
    # tries it should know): {setting: why}.
    refuses: dict[str, str] = {}

    def validate(self, config: TrainConfig, check) -> None:
        """Refuse this method's bad settings before anything loads: `check(ok, name, value, accepted)`."""

    def warnings(self, config: TrainConfig) -> list[str]:
        """Settings that are valid but probably not what the user meant, warned once when the trainer is made."""
        return []

    def wants_residuals(self, config: TrainConfig) -> bool:
        """Whether the step must also hand over the model's residuals (eps_theta - eps) for every element."""
        return False

    def setup(self, trainer) -> None:
        """Extra set-up before the first step (RPO: the embedding table)."""

    def draw(self, trainer, micro_step: int, positions: list[int], global_batch: int):
        """An unpaired method's images at `positions` of global micro-batch `micro_step` (global_batch images,
        two per pair of the budget): a training.unpaired.UnpairedBatch."""
        raise NotImplementedError

    def data_fingerprint(self, trainer) -> str | None:
        """A digest of what the method reads from the data beyond the pairs' own fingerprint (KTO: the labels it
        derived, which a utility column decides), kept in every checkpoint so that a resume on data that would
        label the images otherwise is refused rather than trained on silently. None: nothing beyond the pairs."""
        return None

    def diagnostics_are_global(self, trainer) -> bool:
        """True when `loss` already reduced its diagnostics over every process (RPO's global contrast)."""
        return False

    def loss(self, trainer, errors: Mapping[str, Tensor], indices: list[int]) -> tuple[Tensor, dict[str, float]]:
        """(the loss to back-propagate, diagnostics to log) from the step's per-sample errors: model_err_w and,
        as the method needs them, model_err_l, ref_err_w, ref_err_l, residual_w, residual_l (winners', losers'),
        or for an unpaired method model_err, ref_err and desirable (one entry per image)."""
        raise NotImplementedError

    def record(self, config: TrainConfig) -> dict[str, Any]:
        """What a run's rpo_bench.json records about the method beyond its config."""
        return {"convention": self.convention, "title": self.title, "source": self.source}
