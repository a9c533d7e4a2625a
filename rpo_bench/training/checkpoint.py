"""Resumable checkpoints in a format that loads without running code.

accelerate's save_state writes pickles (the LR scheduler, the RNG states, the optimizer read back with
`torch.load(weights_only=False)`), so `--resume` on a folder someone else prepared could run their code. Here:

- `trainable.safetensors`: the trained weights (LoRA adapters, or every UNet weight), by parameter name;
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

from rpo_bench.errors import BadInputError

CHECKPOINTS = "checkpoints"
SNAPSHOTS = "snapshots"  # evaluable model folders saved along the way (--snapshot-every), not for resuming
STATE_FILE = "trainer_state.json"
WEIGHTS_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
CHECKPOINT_FORMAT = "rpo-bench-checkpoint/1"
_STEP_FOLDER = re.compile(r"step-(\d+)")


@dataclass
class Checkpoint:
    folder: Path
    state: dict[str, Any]
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]

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


def write_checkpoint(final: Path, state: dict[str, Any], weights: dict[str, torch.Tensor],
                     optimizer_state: dict[str, Any], keep: int) -> None:
    """Write into a hidden temp folder, then rename it into place: a kill at any moment leaves either the old
    checkpoint or the new one, never half of one. Then drop all but the newest `keep` checkpoints."""
    from safetensors.torch import save_file

    tmp = final.with_name(f".{final.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({name: tensor.detach().contiguous().cpu() for name, tensor in weights.items()}, str(tmp / WEIGHTS_FILE))
    torch.save(optimizer_state, tmp / OPTIMIZER_FILE)
    text = json.dumps({"format": CHECKPOINT_FORMAT, **state}, indent=1)  # raises on anything JSON cannot hold
    (tmp / STATE_FILE).write_text(text, encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    kept = sorted((p for p in final.parent.iterdir() if checkpoint_step(p) is not None), key=checkpoint_step)
    for old in kept[:-max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)


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
    if not isinstance(state.get("step"), int) or not isinstance(state.get("config"), dict):
        raise _damaged(folder, STATE_FILE, ValueError("no integer step or no config"))
    return state


def read_checkpoint(folder: Path) -> Checkpoint:
    """Every file through a loader that cannot run code: JSON, safetensors, torch.load(weights_only=True)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state = read_state(folder)
    try:
        weights = load_file(str(folder / WEIGHTS_FILE))
    except (SafetensorError, OSError) as exc:
        raise _damaged(folder, WEIGHTS_FILE, exc) from exc
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning would break the one-line refusal
            warnings.simplefilter("ignore", UserWarning)
            optimizer = torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise _damaged(folder, OPTIMIZER_FILE, exc) from exc
    if not isinstance(optimizer, dict) or "state" not in optimizer or "param_groups" not in optimizer:
        raise _damaged(folder, OPTIMIZER_FILE, ValueError("not an optimizer state dict"))
    return Checkpoint(folder, state, weights, optimizer)


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
