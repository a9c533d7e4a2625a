"""The accelerate training loop for every registered method (training/methods/), LoRA or full, one or many
processes.

A step: pick the global micro-batch (a function of the step), encode captions and images, run the UNet on
winners and losers with shared timestep and noise (an unpaired method: on single images, each with its own), the
reference likewise under no_grad when the method has one, then the method's loss from the per-sample errors.
With --ema-decay the moving average of the weights is kept beside them, and is what is saved and evaluated.
All randomness is a function of (seed, step, pair position), so `--resume` replays exactly.
Batches come from the training pairs only: a held-out slice of whole prompts (heldout.py) is measured against the
reference every --eval-every steps and at the end, and logged beside the steps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import statistics
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rpo_bench.core.atomic import atomic_write
from rpo_bench.core.config import seed_everything
from rpo_bench.core.errors import BadInputError, RpoBenchError
from rpo_bench.core.locks import folder_lock, refuse_if_locked
from rpo_bench.core.progress import progress_bar, stage, stage_headers
from rpo_bench.models.catalog import resolve_model
from rpo_bench.models.loader import load_pipeline, model_fingerprint
from rpo_bench.style.registry import get_style
from rpo_bench.training.batches import draw_randomness, global_batch_indices, image_to_tensor
from rpo_bench.training.checkpoint import (
    CHECKPOINTS,
    SNAPSHOTS,
    STATE_FILE,
    CheckpointWriteError,
    latest_checkpoint,
    load_weights,
    read_checkpoint,
    read_state,
    write_checkpoint,
    write_failure_reason,
)
from rpo_bench.training.config import TrainConfig, resume_mismatch
from rpo_bench.training.data import load_preference_data
from rpo_bench.training.diffusion import DiffusionParts, adapters_disabled, repeat_condition
from rpo_bench.training.ema import EMA
from rpo_bench.training.heldout import HeldOutEvaluator, split_heldout
from rpo_bench.training.methods import get_method
from rpo_bench.training.micro_pickapic import resolve_preference_source
from rpo_bench.training.output import (
    RECORD_FILE,
    check_name_free,
    format_diagnostics,
    format_heldout,
    is_training_run,
    save_output,
)
from rpo_bench.training.style_pairs import build_style_pairs
from rpo_bench.training.unet_setup import make_lr_scheduler, make_optimizer, prepare_unet

log = logging.getLogger(__name__)
LOG_FILE = "train_log.jsonl"
__all__ = ["CHECKPOINTS", "STATE_FILE", "OutputWriteError", "TrainResult", "Trainer", "TrainingDivergedError",
           "latest_checkpoint", "train"]
LOCKED = "training output"  # how the lock's refusal names the folder


class TrainingDivergedError(RpoBenchError):
    """The loss or gradient went non-finite: the run stops before that step touches the weights."""


class OutputWriteError(RpoBenchError):
    """A write into the training output failed mid-run (a full disk, a file system gone read-only): one line
    naming the file and the last good checkpoint, from which --resume continues."""


@dataclass
class TrainResult:
    output: Path
    steps_done: int
    resumed_from: int
    history: list[dict[str, float]] = field(default_factory=list)
    heldout: list[dict[str, float]] = field(default_factory=list)  # the held-out measurements of this session


def _accelerator(config: TrainConfig):
    from accelerate import Accelerator  # noqa: PLC0415 - accelerate loads in seconds: on first use

    cpu = config.device == "cpu" or not torch.cuda.is_available()
    if cpu and config.mixed_precision == "fp16":
        raise BadInputError("--mixed-precision fp16 needs a GPU; on the CPU use bf16 or no")
    log_with = None
    try:
        import tensorboard  # noqa: PLC0415, F401 - optional: logs go to TensorBoard only when it is installed

        log_with = "tensorboard"
    except ImportError:
        pass
    return Accelerator(mixed_precision=config.mixed_precision, cpu=cpu, log_with=log_with,
                       project_dir=str(Path(config.output) / "logs"))


def style_source(config: TrainConfig, device: str, show_progress: bool) -> str:
    """--style: the style's preference folder, built once (reference pairs, or --data re-labelled by the style
    probe; a micro style re-labels micro-pickapic when --data is empty)."""
    style = get_style(config.style)
    relabel_source = config.data or ("micro-pickapic" if style.micro else None)
    return str(build_style_pairs(style, config.pairs, source=relabel_source, per_reference=config.style_losers,
                                 device=device, show_progress=show_progress))


def _weight_dtype(accelerator) -> torch.dtype:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


class InterruptLatch:
    """Holds Ctrl-C back while weights, optimizer and scheduler change together, so an interrupt never leaves a
    half-applied step to be checkpointed; the loop raises it once the step is logged."""

    def __init__(self) -> None:
        self.pending = False

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        # Only the main thread may set handlers, and a handler someone else installed (or SIG_IGN) stays theirs.
        if threading.current_thread() is not threading.main_thread() or \
                signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            yield
            return

        def hold(signum, frame) -> None:
            self.pending = True

        signal.signal(signal.SIGINT, hold)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def raise_if_pending(self) -> None:
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


class SpikeWatch:
    """One warning line when the loss or gradient norm stays far above its earlier level: an early sign of
    divergence, while the run can still be stopped and restarted from a checkpoint with a lower --lr.

    "Stays": the median of the last `recent` steps, not one step, is compared with the median of the `window`
    steps before them. Single steps are no sign: a preference loss near saturation is near 0 on most batches and
    10x that on an occasional hard one (the micro-style preset's own run: 3 single loss steps and 1 grad-norm step
    over 10x their median, none of them a trend; held-out accuracy 1.00 throughout), and clipping bounds what one
    step can do. Diverging runs rise and stay risen, which the median of 10 steps sees within about 5 steps."""

    window, recent, warmup, factor = 50, 10, 20, 10.0

    def __init__(self) -> None:
        self.values = {key: deque(maxlen=self.window + self.recent) for key in ("loss", "grad_norm")}
        self.last_warned = {key: -self.window for key in self.values}

    def check(self, record: dict[str, float]) -> list[str]:
        step, messages = int(record["step"]), []
        for key, values in self.values.items():
            value = record.get(key)
            if value is None or not math.isfinite(value):
                continue
            values.append(value)
            earlier = list(values)[:-self.recent]
            if len(earlier) < self.warmup or step - self.last_warned[key] < self.window:
                continue
            baseline, level = statistics.median(earlier), statistics.median(list(values)[-self.recent:])
            if baseline > 0 and level > self.factor * baseline:
                self.last_warned[key] = step
                messages.append(f"step {step}: {key} has stayed high: {level:.4g} (median of the last {self.recent} "
                                f"steps) is {level / baseline:.0f}x its median over the {len(earlier)} steps before "
                                f"({baseline:.4g}); training may be diverging (a lower --lr helps)")
        return messages


class Trainer:
    def __init__(self, config: TrainConfig, resume: bool = False, show_progress: bool = True,
                 overwrite_name: bool = False):
        self.config, self.resume, self.show_progress = config, resume, show_progress
        self.overwrite_name = overwrite_name
        self.output = Path(config.output).expanduser()
        self._check_output()
        self._check_resume()
        if overwrite_name and not config.name:
            raise BadInputError("--overwrite-name replaces the registry entry named by --name; give --name too")
        if config.name:  # before hours of training, not after

            check_name_free(config.name, self.output, overwrite=overwrite_name)
        self.heldout = None
        self.heldout_history: list[dict[str, float]] = []
        self.steps_done = self._last_checkpoint = 0
        self._restored_from: Path | None = None  # the checkpoint --resume read, checked again under the lock
        self._log_lines: list[str] = []  # train_log.jsonl as written so far
        self._interrupts = InterruptLatch()
        self.accelerator = _accelerator(config)
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.method = get_method(config.method)
        self.needs_reference = self.method.needs_reference
        for message in self.method.warnings(config) if self.accelerator.is_main_process else []:
            log.warning(message)

    def _check_output(self) -> None:
        if self.output.exists() and not self.output.is_dir():
            raise BadInputError(f"--output {self.output} is a file; give a folder")
        self._check_writable()
        if not self.resume and (latest_checkpoint(self.output) is not None or (self.output / RECORD_FILE).is_file()):
            raise BadInputError(f"--output {self.output} already holds a run; pass --resume to continue it, "
                                "or choose another folder")
        if self.output.is_dir() and not is_training_run(self.output):
            # A user's folder: training would write README.md, unet/ and rpo_bench.json over their files.
            others = sorted(p.name for p in self.output.iterdir() if not p.name.startswith("."))
            if others:
                shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
                raise BadInputError(f"--output {self.output} holds files that are not an rpo-bench run ({shown}); "
                                    "choose a new or empty folder")

    def _check_writable(self) -> None:
        """An output that cannot be written is refused before anything loads, creating nothing: the folder, or
        the nearest one above it that exists, must be a folder this process may write. The lock and a probe write
        check it for real before the first step (as root, permissions alone say little)."""
        existing = self.output
        while not os.path.lexists(existing) and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise BadInputError(f"--output {self.output}: {existing} is not a folder; give a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY) if hasattr(os, "statvfs") else False
            reason = "it is on a read-only file system" if read_only else "no write permission"
            raise BadInputError(f"cannot write --output {self.output} ({reason} for {existing}); nothing was "
                                "trained: choose a writable folder")

    def _check_resume(self) -> None:
        """What the checkpoint's JSON alone can refuse, refused before any model or data loads."""
        folder = latest_checkpoint(self.output) if self.resume else None
        if folder is None:
            return
        state = read_state(folder)
        if state["step"] > self.config.steps:
            raise BadInputError(f"checkpoint {folder} at step {state['step']} is past --steps {self.config.steps}; "
                                f"pass --steps >= {state['step']}")
        mismatch = resume_mismatch(state["config"], self.config)
        if mismatch:
            raise BadInputError(f"cannot resume {self.output}: it was made with another config ({'; '.join(mismatch)})")

    # -- set-up ---------------------------------------------------------------------------------------------
    def setup(self) -> None:
        config, accelerator = self.config, self.accelerator
        self.spec = resolve_model(config.model)
        self.base_fingerprint = model_fingerprint(self.spec)
        with accelerator.main_process_first():
            show = self.show_progress and accelerator.is_main_process
            source = (style_source(config, str(accelerator.device), show) if config.style
                      else resolve_preference_source(config.data, show))
            stage("reading pairs", source)
            self.data = load_preference_data(source, split=config.data_split, limit=config.data_limit or None,
                                             stream=config.data_stream,
                                             show_progress=self.show_progress and accelerator.is_main_process)

        self.train_indices, self.heldout_indices = split_heldout(self.data.captions, config.heldout_pairs,
                                                                 config.seed)
        self.table = None  # RPO's embedding table (the method's set-up fills it)
        self.method.setup(self)
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
        # Not register_for_checkpointing: checkpoints are our own pickle-free format (checkpoint.py).
        self.unet, self.optimizer = accelerator.prepare(unet, optimizer)
        self.parameters = parameters
        trained = {name: p for name, p in unet.named_parameters() if p.requires_grad}
        self.ema = EMA(trained, config.ema_decay) if config.ema_decay else None

    def _final_weights(self):
        """What is saved and evaluated: the EMA swapped in when there is one, else the weights as trained."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    # -- one micro-step -------------------------------------------------------------------------------------
    def _micro_batch(self, micro_step: int):
        config = self.config
        if self.method.unpaired:  # two single images per pair of the budget, so that a step costs what DPO's does
            per_device = 2 * config.pairs_per_device
            positions = list(range(self.rank * per_device, (self.rank + 1) * per_device))
            batch = self.method.draw(self, micro_step, positions, per_device * self.world)
            return [item.pair for item in batch.items], batch, batch.randomness
        global_batch = config.pairs_per_device * self.world
        # Batches are drawn over the training pairs; without held-out pairs these are all pairs, in data order.
        positions = global_batch_indices(len(self.train_indices), config.seed, micro_step, global_batch)
        indices = [self.train_indices[p] for p in positions]
        local = range(self.rank * config.pairs_per_device, (self.rank + 1) * config.pairs_per_device)
        randomness = draw_randomness(config.seed, micro_step, list(local), self.parts.latent_shape,
                                     self.parts.noise_scheduler.config.num_train_timesteps, config.caption_dropout,
                                     config.timestep_sharing)
        pairs = [self.data[indices[i]] for i in local]
        return indices, pairs, randomness

    def _errors(self, pairs, randomness) -> dict[str, torch.Tensor]:
        """The step's per-sample errors for the method: winners' (and losers') err_theta, err_ref when the method
        has a reference, and the model's residuals over every element when it asks for them (winner-preserving)."""
        parts, method = self.parts, self.method
        if method.unpaired:
            return self._unpaired_errors(pairs, randomness)
        captions = ["" if drop else pair.caption for pair, drop in zip(pairs, randomness.drop_caption, strict=True)]
        condition = parts.encode_text(captions)
        winners = torch.stack([image_to_tensor(p.winner, parts.resolution) for p in pairs])
        z_w = parts.encode_images(winners, randomness.vae_noise_w)
        if not method.reads_losers:  # SFT: the preferred images only
            model_err_w = parts.denoising_error(self.unet, z_w, randomness.noise, randomness.timesteps, condition)
            return {"model_err_w": model_err_w}
        losers = torch.stack([image_to_tensor(p.loser, parts.resolution) for p in pairs])
        z_l = parts.encode_images(losers, randomness.vae_noise_l)
        latents = torch.cat([z_w, z_l])
        noise = torch.cat([randomness.noise, randomness.noise])
        timesteps = torch.cat([randomness.timesteps, randomness.timesteps])
        both = repeat_condition(condition, 2)
        m = len(pairs)
        errors: dict[str, torch.Tensor] = {}
        if method.wants_residuals(self.config):
            model_err, residual = parts.denoising_error(self.unet, latents, noise, timesteps, both,
                                                        return_residual=True)
            errors.update(residual_w=residual[:m], residual_l=residual[m:])
        else:
            model_err = parts.denoising_error(self.unet, latents, noise, timesteps, both)
        errors.update(model_err_w=model_err[:m], model_err_l=model_err[m:])
        if self.needs_reference:
            ref_err = self._reference_errors(latents, noise, timesteps, both)
            errors.update(ref_err_w=ref_err[:m], ref_err_l=ref_err[m:])
        return errors

    def _unpaired_errors(self, batch, randomness) -> dict[str, torch.Tensor]:
        """err_theta (and err_ref) of single images, each with its own timestep and noise, and their labels."""
        parts = self.parts
        captions = ["" if drop else caption for caption, drop in zip(batch.captions, randomness.drop_caption,
                                                                     strict=True)]
        condition = parts.encode_text(captions)
        images = torch.stack([image_to_tensor(image, parts.resolution) for image in batch.images])
        latents = parts.encode_images(images, randomness.vae_noise_w)
        errors = {"model_err": parts.denoising_error(self.unet, latents, randomness.noise, randomness.timesteps,
                                                     condition),
                  "desirable": torch.tensor([item.desirable for item in batch.items], device=latents.device)}
        if self.needs_reference:
            errors["ref_err"] = self._reference_errors(latents, randomness.noise, randomness.timesteps, condition)
        return errors

    def _reference_errors(self, latents, noise, timesteps, condition) -> torch.Tensor:
        """err_ref under no_grad: the frozen copy (full fine-tuning) or the same UNet with its adapters off (LoRA)."""
        with torch.no_grad():
            if self.reference is not None:
                return self.parts.denoising_error(self.reference, latents, noise, timesteps, condition).detach()
            with adapters_disabled(self.accelerator.unwrap_model(self.unet)) as base:
                return self.parts.denoising_error(base, latents, noise, timesteps, condition).detach()

    def _loss(self, errors: dict[str, torch.Tensor], indices: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.method.loss(self, errors, indices)

    # -- the loop -------------------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        # one header line per phase that runs (building pairs, generating losers, embeddings, training, saving):
        # on the main process only, and not with --quiet
        with stage_headers(self.show_progress and self.accelerator.is_main_process):
            return self._train()

    def _train(self) -> TrainResult:
        config, accelerator = self.config, self.accelerator
        self._agree(self._refuse_if_in_use)  # before minutes of loading, not after
        self.setup()
        self._prepare_heldout()  # before _restore: the UNet still holds the base weights, whatever the method
        start = self._restore() if self.resume else 0  # reads only: a refused checkpoint leaves the folder as it was
        with self._holding_output():  # one writer at a time, from the first write to the last
            # lines of replayed steps go (and of a run killed before its first checkpoint, which restarts at 0)
            self._truncate_log(start)
            self.steps_done = start
            try:
                history = self._loop(start)
                if self._last_checkpoint != config.steps:
                    self._checkpoint(config.steps)
            except KeyboardInterrupt:
                self._save_on_interrupt()
                raise
            if accelerator.is_main_process:
                stage("saving", f"weights, {RECORD_FILE} and model card -> {self.output}")
                with self._writing(self.output), self._final_weights():
                    save_output(self, config.steps)
            accelerator.wait_for_everyone()
        accelerator.end_training()
        return TrainResult(self.output, config.steps, start, history, self.heldout_history)

    # -- the output folder: one writer, writable, every failed write one line -------------------------------------
    def _agree(self, check) -> None:
        """Run `check` on the main process only and raise its refusal on every process: a refusal the other
        processes did not hear of would leave them waiting for the main one at the next collective."""
        refusal = None
        if self.accelerator.is_main_process:
            try:
                check()
            except RpoBenchError as exc:
                refusal = str(exc)
        if self.world > 1:
            from accelerate.utils import broadcast_object_list  # noqa: PLC0415 - accelerate loads in seconds: on first use

            refusal = broadcast_object_list([refusal], from_process=0)[0]
        if refusal is not None:
            raise BadInputError(refusal)

    def _refuse_if_in_use(self) -> None:
        refuse_if_locked(self.output, LOCKED)

    @contextlib.contextmanager
    def _holding_output(self) -> Iterator[None]:
        """The main process holds the output's lock for the whole run (a second `train` into it is refused in one
        line naming this process), checks again under it what __init__ checked without it (another run may have
        written here meanwhile), and writes a probe file: an output that cannot be written is refused before the
        first step. The other processes never write into the output."""
        with contextlib.ExitStack() as stack:
            def lock_and_check() -> None:
                try:
                    try:
                        stack.enter_context(folder_lock(self.output, LOCKED))
                        self._check_output()
                        if self.resume and latest_checkpoint(self.output) != self._restored_from:
                            raise BadInputError(f"--output {self.output} changed while this run was loading (another "
                                                "run wrote a checkpoint there); run the command again")
                        self._probe_writable()
                    except OSError as exc:  # a full disk can fail the lock file's pid as well as the probe
                        raise BadInputError(f"cannot write --output {self.output} ({exc.strerror or exc}); nothing "
                                            "was trained: free space or choose a writable folder") from exc
                except BaseException:
                    stack.close()  # the lock is not kept by a run that will not write
                    raise

            self._agree(lock_and_check)
            yield

    def _probe_writable(self) -> None:
        """Create, fill, fsync and remove a small file: permissions, a read-only mount and a full disk all fail
        here, before the first step, rather than at the first checkpoint."""
        probe = self.output / f".rpo-bench-write-test.{os.getpid()}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"rpo-bench checks that this folder can be written\n")
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    @contextlib.contextmanager
    def _writing(self, target: Path) -> Iterator[None]:
        """A failed write into the output (a full disk mid-run) is one line naming what could not be written and
        the checkpoint a --resume continues from; a checkpoint's own failure already says both."""
        try:
            yield
        except CheckpointWriteError:
            raise
        except Exception as exc:
            # torch.save wraps the OSError in a RuntimeError, safetensors in its own error quoting it; anything
            # else is a bug and keeps its traceback
            failed_write = isinstance(exc, OSError) or (
                isinstance(exc, RuntimeError) and isinstance(exc.__context__, OSError)) or (
                type(exc).__name__ == "SafetensorError" and "I/O error" in str(exc))
            if not failed_write:
                raise
            last = latest_checkpoint(self.output)
            raise OutputWriteError(f"cannot write {target}: {write_failure_reason(exc)}; the last good checkpoint is "
                                   f"{last or 'none (no step saved yet)'}. Free space (or make the folder writable), "
                                   "then run the same command with --resume") from exc

    def _loop(self, start: int) -> list[dict[str, float]]:
        config = self.config
        history: list[dict[str, float]] = []
        spikes = SpikeWatch()
        show = self.show_progress and self.accelerator.is_main_process
        if start < config.steps:
            resumed = f", resumed from the checkpoint at step {start}" if start else ""
            stage("training", f"{config.method}, steps {start + 1}-{config.steps}{resumed}")
        # counted from the step the run resumes at: the bar's numbers are the diagnostics' step numbers
        with progress_bar(f"train {config.method}", config.steps, show, unit="step", start=start) as advance:
            for step in range(start, config.steps):
                began = time.perf_counter()
                record = self._optimizer_step(step)
                record.update(step=step + 1, lr=self.lr_scheduler.get_last_lr()[0],
                              seconds=time.perf_counter() - began)
                history.append(record)
                self._log(record)
                for message in spikes.check(record) if self.accelerator.is_main_process else []:
                    log.warning(message)
                if self._heldout_due(step + 1):  # logged before the checkpoint, so a resume keeps or replays both
                    self._evaluate_heldout(step + 1)
                if config.snapshot_every and (step + 1) % config.snapshot_every == 0 and step + 1 < config.steps:
                    self._snapshot(step + 1)
                if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps:
                    self._checkpoint(step + 1)
                advance(1, status=f"loss {record['loss']:.4g}")
                self._interrupts.raise_if_pending()
        return history

    def _snapshot(self, steps_done: int) -> None:
        """The model after `steps_done` steps as an evaluable output folder (OUTPUT/snapshots/step-N), for curves of
        a metric against training steps. Written before a checkpoint at the same step, so a resume redoes both."""
        if self.accelerator.is_main_process:
            folder = self.output / SNAPSHOTS / f"step-{steps_done}"
            with self._writing(folder), self._final_weights():
                save_output(self, steps_done, folder=folder)
        self.accelerator.wait_for_everyone()

    # -- held-out pairs -------------------------------------------------------------------------------------
    def _prepare_heldout(self) -> None:
        """Encode the held-out pairs and measure the reference on them once: the frozen copy (full DPO / RPO), the
        UNet with its adapters off (LoRA), or the UNet itself before any checkpoint is loaded (full SFT)."""
        if not self.heldout_indices:
            return

        config = self.config
        # The held-out margin reads on DPO's scale: a method's own beta only where it is a dpo-half beta.
        beta = getattr(config, "beta", None) if self.method.convention == "dpo-half" else None
        self.heldout = HeldOutEvaluator(self.data, self.heldout_indices, self.parts, config.seed, beta,
                                        config.pairs_per_device, self.accelerator)
        unet = self.accelerator.unwrap_model(self.unet)
        if self.reference is not None:
            self.heldout.measure_reference(self.reference)
        elif config.lora_rank > 0:
            self.heldout.measure_reference(unet, lambda: adapters_disabled(unet))
        else:
            self.heldout.measure_reference(unet)

    def _heldout_due(self, steps_done: int) -> bool:
        every = self.config.eval_every
        return self.heldout is not None and ((every > 0 and steps_done % every == 0) or steps_done == self.config.steps)

    def _evaluate_heldout(self, steps_done: int) -> None:
        # The unwrapped module: a DDP forward would broadcast buffers, a collective the measurement does not need.
        with self._final_weights():
            record: dict[str, float] = {"step": steps_done,
                                        **self.heldout.evaluate(self.accelerator.unwrap_model(self.unet))}
        self.heldout_history.append(record)
        self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=steps_done)
        if not self.accelerator.is_main_process:
            return
        self._append_log_line(record)
        if self.show_progress:
            self.accelerator.print(format_heldout(record))

    def _save_on_interrupt(self) -> None:
        """Ctrl-C keeps every finished step: checkpoint the last completed one, then the CLI exits 130. Only the
        main process writes, without a barrier: the other processes may already be gone."""
        if self.steps_done <= self._last_checkpoint or not self.accelerator.is_main_process:
            return
        with self._interrupts.deferred():  # a second Ctrl-C must not cut the checkpoint in half
            self._write_checkpoint(self.steps_done)
        log.warning("interrupted: saved checkpoint step-%d in %s", self.steps_done, self.output / CHECKPOINTS)

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
        global_values = self.method.diagnostics_are_global(self)  # already computed over all processes
        if self.world > 1 and not global_values:  # before the check below, so every process decides alike
            sums = {k: float(accelerator.reduce(torch.tensor(v, device=accelerator.device), "mean"))
                    for k, v in sums.items()}
        sums["grad_norm"] = float(grad_norm)  # identical on every process after the all-reduce
        self._check_finite(step + 1, sums)
        with self._interrupts.deferred():
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update()
            self.steps_done = step + 1
        return sums

    def _check_finite(self, step: int, sums: dict[str, float]) -> None:
        """Stop before a non-finite loss or gradient reaches the weights; the last checkpoint stays the last good
        state. Under fp16 an infinite gradient norm is the grad scaler's business: it skips that step itself."""
        loss, norm = sums["loss"], sums["grad_norm"]
        if math.isfinite(loss) and (math.isfinite(norm) or self.accelerator.scaler is not None):
            return
        kept = latest_checkpoint(self.output)
        raise TrainingDivergedError(
            f"training diverged at step {step}: loss {loss:.4g}, gradient norm {norm:.4g}; stopped before applying "
            f"it, no final weights written, last checkpoint: {kept or 'none'}; lower --lr (now {self.config.lr:g})")

    def _log(self, record: dict[str, float]) -> None:
        accelerator = self.accelerator
        accelerator.log({k: v for k, v in record.items() if k != "step"}, step=int(record["step"]))
        if not accelerator.is_main_process:
            return
        self._append_log_line(record)
        step = int(record["step"])
        # The last step's line always: it is the run's final diagnostics, printed here once (the command does not
        # repeat it), whatever --log-every says.
        due = (self.config.log_every and step % self.config.log_every == 0) or step == self.config.steps
        if due and self.show_progress:
            accelerator.print(format_diagnostics(record))

    def _append_log_line(self, record: dict[str, float]) -> None:
        """The whole log rewritten atomically: a kill mid-write leaves the log without this line, never a torn
        one (a few kB per step, next to a step's seconds of compute)."""
        self._log_lines.append(json.dumps(record) + "\n")
        self._write_log()

    def _write_log(self) -> None:
        path = self.output / LOG_FILE
        with self._writing(path):
            atomic_write(path, "".join(self._log_lines))

    # -- checkpoints ----------------------------------------------------------------------------------------
    def _checkpoint(self, steps_done: int) -> None:
        accelerator = self.accelerator
        if accelerator.is_main_process:
            self._write_checkpoint(steps_done)
        self._last_checkpoint = steps_done
        accelerator.wait_for_everyone()

    def _write_checkpoint(self, steps_done: int) -> None:
        """Under DDP the processes hold identical weights and optimizer states: the main process's are the run's."""
        unet = self.accelerator.unwrap_model(self.unet)
        scaler = self.accelerator.scaler
        state: dict[str, Any] = {"step": steps_done, "config": self.config.to_dict(), "data": self.data.fingerprint,
                                 "lr_scheduler": self.lr_scheduler.state_dict(),
                                 "grad_scaler": scaler.state_dict() if scaler is not None else None}
        weights = {name: p for name, p in unet.named_parameters() if p.requires_grad}
        method_data = self.method.data_fingerprint(self)
        if method_data is not None:
            state["method_data"] = method_data
        ema = None
        if self.ema is not None:
            ema, state["ema_updates"] = self.ema.state()
        folder = self.output / CHECKPOINTS / f"step-{steps_done}"
        with self._writing(folder):
            write_checkpoint(folder, state, weights, self.optimizer.state_dict(), self.config.checkpoints_keep, ema)
        self._last_checkpoint = steps_done

    def _restore(self) -> int:
        folder = latest_checkpoint(self.output)
        if folder is None:
            return 0  # nothing to resume: start from scratch (an interrupted run before its first checkpoint)
        checkpoint = read_checkpoint(folder)  # __init__ checked its step and config
        self._restored_from = folder
        if checkpoint.state.get("data") != self.data.fingerprint:
            raise BadInputError(f"cannot resume {self.output}: the preference data changed since it was made")
        if checkpoint.state.get("method_data") != self.method.data_fingerprint(self):
            raise BadInputError(f"cannot resume {self.output}: what {self.config.method} derives from the data beyond "
                                "the pairs (kto: its labels, from the score columns with --kto-labels utility) changed "
                                "since it was made; accepted: the data the run started on, or a new --output")
        load_weights(self.accelerator.unwrap_model(self.unet), checkpoint.weights, folder)
        if self.ema is not None:
            if checkpoint.ema is None:  # the config check saw the same ema_decay: the file was removed
                raise BadInputError(f"checkpoint {folder} has no EMA weights; delete that step folder to resume "
                                    "from an earlier one")
            self.ema.load(checkpoint.ema, int(checkpoint.state["ema_updates"]), str(folder))
        try:
            self.optimizer.load_state_dict(checkpoint.optimizer)
            self.lr_scheduler.load_state_dict(checkpoint.state["lr_scheduler"])
            if self.accelerator.scaler is not None and checkpoint.state.get("grad_scaler"):
                self.accelerator.scaler.load_state_dict(checkpoint.state["grad_scaler"])
        except (KeyError, ValueError, TypeError) as exc:
            raise BadInputError(f"checkpoint {folder} does not fit this run's optimizer or schedule "
                                f"({type(exc).__name__}: {exc})") from exc
        self._last_checkpoint = checkpoint.step
        return checkpoint.step

    def _truncate_log(self, steps_done: int) -> None:
        """Keep the log lines of steps up to `steps_done`; later ones are replayed. Called under the lock."""
        log_file = self.output / LOG_FILE
        if not self.accelerator.is_main_process or not log_file.is_file():
            return
        text = log_file.read_text(encoding="utf-8", errors="replace")
        self._log_lines = [line + "\n" for line in text.splitlines() if _logged_step(line) <= steps_done]
        if len(self._log_lines) != len(text.splitlines()):
            self._write_log()


def _logged_step(line: str) -> float:
    """The step of a log line; a line cut short by a kill mid-write counts as a replayed step (dropped)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return math.inf
    return record.get("step", math.inf) if isinstance(record, dict) else math.inf


def train(config: TrainConfig, resume: bool = False, show_progress: bool = True,
          overwrite_name: bool = False) -> TrainResult:
    return Trainer(config, resume=resume, show_progress=show_progress, overwrite_name=overwrite_name).train()

