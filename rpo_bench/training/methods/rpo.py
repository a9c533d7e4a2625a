"""Diffusion-RPO (our reconstruction, METHOD.md "Diffusion-RPO"): every winner of the micro-batch against every
loser, each logit weighted by the CLIP similarity of the two pairs; the DPO options apply to it too."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from rpo_bench.training.config import method_field, setting
from rpo_bench.training.methods.dpo import (
    DPO,
    DPOConfig,
    preference_errors,
    with_regulariser,
)

EmbedMode = Literal["text", "image", "joint"]
WeightScale = Literal["none", "M"]
Placement = Literal["inside", "outside"]
Contrast = Literal["local", "global"]


@dataclass
class RPOConfig(DPOConfig):
    method: str = method_field("rpo")
    tau: float = setting(0.5, "Softmax temperature of the similarity weights (parent method sweeps 0.25/0.5/0.75).")
    embed_mode: EmbedMode = setting("joint", "text, image or joint: which CLIP embeddings define pair similarity.")
    embed_model: str = setting("auto", "CLIP for the weights: tiny-clip[:seed], a hub id or a folder; auto: the "
                               "model's own CLIP (micro CLIP, tiny CLIP), else openai/clip-vit-large-patch14.")
    weight_scale: WeightScale = setting("none", "none, or M: multiply the weights by M so the average weight is 1.")
    placement: Placement = setting("inside", "inside: -log sigmoid(w Z) (parent method); outside: "
                                   "w * -log sigmoid(Z).")
    pin_diagonal: bool = setting(False, "Set S_ii = 1 so the same-prompt pair always has the largest weight.")
    contrast: Contrast = setting("local", "local: the matrix over this device's pairs; global: over all devices' "
                                 "pairs.")


class RPO(DPO):  # DPO's settings, checks and winner-preserving residuals, with the matrix loss
    name, title = "rpo", "Diffusion-RPO"
    summary = "Diffusion-RPO: every winner against every loser of the batch, weighted by CLIP similarity"
    source = "Gu et al. 2024 (arXiv 2406.06382; no public code); weighting as the parent method RPO (Yin et al.)"
    config = RPOConfig

    def validate(self, config, check) -> None:
        super().validate(config, check)
        check(math.isfinite(config.tau) and config.tau > 0, "tau", config.tau, "a finite number > 0")

    def warnings(self, config) -> list[str]:
        if config.contrast == "local" and config.pairs_per_device == 1:
            return ["rpo with one pair per device and --contrast local has a 1x1 matrix: it equals DPO. "
                    "Use more pairs per device or --contrast global."]
        return []

    def setup(self, trainer) -> None:
        from rpo_bench.training.embeddings import compute_embeddings  # noqa: PLC0415 - torch: `train --help` reads this file's config

        config, accelerator = trainer.config, trainer.accelerator
        name = config.embed_model
        model = trainer.spec.clip_source if name == "auto" else name
        with accelerator.main_process_first():
            trainer.table = compute_embeddings(trainer.data, model, device=str(accelerator.device),
                                               show_progress=trainer.show_progress and accelerator.is_main_process)

    def diagnostics_are_global(self, trainer) -> bool:
        return trainer.config.contrast == "global"

    def weights(self, trainer, indices: list[int]):
        from rpo_bench.training import losses  # noqa: PLC0415 - torch: `train --help` reads this file's config
        from rpo_bench.training.embeddings import pair_embeddings  # noqa: PLC0415 - as above

        u, v = pair_embeddings(trainer.table, indices, trainer.config.embed_mode)
        return losses.rpo_weights(u, v, trainer.config.tau, trainer.config.pin_diagonal).to(trainer.accelerator.device)

    def loss(self, trainer, errors, indices):
        from rpo_bench.training import losses  # noqa: PLC0415 - torch: `train --help` reads this file's config

        config = trainer.config
        args, extra = preference_errors(errors, config)
        if config.contrast == "global" and trainer.world > 1:
            loss, diagnostics = self._global_loss(trainer, args, indices)
        else:
            local = indices[trainer.rank * config.pairs_per_device:(trainer.rank + 1) * config.pairs_per_device]
            weights = self.weights(trainer, local)
            loss = losses.rpo_loss(*args, weights, config.beta, config.weight_scale, config.placement)
            diagnostics = {"loss": loss.item(), **losses.preference_diagnostics(*args, config.beta, weights)}
        diagnostics.update(extra)
        return with_regulariser(loss, diagnostics, errors, config), diagnostics

    def _global_loss(self, trainer, args, indices):
        """METHOD.md RPO item 6: the matrix over every process's pairs; gradients only through local rows and
        columns. Every process knows the global batch's indices, so only the D values are gathered."""
        import torch  # noqa: PLC0415 - torch: `train --help` reads this file's config

        from rpo_bench.training import losses  # noqa: PLC0415 - as above

        config, accelerator, world = trainer.config, trainer.accelerator, trainer.world
        model_err_w, model_err_l, ref_err_w, ref_err_l = args
        m, total = config.pairs_per_device, len(indices)
        d_w, d_l = model_err_w - ref_err_w, model_err_l - ref_err_l
        gathered = [accelerator.gather(t.detach()) for t in args]
        all_d_w, all_d_l = gathered[0] - gathered[2], gathered[1] - gathered[3]
        mine = torch.zeros(total, dtype=torch.bool, device=d_w.device)
        mine[trainer.rank * m:(trainer.rank + 1) * m] = True
        d_l_columns = all_d_l.clone().to(d_l.dtype)
        d_l_columns[mine] = d_l  # live in this process's columns
        weights = self.weights(trainer, indices)
        options = dict(beta=config.beta, weight_scale=config.weight_scale, placement=config.placement,
                       num_pairs=total)
        rows = losses.rpo_loss_from_diffs(d_w, d_l_columns, weights[mine], **options)
        cols = losses.rpo_loss_from_diffs(all_d_w[~mine], d_l, weights[~mine][:, mine], **options)
        # DDP averages gradients over processes; the full-batch gradient is their SUM, hence the factor.
        loss = (rows + cols) * world / total**2
        value = accelerator.reduce(rows.detach(), reduction="sum") / total**2
        diagnostics = losses.preference_diagnostics(*gathered, config.beta, weights)
        return loss, {"loss": value.item(), **diagnostics}


METHOD = RPO()
