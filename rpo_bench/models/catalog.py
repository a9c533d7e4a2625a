"""The model registry, filled from catalog.toml (built-ins) and the user's registry.toml."""

from __future__ import annotations

from dataclasses import asdict
from importlib import resources
from pathlib import Path

from rpo_bench.core.errors import BadInputError
from rpo_bench.core.registry import Registry, read_toml
from rpo_bench.core.user_files import read_json
from rpo_bench.hub.hub_files import is_local_location
from rpo_bench.models.spec import ModelSpec, spec_from_folder, spec_from_table

MODELS: Registry[ModelSpec] = Registry("models", from_table=spec_from_table)


def _load_builtin_catalog() -> None:
    with resources.as_file(resources.files("rpo_bench.models") / "catalog.toml") as path:
        for name, table in read_toml(path).items():
            MODELS.register(name, spec_from_table(name, table), summary=str(table.get("summary", "")))


_load_builtin_catalog()


def resolve_model(name_or_path: str) -> ModelSpec:
    """A registry name, or a path to a local diffusers folder (accepted wherever a model name is)."""
    if name_or_path in MODELS:
        return MODELS.get(name_or_path)
    if "/" in name_or_path or name_or_path.startswith((".", "~")):
        if Path(name_or_path).expanduser().exists():
            return spec_from_folder(name_or_path)
    return MODELS.get(name_or_path)  # raises the "did you mean" error


# What a fine-tune sets on top of its base model's spec (the UNet or LoRA that `rpo-bench train` wrote).
FINE_TUNE_FIELDS = ("unet_repo", "unet_subfolder", "unet_revision", "lora_repo", "lora_weight_name", "lora_scale")


def is_fine_tune(spec: ModelSpec) -> bool:
    return bool(spec.lora_repo or spec.unet_repo)


VAE_FIELDS = ("vae_repo", "vae_subfolder", "vae_revision")


def _base_key(spec: ModelSpec, ignore: tuple[str, ...] = ()) -> dict:
    left_out = ("name", "description", *FINE_TUNE_FIELDS, *ignore)
    return {k: v for k, v in asdict(spec).items() if k not in left_out}


def base_of(spec: ModelSpec) -> str:
    """The registry name of the base model a fine-tune was made from (the same spec without the UNet or LoRA;
    a VAE of its own is named beside it), else its base weights' location."""
    bases = [entry for entry in MODELS if not is_fine_tune(entry.resolve())]
    for ignore in ((), VAE_FIELDS):
        key = _base_key(spec, ignore)
        for entry in bases:
            if _base_key(entry.resolve(), ignore) == key:
                return entry.name + (f" + VAE {spec.vae_repo}" if ignore and spec.vae_repo else "")
    return spec.repo or f"tiny {spec.tiny} (seed {spec.seed})"


def fine_tune_details(spec: ModelSpec) -> dict[str, str]:
    """What `rpo-bench models` shows for a fine-tune beside its base: the base, the weights' path, and, from the
    run's rpo_bench.json when it is on this machine, how it was trained. Empty for a base model."""
    if not is_fine_tune(spec):
        return {}
    kind, folder, inside = (("LoRA", spec.lora_repo, spec.lora_weight_name) if spec.lora_repo
                            else ("UNet", spec.unet_repo, spec.unet_subfolder))
    details = {"fine-tune of": base_of(spec), "weights": f"{kind} {folder}" + (f"/{inside}" if inside else "")}
    record_path = Path(folder).expanduser() / "rpo_bench.json"
    if not (is_local_location(folder) and record_path.is_file()):
        return details

    try:  # a damaged record must not break the listing: the weights' path is already shown
        record = read_json(record_path, "training record")
        details["trained"] = f"{record['method']}, {record['steps_done']} steps on {record['data']['source']}"
        last = (record.get("heldout") or {}).get("last")
        if last:
            details["held-out"] = (f"acc {last['heldout_acc']:.2f}, margin {last['heldout_margin']:.3f} "
                                   f"({last['heldout_pairs']} pairs, step {last['step']})")
    except (BadInputError, KeyError, TypeError, AttributeError):
        pass
    return details
