"""The accelerate training loop for SFT, Diffusion-DPO and Diffusion-RPO, LoRA or full, one or many processes.

A step: pick the global micro-batch (a function of the step), encode captions and images, run the UNet on
winners and losers with shared timestep and noise, the reference likewise under no_grad, then the method's loss
from losses.py. All randomness is a function of (seed, step, pair position), so `--resume` replays exactly.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rpo_bench.config import seed_everything
from rpo_bench.errors import BadInputError
from rpo_bench.training import losses
from rpo_bench.training.batches import draw_randomness, global_batch_indices, image_to_tensor
from rpo_bench.training.config import DPOConfig, RPOConfig, TrainConfig, resume_mismatch
from rpo_bench.training.diffusion import DiffusionParts, adapters_disabled, repeat_condition
from rpo_bench.training.unet_setup import make_lr_scheduler, make_optimizer, prepare_unet

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"


@dataclass
class TrainResult:
    output: Path
    steps_done: int
    resumed_from: int
    history: list[dict[str, float]] = field(default_factory=list)


def _accelerator(config: TrainConfig):
    from accelerate import Accelerator

    cpu = config.device == "cpu" or not torch.cuda.is_available()
    if cpu and config.mixed_precision == "fp16":
        raise BadInputError("--mixed-precision fp16 needs a GPU; on the CPU use bf16 or no")
    log_with = None
    try:
        import tensorboard  # noqa: F401

        log_with = "tensorboard"
    except ImportError:
        pass
    return Accelerator(mixed_precision=config.mixed_precision, cpu=cpu, log_with=log_with,
                       project_dir=str(Path(config.output) / "logs"))


def _weight_dtype(accelerator) -> torch.dtype:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


def latest_checkpoint(output: Path) -> Path | None:
    folder = output / CHECKPOINTS
    found = [p for p in folder.glob("step-*") if (p / STATE_FILE).is_file()] if folder.is_dir() else []
    return max(found, key=lambda p: int(p.name.split("-")[1]), default=None)


class Trainer:
    def __init__(self, config: TrainConfig, resume: bool = False, show_progress: bool = True):
        self.config, self.resume, self.show_progress = config, resume, show_progress
        self.output = Path(config.output).expanduser()
        self._check_output()
        self.accelerator = _accelerator(config)
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.is_rpo = isinstance(config, RPOConfig)
        self.needs_reference = isinstance(config, DPOConfig)
        if self.is_rpo and config.contrast == "local" and config.pairs_per_device == 1:
            log.warning("rpo with one pair per device and --contrast local has a 1x1 matrix: it equals DPO. "
                        "Use more pairs per device or --contrast global.")

    def _check_output(self) -> None:
        if self.output.exists() and not self.output.is_dir():
            raise BadInputError(f"--output {self.output} is a file; give a folder")
        if not self.resume and latest_checkpoint(self.output) is not None:
            raise BadInputError(f"--output {self.output} already holds a run; pass --resume to continue it, "
                                "or choose another folder")

    # -- set-up ---------------------------------------------------------------------------------------------
    def setup(self) -> None:
        from rpo_bench.micro.preferences import resolve_preference_source
        from rpo_bench.models.catalog import resolve_model
        from rpo_bench.models.loader import load_pipeline, model_fingerprint
        from rpo_bench.training.data import load_preference_data

        config, accelerator = self.config, self.accelerator
        self.spec = resolve_model(config.model)
        self.base_fingerprint = model_fingerprint(self.spec)
        with accelerator.main_process_first():
            source = resolve_preference_source(config.data, self.show_progress and accelerator.is_main_process)
            self.data = load_preference_data(source, split=config.data_split, limit=config.data_limit or None,
                                             stream=config.data_stream,
                                             show_progress=self.show_progress and accelerator.is_main_process)
        self.table = None
        if self.is_rpo:
            from rpo_bench.training.embeddings import compute_embeddings

            with accelerator.main_process_first():
                self.table = compute_embeddings(self.data, self.embed_model(), device=str(accelerator.device),
                                                show_progress=self.show_progress and accelerator.is_main_process)
        weight_dtype = _weight_dtype(accelerator)
        pipe = load_pipeline(self.spec, device=str(accelerator.device), dtype=torch.float32)
        resolution = config.resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
        self.parts = DiffusionParts(pipe, self.spec.family, resolution, accelerator.device, weight_dtype)
        for module in self.parts.frozen_modules():
            if module.dtype != weight_dtype:  # a no-op cast still makes diffusers warn on every set-up
                module.to(dtype=weight_dtype)
        unet = pipe.unet
        seed_everything(config.seed)  # LoRA's initial A matrices come from the global RNG
        self.reference, parameters = prepare_unet(unet, config, weight_dtype, self.needs_reference)
        optimizer = make_optimizer(parameters, config)
        self.lr_scheduler = make_lr_scheduler(optimizer, config)
        # The scheduler is not passed to prepare(): accelerate would step it once per process.
        self.unet, self.optimizer = accelerator.prepare(unet, optimizer)
        accelerator.register_for_checkpointing(self.lr_scheduler)
        self.parameters = parameters

    def embed_model(self) -> str:
        name = self.config.embed_model
        return self.spec.clip_source if name == "auto" else name

    # -- one micro-step -------------------------------------------------------------------------------------
    def _micro_batch(self, micro_step: int):
        config = self.config
        global_batch = config.pairs_per_device * self.world
        indices = global_batch_indices(len(self.data), config.seed, micro_step, global_batch)
        local = range(self.rank * config.pairs_per_device, (self.rank + 1) * config.pairs_per_device)
        randomness = draw_randomness(config.seed, micro_step, list(local), self.parts.latent_shape,
                                     self.parts.noise_scheduler.config.num_train_timesteps, config.caption_dropout,
                                     config.timestep_sharing)
        pairs = [self.data[indices[i]] for i in local]
        return indices, pairs, randomness

    def _errors(self, pairs, randomness) -> dict[str, torch.Tensor]:
        parts = self.parts
        captions = ["" if drop else pair.caption for pair, drop in zip(pairs, randomness.drop_caption, strict=True)]
        condition = parts.encode_text(captions)
        winners = torch.stack([image_to_tensor(p.winner, parts.resolution) for p in pairs])
        z_w = parts.encode_images(winners, randomness.vae_noise_w)
        if not self.needs_reference:  # SFT: the preferred images only, no reference
            model_err_w = parts.denoising_error(self.unet, z_w, randomness.noise, randomness.timesteps, condition)
            return {"model_err_w": model_err_w}
        losers = torch.stack([image_to_tensor(p.loser, parts.resolution) for p in pairs])
        z_l = parts.encode_images(losers, randomness.vae_noise_l)
        latents = torch.cat([z_w, z_l])
        noise = torch.cat([randomness.noise, randomness.noise])
        timesteps = torch.cat([randomness.timesteps, randomness.timesteps])
        both = repeat_condition(condition, 2)
        model_err = parts.denoising_error(self.unet, latents, noise, timesteps, both)
        with torch.no_grad():
            if self.reference is not None:
                ref_err = parts.denoising_error(self.reference, latents, noise, timesteps, both)
            else:
                with adapters_disabled(self.accelerator.unwrap_model(self.unet)) as base:
                    ref_err = parts.denoising_error(base, latents, noise, timesteps, both)
        m = len(pairs)
        return {"model_err_w": model_err[:m], "model_err_l": model_err[m:],
                "ref_err_w": ref_err[:m].detach(), "ref_err_l": ref_err[m:].detach()}

    def _loss(self, errors: dict[str, torch.Tensor], indices: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        config = self.config
        if not self.needs_reference:
            loss = losses.sft_loss(errors["model_err_w"])
            return loss, {"loss": loss.item(), "model_err_w_mean": errors["model_err_w"].mean().item()}
        args = (errors["model_err_w"], errors["model_err_l"], errors["ref_err_w"], errors["ref_err_l"])
        if not self.is_rpo:
            loss = losses.dpo_loss(*args, config.beta)
            return loss, {"loss": loss.item(), **losses.preference_diagnostics(*args, config.beta)}
        if config.contrast == "global" and self.world > 1:
            return self._global_rpo_loss(errors, indices)
        local = indices[self.rank * config.pairs_per_device:(self.rank + 1) * config.pairs_per_device]
        weights = self._weights(local)
        loss = losses.rpo_loss(*args, weights, config.beta, config.weight_scale, config.placement)
        return loss, {"loss": loss.item(), **losses.preference_diagnostics(*args, config.beta, weights)}

    def _weights(self, indices: list[int]) -> torch.Tensor:
        from rpo_bench.training.embeddings import pair_embeddings

        u, v = pair_embeddings(self.table, indices, self.config.embed_mode)
        return losses.rpo_weights(u, v, self.config.tau, self.config.pin_diagonal).to(self.accelerator.device)

    def _global_rpo_loss(self, errors, indices) -> tuple[torch.Tensor, dict[str, float]]:
        """METHOD.md RPO item 6: the matrix over every process's pairs; gradients only through local rows and
        columns. Every process knows the global batch's indices, so only the D values are gathered."""
        config, accelerator = self.config, self.accelerator
        m, total = config.pairs_per_device, len(indices)
        d_w = errors["model_err_w"] - errors["ref_err_w"]
        d_l = errors["model_err_l"] - errors["ref_err_l"]
        gathered = {k: accelerator.gather(v.detach()) for k, v in errors.items()}
        all_d_w = gathered["model_err_w"] - gathered["ref_err_w"]
        all_d_l = gathered["model_err_l"] - gathered["ref_err_l"]
        mine = torch.zeros(total, dtype=torch.bool, device=d_w.device)
        mine[self.rank * m:(self.rank + 1) * m] = True
        d_l_columns = all_d_l.clone().to(d_l.dtype)
        d_l_columns[mine] = d_l  # live in this process's columns
        weights = self._weights(indices)
        options = dict(beta=config.beta, weight_scale=config.weight_scale, placement=config.placement,
                       num_pairs=total)
        rows = losses.rpo_loss_from_diffs(d_w, d_l_columns, weights[mine], **options)
        cols = losses.rpo_loss_from_diffs(all_d_w[~mine], d_l, weights[~mine][:, mine], **options)
        # DDP averages gradients over processes; the full-batch gradient is their SUM, hence the factor.
        loss = (rows + cols) * self.world / total**2
        value = accelerator.reduce(rows.detach(), reduction="sum") / total**2
        diagnostics = losses.preference_diagnostics(gathered["model_err_w"], gathered["model_err_l"],
                                                    gathered["ref_err_w"], gathered["ref_err_l"], config.beta, weights)
        return loss, {"loss": value.item(), **diagnostics}

    # -- the loop -------------------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        from rpo_bench.progress import progress_bar

        config, accelerator = self.config, self.accelerator
        self.setup()
        start = self._restore() if self.resume else 0
        history: list[dict[str, float]] = []
        show = self.show_progress and accelerator.is_main_process
        with progress_bar(f"train {config.method}", config.steps - start, show) as advance:
            for step in range(start, config.steps):
                began = time.perf_counter()
                record = self._optimizer_step(step)
                record.update(step=step + 1, lr=self.lr_scheduler.get_last_lr()[0],
                              seconds=time.perf_counter() - began)
                history.append(record)
                self._log(record)
                if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps:
                    self._checkpoint(step + 1)
                advance(1)
        self._checkpoint(config.steps)
        if accelerator.is_main_process:
            from rpo_bench.training.output import save_output

            save_output(self, config.steps)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return TrainResult(self.output, config.steps, start, history)

    def _optimizer_step(self, step: int) -> dict[str, float]:
        config, accelerator = self.config, self.accelerator
        sums: dict[str, float] = {}
        for micro in range(config.grad_accum):
            micro_step = step * config.grad_accum + micro
            indices, pairs, randomness = self._micro_batch(micro_step)
            last = micro == config.grad_accum - 1
            with accelerator.autocast():
                errors = self._errors(pairs, randomness)
                loss, diagnostics = self._loss(errors, indices)
            if last:
                accelerator.backward(loss / config.grad_accum)
            else:
                with accelerator.no_sync(self.unet):
                    accelerator.backward(loss / config.grad_accum)
            for key, value in diagnostics.items():
                sums[key] = sums.get(key, 0.0) + value / config.grad_accum
        grad_norm = accelerator.clip_grad_norm_(self.parameters, config.max_grad_norm or math.inf)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        global_values = self.is_rpo and config.contrast == "global"  # already computed over all processes
        if self.world > 1 and not global_values:
            sums = {k: float(accelerator.reduce(torch.tensor(v, device=accelerator.device), "mean"))
                    for k, v in sums.items()}
        sums["grad_norm"] = float(grad_norm)  # identical on every process after the all-reduce
        return sums

    def _log(self, record: dict[str, float]) -> None:
        accelerator = self.accelerator
        accelerator.log({k: v for k, v in record.items() if k != "step"}, step=int(record["step"]))
        if not accelerator.is_main_process:
            return
        self.output.mkdir(parents=True, exist_ok=True)
        with open(self.output / "train_log.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.config.log_every and int(record["step"]) % self.config.log_every == 0 and self.show_progress:
            from rpo_bench.training.output import format_diagnostics

            accelerator.print(format_diagnostics(record))

    # -- checkpoints ----------------------------------------------------------------------------------------
    def _checkpoint(self, steps_done: int) -> None:
        accelerator = self.accelerator
        final = self.output / CHECKPOINTS / f"step-{steps_done}"
        tmp = self.output / CHECKPOINTS / f".step-{steps_done}.tmp"
        if accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {"step": steps_done, "config": self.config.to_dict(), "data": self.data.fingerprint}
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            kept = sorted((p for p in final.parent.glob("step-*")), key=lambda p: int(p.name.split("-")[1]))
            for old in kept[:-max(1, self.config.checkpoints_keep)]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    def _restore(self) -> int:
        checkpoint = latest_checkpoint(self.output)
        if checkpoint is None:
            return 0  # nothing to resume: start from scratch (an interrupted run before its first checkpoint)
        state = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
        mismatch = resume_mismatch(state["config"], self.config)
        if mismatch:
            raise BadInputError(f"cannot resume {self.output}: it was made with another config ({'; '.join(mismatch)})")
        if state.get("data") != self.data.fingerprint:
            raise BadInputError(f"cannot resume {self.output}: the preference data changed since it was made")
        self.accelerator.load_state(str(checkpoint))
        log_file = self.output / "train_log.jsonl"
        if self.accelerator.is_main_process and log_file.is_file():  # drop log lines of the replayed steps
            lines = [line for line in log_file.read_text(encoding="utf-8").splitlines()
                     if line and json.loads(line)["step"] <= state["step"]]
            log_file.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return int(state["step"])


def train(config: TrainConfig, resume: bool = False, show_progress: bool = True) -> TrainResult:
    return Trainer(config, resume=resume, show_progress=show_progress).train()

