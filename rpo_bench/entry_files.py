"""Which Hub files each registry entry (model, metric, prompt set) reads, and the offline "missing file" line.

Models are described by their ModelSpec (the pipeline's components minus overridden ones, plus UNet / VAE / LoRA
repos), metrics declare `hub_files()`, prompt sets their dataset files. `rpo-bench download` plans and fetches
from this; loaders use `missing_file_message` so every offline error names the file and the command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rpo_bench.errors import RpoBenchError, UnknownNameError
from rpo_bench.hub_files import HubFiles
from rpo_bench.models.spec import is_local_location

KINDS = ("models", "metrics", "prompts")
KIND_LABELS = {"models": "model", "metrics": "metric", "prompts": "prompt set"}
GLOB_CHARS = set("*?[")

# What a diffusers pipeline load reads, per family (the loader passes safety_checker=None, so it is not here).
PIPELINE_COMPONENTS = {
    "sd15": ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "feature_extractor"),
    "sdxl": ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"),
}
# Only the full-precision safetensors: the loader asks for use_safetensors=True and no variant, so the
# fp16 / non_ema / .bin / .ckpt copies next to them would be gigabytes that are never read.
COMPONENT_WEIGHTS = {"unet": "diffusion_pytorch_model.safetensors", "vae": "diffusion_pytorch_model.safetensors",
                     "text_encoder": "model.safetensors", "text_encoder_2": "model.safetensors"}
DEFAULT_LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # what the loader's fingerprint assumes too


class DownloadError(RpoBenchError):
    """A download that cannot run or complete, or whose bytes differ from the published ones."""


# -- what a name needs ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EntryFiles:
    """One registry entry's remote files, plus what the listing should say about everything else."""

    name: str
    kind: str
    files: tuple[HubFiles, ...] = ()
    note: str = ""
    prompt_set: Any = None  # a PromptSetSpec fetched from the Hub: load_spec writes its JSONL after the files


def hub_files_for(name: str, kind: str | None = None) -> list[HubFiles]:
    """The Hub files registry entry `name` reads; `kind` (models, metrics, prompts) when the name is ambiguous."""
    return list(entry_files(name, kind).files)


def entry_files(name: str, kind: str | None = None) -> EntryFiles:
    if kind is not None and kind not in KINDS:
        raise DownloadError(f"unknown kind {kind!r}; accepted: {', '.join(KINDS)}")
    kind = kind or _kind_of(name)
    if kind == "models":
        return _model_entry(name)
    if kind == "metrics":
        return _metric_entry(name)
    return _prompt_set_entry(name)


def _kind_of(name: str) -> str:
    from rpo_bench.metrics import METRICS
    from rpo_bench.models.catalog import MODELS
    from rpo_bench.prompts import PROMPT_SETS

    found = [kind for kind, hit in (("models", name in MODELS), ("metrics", name.partition(":")[0] in METRICS),
                                    ("prompts", name in PROMPT_SETS)) if hit]
    if len(found) > 1:
        raise DownloadError(f"{name!r} names a {' and a '.join(KIND_LABELS[k] for k in found)}; choose one with "
                            f"--kind {' or --kind '.join(found)}")
    if found:
        return found[0]
    if Path(name).expanduser().is_dir():  # a model folder, accepted wherever a model name is
        return "models"
    import difflib

    candidates = sorted(set(MODELS.names()) | set(METRICS.names()) | set(PROMPT_SETS.names()))
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    hint = (f"did you mean {', '.join(close)}?" if close
            else "see `rpo-bench models`, `rpo-bench metrics` and `rpo-bench prompts`")
    raise UnknownNameError(f"unknown model, metric or prompt set {name!r}; {hint}")


def _model_entry(name: str) -> EntryFiles:
    from rpo_bench.models.catalog import resolve_model

    spec = resolve_model(name)
    files = tuple(model_hub_files(spec))
    if files:
        return EntryFiles(name, "models", files)
    note = "a tiny model, built on this machine on first use" if spec.tiny else "local weights"
    return EntryFiles(name, "models", note=f"{note}: nothing to download")


