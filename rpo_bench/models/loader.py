"""ModelSpec -> diffusers pipeline, for SD1.5 and SDXL, with the spec's UNet / VAE / LoRA overrides.

Tiny models, user folders and hub checkpoints all go through `load_pipeline`; the only difference is where
`from_pretrained` reads from.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rpo_bench.core.errors import BadInputError, MissingWeightsError
from rpo_bench.core.progress import silence_library_progress
from rpo_bench.hub.availability import first_missing_file, hub_unavailable, missing_file_message
from rpo_bench.models.fingerprint import folder_fingerprint, resolve_hub_commit, sha256_file
from rpo_bench.models.hub_files import model_hub_files
from rpo_bench.models.location import base_location
from rpo_bench.models.model_files import check_lora_fits, check_model_files, check_unet_fits, lora_file
from rpo_bench.models.spec import ModelSpec


def _component_identity(repo: str, revision: str, subfolder: str | None, probe: str, what: str,
                        name: str) -> dict[str, str]:
    folder = Path(repo).expanduser()
    if folder.is_dir():
        target = folder / subfolder if subfolder else folder
        return {"folder_sha256": folder_fingerprint(target)}
    probe_file = f"{subfolder}/{probe}" if subfolder else probe
    return {"repo": repo, "commit": resolve_hub_commit(repo, revision, probe_file, what, name)}


def model_identity(spec: ModelSpec) -> dict[str, Any]:
    """What the weights are, independent of the registry name (renaming a model keeps its cached images).

    Local files are checked first: a broken folder is refused here, before a run spends time on anything else."""
    check_model_files(spec)
    base = base_location(spec)
    identity: dict[str, Any] = {"family": spec.family,
                                "base": _component_identity(base, spec.revision, None, "model_index.json", spec.name,
                                                            spec.name)}
    if spec.unet_repo:
        identity["unet"] = _component_identity(spec.unet_repo, spec.unet_revision, spec.unet_subfolder,
                                               "config.json", f"{spec.name} UNet", spec.name)
    if spec.vae_repo:
        identity["vae"] = _component_identity(spec.vae_repo, spec.vae_revision, spec.vae_subfolder,
                                              "config.json", f"{spec.name} VAE", spec.name)
    if spec.lora_repo:
        weights = lora_file(spec)
        if weights is not None:  # only the weights file: a training folder also holds changing checkpoints
            identity["lora"] = {"file_sha256": sha256_file(weights)}
        else:
            weight_name = spec.lora_weight_name or "pytorch_lora_weights.safetensors"
            identity["lora"] = _component_identity(spec.lora_repo, "main", None, weight_name, f"{spec.name} LoRA",
                                                   spec.name)
        identity["lora_scale"] = spec.lora_scale
    return identity


def model_fingerprint(spec: ModelSpec) -> str:
    return hashlib.sha256(json.dumps(model_identity(spec), sort_keys=True).encode()).hexdigest()


def _pipeline_class(family: str):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline  # noqa: PLC0415 - diffusers loads in seconds: on first use

    return StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline


def _missing(spec: ModelSpec, exc: Exception) -> MissingWeightsError:
    reason = hub_unavailable()
    missing = first_missing_file(model_hub_files(spec)) if reason else None
    if missing is not None:
        return MissingWeightsError(missing_file_message(spec.name, *missing, reason))
    where = spec.unet_repo or spec.repo
    return MissingWeightsError(
        f"model {spec.name!r}: weights of {where} are not on this machine"
        + (f" and {reason}" if reason else "")
        + f"; fetch them with `rpo-bench download {spec.name}` ({type(exc).__name__})"
    )


def dtype_kwarg(dtype) -> dict[str, Any]:
    """diffusers renamed `torch_dtype` to `dtype` (and warns on the old name); accept both generations."""
    from diffusers.utils import deprecation_utils  # noqa: PLC0415 - diffusers loads in seconds: on first use

    return {"dtype": dtype} if hasattr(deprecation_utils, "_resolve_dtype") else {"torch_dtype": dtype}


def load_pipeline(spec: ModelSpec, device: str = "cpu", dtype=None):
    """Build the diffusers pipeline for `spec` on `device` in `dtype` (None: float32)."""
    import torch  # noqa: PLC0415 - torch loads in seconds: on first use

    silence_library_progress()
    check_model_files(spec)  # broken local files: one line naming the file, before diffusers reads them
    dtype = dtype or torch.float32
    location = base_location(spec)
    local = Path(location).is_dir()
    # An unreachable Hub reads the cache alone: asking it for each file would cost a timeout per file.
    kwargs: dict[str, Any] = {**dtype_kwarg(dtype), "local_files_only": local or hub_unavailable() is not None}
    if not local:
        kwargs["revision"] = spec.revision
    if spec.family == "sd15":
        # Research evaluation scores every image; the NSFW filter would replace some with black squares.
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    else:
        kwargs["add_watermarker"] = False  # the invisible watermark perturbs pixels that the scorers see
    pipe = _from_pretrained(spec, location, kwargs, dtype)
    check_unet_fits(pipe, spec, location)  # hub checkpoints: their configs were not on disk before the load
    if spec.lora_repo:
        _load_lora(pipe, spec)
    pipe.set_progress_bar_config(disable=True)  # rpo-bench draws its own progress bars
    return pipe.to(device)


def _from_pretrained(spec: ModelSpec, location: str, kwargs: dict[str, Any], dtype):
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: PLC0415 - diffusers loads in seconds: on first use

    with _load_errors(spec, location):
        if spec.unet_repo:
            kwargs["unet"] = UNet2DConditionModel.from_pretrained(
                spec.unet_repo, subfolder=spec.unet_subfolder, revision=spec.unet_revision, **dtype_kwarg(dtype),
                local_files_only=kwargs["local_files_only"] or Path(spec.unet_repo).is_dir())
        if spec.vae_repo:
            kwargs["vae"] = AutoencoderKL.from_pretrained(
                spec.vae_repo, subfolder=spec.vae_subfolder, revision=spec.vae_revision, **dtype_kwarg(dtype),
                local_files_only=kwargs["local_files_only"] or Path(spec.vae_repo).is_dir())
        return _pipeline_class(spec.family).from_pretrained(location, use_safetensors=True, **kwargs)


@contextlib.contextmanager
def _load_errors(spec: ModelSpec, location: str) -> Iterator[None]:
    """What escapes diffusers / transformers / safetensors while loading, as one line.

    Local files were checked before, so what reaches here is mostly the Hub cache: absent files (offline) or a
    cached file that is damaged."""
    from huggingface_hub.errors import LocalEntryNotFoundError  # noqa: PLC0415 - huggingface_hub loads in ~1 s: on first use
    from safetensors import SafetensorError  # noqa: PLC0415 - safetensors pulls torch: on first use

    try:
        yield
    except (LocalEntryNotFoundError, FileNotFoundError) as exc:
        raise _missing(spec, exc) from exc
    except OSError as exc:
        text = str(exc)  # diffusers words "not in the cache" differently per code path
        if any(hint in text.lower() for hint in ("offline", "connect", "no file named")) or "local_files_only" in text:
            raise _missing(spec, exc) from exc
        raise BadInputError(f"model {spec.name!r}: {_first_line(exc)}; accepted: {_accepted(spec)}") from exc
    except (SafetensorError, ValueError) as exc:
        raise BadInputError(f"model {spec.name!r}: {location} could not be loaded ({type(exc).__name__}: "
                            f"{_first_line(exc)}); accepted: {_accepted(spec)}") from exc


def _load_lora(pipe, spec: ModelSpec) -> None:
    check_lora_fits(pipe.unet, spec)
    try:
        with _load_errors(spec, spec.lora_repo):
            pipe.load_lora_weights(spec.lora_repo, weight_name=spec.lora_weight_name, adapter_name="rpo_bench")
    except (RuntimeError, KeyError) as exc:  # formats check_lora_fits cannot read (kohya): diffusers' own report
        raise BadInputError(f"model {spec.name!r}: LoRA {spec.lora_repo} does not fit the {spec.family} UNet "
                            f"({_first_line(exc)}); accepted: a LoRA trained on this model's UNet") from exc
    pipe.set_adapters(["rpo_bench"], adapter_weights=[spec.lora_scale])


def _first_line(exc: BaseException) -> str:
    """The informative line of a library error: the first, or for state-dict reports the first mismatch."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines if line.startswith(("size mismatch", "Missing key", "Unexpected key"))),
                  lines[0] if lines else type(exc).__name__)
    return detail.rstrip(".")


def _accepted(spec: ModelSpec) -> str:
    return f"a complete, readable diffusers {spec.family} pipeline (safetensors weights)"
