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

from rpo_bench.core.errors import BadInputError
from rpo_bench.hub.file_checks import not_a_file_reason, safetensors_shapes

TORCH_ACCEPTED = "a tensor-only PyTorch checkpoint (torch.save of a dict of tensors) or a safetensors file"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since 1.6
PICKLE_PROTO = b"\x80"       # the legacy format: a pickle stream, opened by its protocol opcode
TAR_MAGIC = b"ustar"         # torch < 0.4's tar format, which torch.load still reads (at byte 257 of a tar)
# What torch's weights-only unpickler says when a pickle *is* one, but names something other than tensors.
REFUSAL_HINTS = ("GLOBAL", "global", "Unsupported class", "not an allowed")


def read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors on the CPU; `what` names the scorer in error messages.

    Three failures are told apart, because their fixes differ: a file that is not a checkpoint at all (wrong
    file, truncated download: fetch it again), a pickle that names code or non-tensor objects (refused: torch's
    weights-only loader never runs it), and a checkpoint whose tensors do not fit (see check_keys)."""
    reason = not_a_file_reason(path)
    if reason is not None:
        raise BadInputError(f"{what}: checkpoint {path} {reason}; accepted: {TORCH_ACCEPTED}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path, what)
    with open(path, "rb") as handle:
        head = handle.read(512)
    if not (head.startswith((ZIP_MAGIC, PICKLE_PROTO)) or head[257:262] == TAR_MAGIC):
        raise BadInputError(f"{what}: {path} is not a PyTorch checkpoint (cannot be read: neither a zip archive nor "
                            f"a pickle, it starts with {head[:4]!r}); accepted: {TORCH_ACCEPTED}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(exc)
        if any(hint in detail for hint in REFUSAL_HINTS):
            raise BadInputError(f"{what}: refused to load {path}: it is a pickle that would run code or build "
                                f"non-tensor objects ({detail}); accepted: {TORCH_ACCEPTED}") from exc
        raise BadInputError(f"{what}: {path} is not a PyTorch checkpoint (cannot be read: {detail}); "
                            f"accepted: {TORCH_ACCEPTED}") from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        # a truncated zip, a cut-off legacy pickle: torch's error names the symptom, not the file
        detail = _first_line(exc).split(". ")[0].rstrip(".") if str(exc).strip() else "the file ends too early"
        raise BadInputError(f"{what}: {path} is not a readable PyTorch checkpoint (cannot be read, truncated or "
                            f"corrupt: {detail}); accepted: {TORCH_ACCEPTED}") from exc


def _read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError  # noqa: PLC0415 - safetensors pulls torch: on first use
    from safetensors.torch import load_file  # noqa: PLC0415 - safetensors pulls torch: on first use

    safetensors_shapes(path, what, TORCH_ACCEPTED)  # header and size first: one line naming the file
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BadInputError(f"{what}: {path} is not a readable safetensors file ({_first_line(exc)}); "
                            f"accepted: {TORCH_ACCEPTED}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unpickler_detail(exc: pickle.UnpicklingError) -> str:
    """The line of torch's weights-only error that says what was found (the rest is advice about weights_only)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")
    useful = [line for line in lines if not line.startswith(boilerplate)]
    found = next((line for line in useful if any(hint in line for hint in REFUSAL_HINTS)), None)
    detail = found or (useful[0] if useful else _first_line(exc))
    # torch goes on to advise allow-listing what it found (`add_safe_globals([exec])`): never our advice
    detail = detail.split(" Please use `torch.serialization")[0].split(" To load, ")[0]
    return detail.removeprefix("WeightsUnpickler error:").strip().rstrip(".")


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
