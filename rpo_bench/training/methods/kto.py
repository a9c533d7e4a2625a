"""Diffusion-KTO (Li et al. 2024; METHOD.md "Diffusion-KTO"): learns from single images labelled desirable or
undesirable, each with its own noise and timestep, against the frozen starting UNet.

The worked example of CONTRIBUTING.md "Adding a training method": a config dataclass (its fields become `train`
flags), the class attributes that tell the trainer what the method needs, and the loss from the step's errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from rpo_bench.training.config import TrainConfig, method_field, setting
from rpo_bench.training.methods.base import Method

CONVENTION = "kto"  # sigmoid(s * beta * (g - z0)): no 1/2, official default beta 1000


@dataclass
class KTOConfig(TrainConfig):
    method: str = method_field("kto")
    kto_beta: float = setting(1000.0, "KTO strength, convention `kto`: h = sigmoid(s * beta * (g - z0)), no 1/2 "
                              "(official default 1000).")
    lambda_d: float = setting(1.0, "Weight of the desirable images' loss (official: 1).")
    lambda_u: float = setting(1.0, "Weight of the undesirable images' loss (official: 1).")
    positive_ratio: float = setting(0.5, "Share of desirable images in every batch, 0 < r < 1 (official default "
                                    "0.5; its example launcher uses 0.8).")
    kto_labels: Literal["pairs", "utility"] = setting(
        "pairs", "Which images are desirable: pairs (an image that wins any pair; one that only loses is "
        "undesirable) or utility (score_0 / score_1 of the data >= --kto-threshold: the micro world's judge, or "
        "a labelled set's 0/1).")
    kto_threshold: float = setting(0.5, "With --kto-labels utility: an image is desirable when its utility is at "
                                   "least this (0.5 reads a 0/1 label column).")


class KTO(Method):
    name, title = "kto", "Diffusion-KTO"
    summary = "Diffusion-KTO: single images labelled desirable / undesirable, each against the reference"
    source = "Li et al. 2024 (arXiv 2404.04465); jacklishufan/diffusion-kto train_kto_sd_v1.5.py"
    config = KTOConfig
    convention = CONVENTION
    unpaired = True  # the trainer draws single images (2 per pair of the budget) and hands over their errors
    refuses = {"winner_preserving": "the SDPO scale protects a pair's winner from its loser's gradient, and kto "
                                    "trains on single images, not pairs"}

    def validate(self, config: KTOConfig, check) -> None:
        check(math.isfinite(config.kto_beta) and config.kto_beta > 0, "kto_beta", config.kto_beta,
              "a finite number > 0")
        for name in ("lambda_d", "lambda_u"):
            value = getattr(config, name)
            check(math.isfinite(value) and value >= 0, name, value, "a finite number >= 0")
        check(0 < config.positive_ratio < 1, "positive_ratio", config.positive_ratio, "0 < r < 1")
        check(math.isfinite(config.kto_threshold), "kto_threshold", config.kto_threshold, "a finite number")

    def setup(self, trainer) -> None:
        from rpo_bench.training.unpaired import SingleImages  # noqa: PLC0415 - PIL and torch: `train --help` reads this file's config

        config = trainer.config  # labels from the training pairs only: the held-out prompts stay unseen
        self.images = SingleImages(trainer.data, trainer.train_indices, config.kto_labels, config.kto_threshold)

    def data_fingerprint(self, trainer) -> str:
        return self.images.fingerprint()

    def draw(self, trainer, micro_step: int, positions: list[int], global_batch: int):
        """This process's images of the global micro-batch: desirable at `positive_ratio` of the places."""
        parts, config = trainer.parts, trainer.config
        return self.images.batch(config.seed, micro_step, positions, global_batch, config.positive_ratio,
                                 parts.latent_shape, parts.noise_scheduler.config.num_train_timesteps,
                                 config.caption_dropout)

    def loss(self, trainer, errors, indices):
        from rpo_bench.training import losses  # noqa: PLC0415 - torch: `train --help` reads this file's config

        config = trainer.config
        model_err, ref_err, desirable = errors["model_err"], errors["ref_err"], errors["desirable"]
        g = (ref_err - model_err).detach()
        z0 = g.mean().reshape(1)  # METHOD.md: the mean over all processes, as the official code reduces it
        if trainer.world > 1:
            z0 = trainer.accelerator.reduce(z0, reduction="mean")
        loss = losses.kto_loss(model_err, ref_err, desirable, config.kto_beta, config.lambda_d, config.lambda_u,
                               z0=z0)
        sign = desirable.float() * 2 - 1
        d = -g  # D = err_theta - err_ref, < 0 where the model denoises better than the reference

        def class_mean(values, mask):  # 0 for a class this micro-batch lacks (keys must match across processes)
            return float((values * mask).sum() / mask.sum().clamp(min=1))

        return loss, {"loss": loss.item(), "kto_z0": float(z0.clamp(min=0)),
                      "kto_acc": float((sign * (g - z0.clamp(min=0)) > 0).float().mean()),
                      "d_desirable": class_mean(d, desirable), "d_undesirable": class_mean(d, ~desirable)}


METHOD = KTO()
