"""Diffusion-DPO (Wallace et al.; METHOD.md "Diffusion-DPO"), with the options that answer its measured failure:
the winner-preserving loser-gradient scale of Diffusion-SDPO (`winner_preserving`, `mu`) and the SFT / DPOP
regularisers on the winners (`sft_weight`, `winner_penalty`), all off by default."""

from __future__ import annotations

import math
from dataclasses import dataclass

from rpo_bench.training.config import TrainConfig, method_field, setting
from rpo_bench.training.methods.base import Method

BETA_CONVENTION = "dpo-half"


@dataclass
class DPOConfig(TrainConfig):
    method: str = method_field("dpo")
    beta: float = setting(5000.0, "KL strength, `dpo-half` convention: logit = -(beta/2)(D^w - D^l), as the official "
                          "code (its launchers: 5000; the diffusers example's 2500 equals 5000 here).")
    winner_preserving: bool = setting(False, "Diffusion-SDPO: scale the losers' gradient so that, to first order, "
                                      "the winners' error cannot rise (the loss value is unchanged).")
    mu: float = setting(0.9, "With --winner-preserving: the SDPO safety margin, 0 <= mu < 1 (official: 0.9 SD1.5, "
                        "0.6 SDXL).")
    sft_weight: float = setting(0.0, "Add sft_weight * mean(err_theta(winners)): SFT on the winners beside the "
                                "preference (0: off).")
    winner_penalty: float = setting(0.0, "Add winner_penalty * mean(max(0, D^w)): DPOP's penalty on a winner "
                                    "becoming less likely than under the reference (0: off).")


def check_preference_options(config: DPOConfig, check) -> None:
    """beta, and the winner-side options DPO and RPO share."""
    check(math.isfinite(config.beta) and config.beta > 0, "beta", config.beta, "a finite number > 0")
    check(0 <= config.mu < 1, "mu", config.mu, "0 <= mu < 1 (the SDPO margin)")
    for name in ("sft_weight", "winner_penalty"):
        value = getattr(config, name)
        check(math.isfinite(value) and value >= 0, name, value, "a finite number >= 0 (0: off)")


def preference_errors(errors, config: DPOConfig):
    """(model_err_w, model_err_l, ref_err_w, ref_err_l) with the losers' gradient scaled when winner-preserving,
    and the diagnostics of that scale."""
    from rpo_bench.training import losses  # noqa: PLC0415 - torch: `train --help` reads this file's config

    model_err_l, extra = errors["model_err_l"], {}
    if config.winner_preserving:
        scale = losses.sdpo_scale(errors["residual_w"], errors["residual_l"], config.mu)
        model_err_l = losses.winner_preserving(model_err_l, scale)
        extra["sdpo_scale"] = float(scale)
    return (errors["model_err_w"], model_err_l, errors["ref_err_w"], errors["ref_err_l"]), extra


def with_regulariser(loss, diagnostics: dict[str, float], errors, config: DPOConfig):
    """The preference loss plus the winner-side regulariser (its value logged as `regulariser` and added to
    `loss`); the very same tensor when both weights are 0, so DPO and RPO stay bit for bit what they were."""
    if not (config.sft_weight or config.winner_penalty):
        return loss
    from rpo_bench.training import losses  # noqa: PLC0415 - torch: `train --help` reads this file's config

    regulariser = losses.winner_regulariser(errors["model_err_w"], errors["ref_err_w"], config.sft_weight,
                                            config.winner_penalty)
    diagnostics["regulariser"] = regulariser.item()
    diagnostics["loss"] += diagnostics["regulariser"]
    return loss + regulariser


class DPO(Method):
    name, title = "dpo", "Diffusion-DPO"
    summary = "Diffusion-DPO: -log sigmoid(-(beta/2)(D^w - D^l)) per pair, against the frozen starting UNet"
    source = "Wallace et al. 2023/24; SalesforceAIResearch/DiffusionDPO (beta 5000, dpo-half)"
    config = DPOConfig
    convention = BETA_CONVENTION

    def validate(self, config, check) -> None:
        check_preference_options(config, check)

    def wants_residuals(self, config) -> bool:
        return config.winner_preserving

    def loss(self, trainer, errors, indices):
        from rpo_bench.training import losses  # noqa: PLC0415 - torch: `train --help` reads this file's config

        config = trainer.config
        args, extra = preference_errors(errors, config)
        loss = losses.dpo_loss(*args, config.beta)
        diagnostics = {"loss": loss.item(), **losses.preference_diagnostics(*args, config.beta), **extra}
        return with_regulariser(loss, diagnostics, errors, config), diagnostics


METHOD = DPO()
