"""Reading scorer checkpoints safely and checking that they fit the architecture they are loaded into.

The official scorers ship pickled `.pt`/`.pth` files. `torch.load(weights_only=True)` only rebuilds tensors and
plain containers, so a crafted file that would run code on load is refused instead of executed; safetensors
files are read without unpickling at all. Key mismatches become one line that names the file and the keys.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from rpo_bench.errors import BadInputError


def read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors on the CPU; `what` names the scorer in error messages."""
    if not path.is_file():
        raise BadInputError(f"{what}: checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names the forbidden global (e.g. posix.system) in the first line of its message
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"{what}: refused to load {path}: it is a pickle that would run code or build "
                            f"non-tensor objects ({reason}); accepted: tensor-only checkpoints or safetensors") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise BadInputError(f"{what}: {path} is not a readable torch checkpoint ({type(exc).__name__})") from exc


def nested_state_dict(checkpoint: Mapping, path: Path, what: str, key: str | None = None) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint that may wrap it (`{"state_dict": ...}` as HPSv2 does)."""
    inner = checkpoint.get(key, checkpoint) if key else checkpoint
    if not isinstance(inner, Mapping) or not all(isinstance(v, torch.Tensor) for v in inner.values()):
        wanted = f"a dict with a {key!r} entry of tensors" if key else "a dict of tensors"
        raise BadInputError(f"{what}: {path} holds no state dict; accepted: {wanted}")
    return dict(inner)


def check_keys(got: Iterable[str], expected: Iterable[str], path: Path, what: str, accepted: str) -> None:
    """Refuse a checkpoint whose keys do not match the model: loading it would leave random weights behind."""
    got, expected = set(got), set(expected)
    missing, unexpected = sorted(expected - got), sorted(got - expected)
    if not missing and not unexpected:
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s), e.g. {', '.join(missing[:3])}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), e.g. {', '.join(unexpected[:3])}")
    raise BadInputError(f"{what}: {path} does not fit the model ({'; '.join(parts)}); accepted: {accepted}")


def check_shapes(state: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor], path: Path,
                 what: str, accepted: str) -> None:
    for name, tensor in state.items():
        if name in model_state and tuple(tensor.shape) != tuple(model_state[name].shape):
            raise BadInputError(f"{what}: {path} does not fit the model ({name} has shape {tuple(tensor.shape)}, "
                                f"the model expects {tuple(model_state[name].shape)}); accepted: {accepted}")
