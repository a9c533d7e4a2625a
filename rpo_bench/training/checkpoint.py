"""Resumable checkpoints in a format that loads without running code.

accelerate's save_state writes pickles (the LR scheduler, the RNG states, the optimizer read back with
`torch.load(weights_only=False)`), so `--resume` on a folder someone else prepared could run their code. Here:

- `trainable.safetensors`: the trained weights (LoRA adapters, or every UNet weight), by parameter name;
- `ema.safetensors`: with --ema-decay, the moving average of those weights (its update count in the state);
- `optimizer.pt`: the optimizer state dict (tensors and numbers only), read with `torch.load(weights_only=True)`;
- `trainer_state.json`: step, config, data fingerprint, LR-scheduler and grad-scaler state; written last.

No RNG state is needed: every random draw of a step is a function of (seed, step, pair position) (batches.py).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rpo_bench.core.atomic import atomic_path, fsync_folder
from rpo_bench.core.errors import BadInputError, RpoBenchError

CHECKPOINTS = "checkpoints"
SNAPSHOTS = "snapshots"  # evaluable model folders saved along the way (--snapshot-every), not for resuming
STATE_FILE = "trainer_state.json"
WEIGHTS_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
EMA_FILE = "ema.safetensors"
CHECKPOINT_FORMAT = "rpo-bench-checkpoint/1"
_STEP_FOLDER = re.compile(r"step-(\d+)")


@dataclass
class Checkpoint:
    folder: Path
    state: dict[str, Any]
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    ema: dict[str, torch.Tensor] | None = None

    @property
    def step(self) -> int:
        return int(self.state["step"])


def checkpoint_step(folder: Path) -> int | None:
    match = _STEP_FOLDER.fullmatch(folder.name)
    return int(match.group(1)) if match else None


def latest_checkpoint(output: Path) -> Path | None:
    """The highest step-N folder whose state file exists (it is written last, so the folder is complete)."""
    folder = output / CHECKPOINTS
    if not folder.is_dir():
        return None
    found = [p for p in folder.iterdir() if checkpoint_step(p) is not None and (p / STATE_FILE).is_file()]
    return max(found, key=checkpoint_step, default=None)


class CheckpointWriteError(RpoBenchError):
    """A checkpoint could not be written (a full disk, a read-only file system): nothing of it is left, the
    checkpoints before it are untouched, and the message names the last good one."""


def write_failure_reason(exc: BaseException) -> str:
    """What the operating system said (\"No space left on device\"), also when a writer wrapped it: torch.save
    raises a RuntimeError from inside a failed file.write, safetensors an error that quotes the OS error."""
    cause = exc if isinstance(exc, OSError) else exc.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    text = " ".join(str(exc).split())
    if "I/O error: " in text:
        return re.sub(r" \(os error \d+\)$", "", text.rsplit("I/O error: ", 1)[-1])[:160]
    return f"{type(exc).__name__}: {text[:160]}"


def _remove_leftovers(folder: Path) -> None:
    """Hidden step folders a killed writer left (`.step-N.PID.tmp` half-written, `.step-N.PID.old` half-deleted).
    The caller holds the output's lock, so no other process is writing them."""
    for path in folder.glob(".step-*"):
        if path.is_dir() and path.name.endswith((".tmp", ".old")):
            shutil.rmtree(path, ignore_errors=True)


def _remove_folder(path: Path) -> None:
    """Out of sight first (one rename), then deleted: a kill mid-delete leaves a hidden leftover, never a step
    folder that lost some of its files."""
    hidden = path.with_name(f".{path.name}.{os.getpid()}.old")
    os.replace(path, hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def write_checkpoint(final: Path, state: dict[str, Any], weights: dict[str, torch.Tensor],
                     optimizer_state: dict[str, Any], keep: int, ema: dict[str, torch.Tensor] | None = None) -> None:
    """Write into a hidden temp folder, every file fsynced, then rename it into place: a kill at any moment
    leaves either the old checkpoint or the new one, never half of one. Then drop all but the newest `keep`
    checkpoints. A failed write (a full disk) removes the temp folder and raises CheckpointWriteError naming the
    last good checkpoint. Called by the one process that holds the output's lock."""
    from safetensors import SafetensorError  # noqa: PLC0415 - safetensors pulls torch: on first use
    from safetensors.torch import save_file  # noqa: PLC0415 - safetensors pulls torch: on first use

    text = json.dumps({"format": CHECKPOINT_FORMAT, **state}, indent=1)  # raises on anything JSON cannot hold
    parent = final.parent
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    writing = final
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(parent)
        tmp.mkdir()
        for name, tensors in ((WEIGHTS_FILE, weights), (EMA_FILE, ema)):
            if tensors is None:
                continue
            writing = tmp / name
            with atomic_path(writing) as path:
                save_file({key: tensor.detach().contiguous().cpu() for key, tensor in tensors.items()}, str(path))
        writing = tmp / OPTIMIZER_FILE
        with atomic_path(writing) as path, open(path, "wb") as handle:  # a handle: torch keeps the OSError
            torch.save(optimizer_state, handle)  # atomic: the handle is the atomic_path's temporary file
        writing = tmp / STATE_FILE
        with atomic_path(writing) as path:
            path.write_text(text, encoding="utf-8")
        writing = final
        if final.exists():
            _remove_folder(final)
        os.replace(tmp, final)  # atomic: the complete temporary folder takes the checkpoint's place
        fsync_folder(parent)
    except (OSError, RuntimeError, SafetensorError) as exc:  # RuntimeError: torch.save's wrapping of an OSError
        last = latest_checkpoint(parent.parent)
        file = f" ({writing.name})" if writing.parent == tmp else ""
        raise CheckpointWriteError(
            f"cannot write checkpoint {final}{file}: {write_failure_reason(exc)}; the last good checkpoint is "
            f"{last or 'none (no step saved yet)'}. Free space (or make the folder writable), then run the same "
            "command with --resume") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    kept = sorted((p for p in parent.iterdir() if checkpoint_step(p) is not None), key=checkpoint_step)
    for old in kept[:-max(1, keep)]:
        try:
            _remove_folder(old)
        except OSError:
            pass  # an old checkpoint that cannot be removed costs space, not correctness


def _damaged(folder: Path, name: str, exc: BaseException) -> BadInputError:
    if isinstance(exc, pickle.UnpicklingError):  # torch's own text is a paragraph about weights_only
        reason = "it holds objects other than tensors and numbers, which could run code"
    else:
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
    return BadInputError(f"checkpoint {folder}: {name} cannot be loaded safely ({reason}); "
                         "it is damaged or was not written by rpo-bench. Delete that step folder to resume from an "
                         "earlier one")


def read_state(folder: Path) -> dict[str, Any]:
    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _damaged(folder, STATE_FILE, exc) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise BadInputError(f"checkpoint {folder} is from an older rpo-bench (accelerate's pickle format), which "
                            "cannot be loaded safely; train again into a new --output folder")
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or not isinstance(state.get("config"), dict):
        raise _damaged(folder, STATE_FILE, ValueError("no integer step or no config"))
    # An edited or misplaced state would resume at a step that was never trained (and write step--1 folders).
    edited = "it was edited or copied from another checkpoint; delete that step folder to resume from an earlier one"
    if step < 0:
        raise BadInputError(f"checkpoint {folder}: {STATE_FILE} says step {step}; accepted: a step >= 0 ({edited})")
    named = checkpoint_step(folder)
    if named is not None and named != step:
        raise BadInputError(f"checkpoint {folder}: {STATE_FILE} says step {step}, its folder step-{named}; {edited}")
    schedule = state.get("lr_scheduler")
    scheduled = schedule.get("last_epoch") if isinstance(schedule, dict) else None
    if isinstance(scheduled, int) and scheduled != step:  # the scheduler steps once per optimizer step
        raise BadInputError(f"checkpoint {folder}: {STATE_FILE} says step {step}, its learning-rate schedule step "
                            f"{scheduled}; {edited}")
    return state


def read_checkpoint(folder: Path) -> Checkpoint:
    """Every file through a loader that cannot run code: JSON, safetensors, torch.load(weights_only=True)."""
    from safetensors import SafetensorError  # noqa: PLC0415 - safetensors pulls torch: on first use
    from safetensors.torch import load_file  # noqa: PLC0415 - safetensors pulls torch: on first use

    state = read_state(folder)
    tensors: dict[str, dict[str, torch.Tensor] | None] = {WEIGHTS_FILE: None, EMA_FILE: None}
    for name in tensors:
        if name == EMA_FILE and "ema_updates" not in state:
            continue  # a run without --ema-decay
        try:
            tensors[name] = load_file(str(folder / name))
        except (SafetensorError, OSError) as exc:
            raise _damaged(folder, name, exc) from exc
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning would break the one-line refusal
            warnings.simplefilter("ignore", UserWarning)
            optimizer = torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise _damaged(folder, OPTIMIZER_FILE, exc) from exc
    if not isinstance(optimizer, dict) or "state" not in optimizer or "param_groups" not in optimizer:
        raise _damaged(folder, OPTIMIZER_FILE, ValueError("not an optimizer state dict"))
    return Checkpoint(folder, state, tensors[WEIGHTS_FILE], optimizer, tensors[EMA_FILE])


def load_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor], folder: Path) -> None:
    """Copy saved weights into the module's trainable parameters; names and shapes must match exactly."""
    parameters = {name: p for name, p in module.named_parameters() if p.requires_grad}
    if parameters.keys() != weights.keys():
        missing, extra = sorted(parameters.keys() - weights.keys()), sorted(weights.keys() - parameters.keys())
        raise BadInputError(f"checkpoint {folder} does not fit this model ({len(missing)} weights missing, "
                            f"{len(extra)} unexpected, e.g. {(missing or extra)[0]})")
    with torch.no_grad():
        for name, parameter in parameters.items():
            if weights[name].shape != parameter.shape:
                raise BadInputError(f"checkpoint {folder} does not fit this model: {name} has shape "
                                    f"{tuple(weights[name].shape)} there, {tuple(parameter.shape)} here")
            parameter.copy_(weights[name])
