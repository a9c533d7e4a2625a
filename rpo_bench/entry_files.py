"""Which Hub files each registry entry (model, metric, prompt set, style) reads, and the offline "missing file"
line.

Models are described by their ModelSpec (the pipeline's components minus overridden ones, plus UNet / VAE / LoRA
repos), metrics declare `hub_files()`, prompt sets their dataset files, styles their CLIP and the Hub dataset
their references are streamed from. `rpo-bench download` plans and fetches from this, `hub_preflight` checks it
before a command starts, and loaders use `missing_file_message` so every offline error names the file and the
command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rpo_bench.errors import RpoBenchError, UnknownNameError
from rpo_bench.hub_files import HubFiles
from rpo_bench.models.spec import is_local_location

KINDS = ("models", "metrics", "prompts", "styles")
KIND_LABELS = {"models": "model", "metrics": "metric", "prompts": "prompt set", "styles": "style"}
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
    style: Any = None  # a Style whose references are streamed from a Hub dataset after the files


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
    if kind == "styles":
        return _style_entry(name)
    return _prompt_set_entry(name)


def kinds_of(name: str) -> list[str]:
    """Every registry that holds `name` (a metric with its argument counts as the metric)."""
    from rpo_bench.metrics import METRICS
    from rpo_bench.models.catalog import MODELS
    from rpo_bench.prompts import PROMPT_SETS
    from rpo_bench.styles import STYLES

    return [kind for kind, hit in (("models", name in MODELS), ("metrics", name.partition(":")[0] in METRICS),
                                   ("prompts", name in PROMPT_SETS), ("styles", name in STYLES)) if hit]


def _kind_of(name: str) -> str:
    found = kinds_of(name)
    if len(found) > 1:
        raise DownloadError(f"{name!r} names a {' and a '.join(KIND_LABELS[k] for k in found)}; choose one with "
                            f"--kind {' or --kind '.join(found)}")
    if found:
        return found[0]
    if Path(name).expanduser().is_dir():  # a model folder, accepted wherever a model name is
        return "models"
    raise UnknownNameError(f"unknown model, metric, prompt set or style {name!r}; {_close_names_hint(name)}")


def _close_names_hint(name: str) -> str:
    """Close names from every kind `download` takes, each labelled, so a style is not offered as a prompt set."""
    import difflib

    from rpo_bench.metrics import METRICS
    from rpo_bench.models.catalog import MODELS
    from rpo_bench.prompts import PROMPT_SETS
    from rpo_bench.styles import STYLES

    labels: dict[str, list[str]] = {}
    for kind, registry in (("models", MODELS), ("metrics", METRICS), ("prompts", PROMPT_SETS), ("styles", STYLES)):
        for candidate in registry.names():
            labels.setdefault(candidate, []).append(KIND_LABELS[kind])
    close = difflib.get_close_matches(name, sorted(labels), n=3, cutoff=0.5)
    if not close:
        return "see `rpo-bench models`, `rpo-bench metrics`, `rpo-bench prompts` and `rpo-bench styles`"
    named = [f"{candidate} ({' or '.join(labels[candidate])})" for candidate in close]
    return f"did you mean {', '.join(named)}?"


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


def prompts_fetched(spec) -> bool:
    """Whether a Hub prompt set's JSONL, what prompt loading reads, is on this machine."""
    from rpo_bench.prompts import cached_prompts_path

    return cached_prompts_path(spec.name).is_file()


def references_fetched(style) -> bool:
    """Whether a Hub-dataset style's references were streamed into their folder (captions.jsonl comes last)."""
    from rpo_bench.styles import CAPTIONS_FILE, dataset_folder

    return (dataset_folder(style) / CAPTIONS_FILE).is_file()


def _style_entry(name: str) -> EntryFiles:
    """A style's CLIP (what style-prob, style-sim and base-sim embed with) and, for a Hub-dataset style, its
    references: after `download S`, `train --style S` and `evaluate --style S` need nothing more of the style."""
    from rpo_bench.style_embedding import clip_metric
    from rpo_bench.styles import dataset_folder, get_style

    style = get_style(name)
    files = tuple(clip_metric(style).hub_files())
    if not style.dataset:
        where = f"references: {style.source_text}"
        return EntryFiles(name, "styles", files, note=where if files else f"{where}: nothing to download")
    state = "already there" if references_fetched(style) else "not fetched yet"
    return EntryFiles(name, "styles", files, style=style,
                      note=f"{style.references} references of {style.source_text} are streamed by the datasets "
                           f"library into {dataset_folder(style)} ({state})")


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
    state = "already there" if prompts_fetched(spec) else "not fetched yet"
    return EntryFiles(name, "prompts", prompt_set=spec,
                      note=f"split {spec.split!r} of dataset {spec.hf_dataset} is fetched by the datasets library "
                           f"(files and sizes not listed here) into {jsonl} ({state})")


# -- offline messages ---------------------------------------------------------------------------------------------
def download_command(name: str) -> str:
    return f"`rpo-bench download {name}`"


def missing_file_message(name: str, hub_files: HubFiles, filename: str, reason: str = "HF_HUB_OFFLINE is set") -> str:
    """The one line every "file not here, Hub offline or unreachable" error prints: what is missing, why it cannot
    be fetched now (`hub_preflight.hub_unavailable`), and the command that fetches it."""
    return (f"{name}: {hub_files.repo}/{filename} (revision {hub_files.revision}) is not on this machine and "
            f"{reason}; fetch it with {download_command(name)}")


def first_missing_file(hub_files: Sequence[HubFiles]) -> tuple[HubFiles, str] | None:
    missing = missing_files(hub_files)
    return missing[0] if missing else None


def missing_files(hub_files: Sequence[HubFiles]) -> list[tuple[HubFiles, str]]:
    """Every declared file (a pattern without wildcards) absent from the local cache. Offline, nothing else is
    knowable: which files a wildcard matches is a question for the Hub. Local paths and names that are no repo
    id are skipped: the loader's own checks say what is wrong with them."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    missing = []
    for files in hub_files:
        if is_local_location(files.repo):
            continue
        for pattern in files.patterns:
            if not GLOB_CHARS.isdisjoint(pattern):
                continue
            try:
                cached = try_to_load_from_cache(files.repo, pattern, revision=files.revision,
                                                repo_type=files.repo_type)
            except HFValidationError:
                break
            if not isinstance(cached, str):
                missing.append((files, pattern))
    return missing
