"""What a model reads from the Hub: its pipeline's files (minus overridden components) and its UNet / VAE / LoRA
repos, as HubFiles; `rpo-bench download` fetches them, the loader and the preflight check them."""

from __future__ import annotations

from collections.abc import Sequence

from rpo_bench.hub.availability import AbsentEntry, entry_from_files
from rpo_bench.hub.hub_files import HubFiles, is_local_location
from rpo_bench.models.catalog import resolve_model

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


def absent_model(name: str) -> AbsentEntry | None:
    """The model's row for the preflight when some of its Hub files are not on this machine."""
    return entry_from_files(name, "models", model_hub_files(resolve_model(name)))
