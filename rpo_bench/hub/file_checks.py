"""Checks on the files a load is about to read: JSON configs and safetensors weights.

Libraries report a broken file as a traceback that names neither the file nor the cause (a truncated
safetensors file is "incomplete metadata, file not fully covered"; a config that is not JSON an OSError deep in
diffusers). Reading the JSON and the safetensors header here, before the library does, costs milliseconds (the
header is a few KB; no tensor is read) and turns each case into one line that names the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rpo_bench.core.errors import BadInputError


def not_a_file_reason(path: Path) -> str | None:
    """Why `path` cannot be read as a file (absent, a directory, empty), or None when it can."""
    if path.is_dir():
        return "is a directory, not a file"
    if not path.exists():
        return "does not exist"
    if not path.is_file():
        return "is not a regular file"
    try:
        if path.stat().st_size == 0:
            return "is empty"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    return None


def read_json_object(path: Path, what: str, accepted: str) -> dict[str, Any]:
    """A JSON file holding an object (every diffusers / transformers config is one)."""
    reason = not_a_file_reason(path)
    if reason is not None:
        raise BadInputError(f"{what}: {path} {reason}; accepted: {accepted}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{what}: {path} is not valid JSON ({exc}); accepted: {accepted}") from exc
    except OSError as exc:
        raise BadInputError(f"{what}: {path} cannot be read ({exc.strerror or type(exc).__name__})") from exc
    if not isinstance(data, dict):
        raise BadInputError(f"{what}: {path} holds a JSON {type(data).__name__}, not an object; accepted: {accepted}")
    return data


def safetensors_shapes(path: Path, what: str, accepted: str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header; refuses a missing, empty, truncated or foreign file.

    safetensors checks on open that the header parses and that its offsets cover the file exactly, so a
    truncated download is caught here without reading any tensor."""
    from safetensors import SafetensorError, safe_open  # noqa: PLC0415 - safetensors pulls torch: on first use

    reason = not_a_file_reason(path)
    if reason is not None:
        raise BadInputError(f"{what}: {path} {reason}; accepted: {accepted}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"{what}: {path} is not a readable safetensors file (truncated or corrupt: {detail}); "
                            f"accepted: {accepted}") from exc


def sharded_weight_files(folder: Path, weights_name: str, what: str, accepted: str) -> list[Path]:
    """The weight files a component load reads: `weights_name`, or the shards its `.index.json` lists."""
    index = folder / f"{weights_name}.index.json"
    if index.is_file():
        weight_map = read_json_object(index, what, accepted).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise BadInputError(f"{what}: {index} has no weight_map; accepted: {accepted}")
        return [folder / name for name in sorted(set(map(str, weight_map.values())))]
    return [folder / weights_name]


def check_transformers_folder(folder: Path, what: str, accepted: str,
                              model_types: tuple[str, ...] = (), label: str = "transformers") -> dict[str, Any]:
    """A transformers model folder: config.json (of one of `model_types`, when given) and readable safetensors.

    transformers reports a folder of the wrong model as a KeyError or a random-weights warning, and a truncated
    weights file as a bare SafetensorError; this says which file is wrong."""
    if not folder.is_dir():
        state = "is a file" if folder.is_file() else "does not exist"
        raise BadInputError(f"{what}: {folder} {state}; accepted: {accepted}")
    config_path = folder / "config.json"
    if not config_path.exists():
        raise BadInputError(f"{what}: {folder} is not a {label} model folder: no config.json; accepted: {accepted}")
    config = read_json_object(config_path, what, accepted)
    if model_types and config.get("model_type") not in model_types:
        raise BadInputError(f"{what}: {folder} is not a {label} model folder: its config.json has "
                            f"model_type {config.get('model_type')!r}; accepted: {accepted}")
    # exists(), not is_file(): a directory or an empty file in the weights' place is reported as what it is below
    if not any((folder / name).exists() for name in ("model.safetensors", "model.safetensors.index.json")):
        raise BadInputError(f"{what}: {folder} has no model.safetensors; accepted: {accepted}")
    for weights in sharded_weight_files(folder, "model.safetensors", what, accepted):
        safetensors_shapes(weights, what, accepted)
    return config
