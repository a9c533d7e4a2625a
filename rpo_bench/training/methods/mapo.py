"""MaPO (Hong et al. 2024; METHOD.md "MaPO"): margin-aware preference optimisation without a reference model,
so no reference forward: the winners' error is trained down directly, beside a log-odds margin over the losers."""

from __future__ import annotations

import math
from dataclasses import dataclass

from rpo_bench.training.config import TrainConfig, method_field, setting
from rpo_bench.training.methods.base import Method


@dataclass
class MaPOConfig(TrainConfig):
    method: str = method_field("mapo")
    mapo_beta: float = setting(0.1, "Weight of MaPO's margin term, beta_m (official 0.1): a weight, not a KL "
                               "strength.")
    mapo_snr: float = setting(0.5, "s in f(s * err): the scale of the errors inside the log-odds (official 0.5).")


class MaPO(Method):
    name, title = "mapo", "MaPO"
    summary = "MaPO: reference-free; mean(err_w) - beta_m * logsigmoid(T * log-odds margin), no reference forward"
    source = "Hong et al. 2024 (arXiv 2406.06424); mapo-t2i/mapo utils.py (beta 0.1, s 0.5, T = training steps)"
    config = MaPOConfig
    needs_reference = False
    refuses = {"winner_preserving": "mapo trains the winners' error down directly (its mean(err_w) term), and the "
                                    "SDPO scale is derived for a loss whose winners are held only by a reference "
                                    "margin"}

    def validate(self, config: MaPOConfig, check) -> None:
        for name in ("mapo_beta", "mapo_snr"):
            value = getattr(config, name)
            check(math.isfinite(value) and value > 0, name, value, "a finite number > 0")

    def loss(self, trainer, errors, indices):
        from rpo_bench.training import losses  # noqa: PLC0415 - torch: `train --help` reads this file's config

        config = trainer.config
        model_err_w, model_err_l = errors["model_err_w"], errors["model_err_l"]
        timesteps = trainer.parts.noise_scheduler.config.num_train_timesteps
        loss = losses.mapo_loss(model_err_w, model_err_l, config.mapo_beta, config.mapo_snr, timesteps)
        return loss, {"loss": loss.item(), "model_err_w_mean": model_err_w.mean().item(),
                      "model_err_l_mean": model_err_l.mean().item(),
                      "acc": (model_err_w < model_err_l).float().mean().item()}


METHOD = MaPO()