def pipeline_patterns(family: str, skip: Sequence[str] = ()) -> tuple[str, ...]:
    """allow_patterns for the files a pipeline load reads; `skip` components come from an override repo."""
    patterns = ["model_index.json"]
    for component in PIPELINE_COMPONENTS[family]:
        if component in skip:
            continue
        patterns += [f"{component}/*.json", f"{component}/*.txt"]
        if component in COMPONENT_WEIGHTS:
            patterns.append(f"{component}/{COMPONENT_WEIGHTS[component]}")
    return tuple(patterns)


def model_hub_files(spec) -> list[HubFiles]:
    """A ModelSpec's Hub files: the base pipeline (minus overridden components) and its UNet / VAE / LoRA repos."""
    overrides = [(component, repo, subfolder, revision) for component, repo, subfolder, revision in (
        ("unet", spec.unet_repo, spec.unet_subfolder, spec.unet_revision),
        ("vae", spec.vae_repo, spec.vae_subfolder, spec.vae_revision)) if repo]
    files: list[HubFiles] = []
    if not spec.tiny and not spec.is_local:
        skip = [component for component, *_ in overrides]
        files.append(HubFiles(spec.repo, spec.revision, patterns=pipeline_patterns(spec.family, skip),
                              what=f"{spec.family} pipeline"))
    for component, repo, subfolder, revision in overrides:
        if not is_local_location(repo):
            prefix = f"{subfolder}/" if subfolder else ""
            files.append(HubFiles(repo, revision, patterns=(f"{prefix}config.json",
                                                            f"{prefix}{COMPONENT_WEIGHTS[component]}"),
                                  what=f"{'UNet' if component == 'unet' else 'VAE'} override"))
    if spec.lora_repo and not is_local_location(spec.lora_repo):
        files.append(HubFiles(spec.lora_repo, "main", patterns=(spec.lora_weight_name or DEFAULT_LORA_WEIGHTS,),
                              what="LoRA"))
    return files


def _metric_entry(name: str) -> EntryFiles:
    from rpo_bench.metrics import make_metric

    files = tuple(make_metric(name).hub_files())
    return EntryFiles(name, "metrics", files, note="" if files else "declares no Hub files: nothing to download")


def _prompt_set_entry(name: str) -> EntryFiles:
    from rpo_bench.prompts import PROMPT_SETS, cached_prompts_path

    spec = PROMPT_SETS.get(name)
    if not spec.hf_dataset:
        return EntryFiles(name, "prompts", note=f"a file ({spec.file}): nothing to download")
    jsonl = cached_prompts_path(spec.name)
    if spec.hf_files:
        files = HubFiles(spec.hf_dataset, repo_type="dataset", patterns=tuple(spec.hf_files),
                         what=f"prompt set {spec.name}")
        return EntryFiles(name, "prompts", (files,), note=f"prompts are then written to {jsonl}", prompt_set=spec)
    state = "already there" if jsonl.is_file() else "not fetched yet"
    return EntryFiles(name, "prompts", prompt_set=spec,
                      note=f"split {spec.split!r} of dataset {spec.hf_dataset} is fetched by the datasets library "
                           f"(files and sizes not listed here) into {jsonl} ({state})")


# -- offline messages ---------------------------------------------------------------------------------------------
def download_command(name: str) -> str:
    return f"`rpo-bench download {name}`"


def missing_file_message(name: str, hub_files: HubFiles, filename: str) -> str:
    """The one line every offline "file not here" error prints: what is missing and the command that fetches it."""
    return (f"{name}: {hub_files.repo}/{filename} (revision {hub_files.revision}) is not on this machine and "
            f"HF_HUB_OFFLINE is set; fetch it with {download_command(name)}")


def first_missing_file(hub_files: Sequence[HubFiles]) -> tuple[HubFiles, str] | None:
    """The first declared file (a pattern without wildcards) absent from the local cache. Offline, nothing else
    is knowable: which files a wildcard matches is a question for the Hub."""
    from huggingface_hub import try_to_load_from_cache

    for files in hub_files:
        for pattern in files.patterns:
            if GLOB_CHARS.isdisjoint(pattern):
                cached = try_to_load_from_cache(files.repo, pattern, revision=files.revision,
                                                repo_type=files.repo_type)
                if not isinstance(cached, str):
                    return files, pattern
    return None
