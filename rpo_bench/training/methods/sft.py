"""SFT: plain epsilon-prediction MSE on the preferred images only; no reference (METHOD.md "SFT")."""

from __future__ import annotations

from dataclasses import dataclass

from rpo_bench.training.config import TrainConfig, method_field
from rpo_bench.training.methods.base import Method


@dataclass
class SFTConfig(TrainConfig):
    """Supervised fine-tuning on the preferred images only."""

    method: str = method_field("sft")


class SFT(Method):
    name, title = "sft", "SFT"
    summary = "supervised fine-tuning on the preferred images only (no reference)"
    source = "METHOD.md \"SFT\": epsilon-prediction MSE on the winners"
    config = SFTConfig
    needs_reference, reads_losers = False, False
    refuses = {"winner_preserving": "sft trains on the winners alone: there is no loser whose gradient could be "
                                    "scaled"}

    def loss(self, trainer, errors, indices):
        from rpo_bench.training import losses  # noqa: PLC0415 - torch: `train --help` reads this file's config

        loss = losses.sft_loss(errors["model_err_w"])
        return loss, {"loss": loss.item(), "model_err_w_mean": errors["model_err_w"].mean().item()}


METHOD = SFT()
