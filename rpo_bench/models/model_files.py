"""Checks that a model's local files are what its family needs, before (and right after) diffusers loads them.

diffusers loads an SDXL UNet into an SD1.5 pipeline without complaint (it fails later, mid-generation, on a
shape), reports a truncated weights file as a traceback, and a component folder missing from a local pipeline
as "not in the cache". Each check here reads only configs and safetensors headers, and raises one line that
names the file and what would be accepted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rpo_bench.core.errors import BadInputError
from rpo_bench.hub.file_checks import read_json_object, safetensors_shapes, sharded_weight_files
from rpo_bench.hub.hub_files import is_local_location
from rpo_bench.models.hub_files import COMPONENT_WEIGHTS, DEFAULT_LORA_WEIGHTS, PIPELINE_COMPONENTS
from rpo_bench.models.location import base_location
from rpo_bench.models.spec import PIPELINE_CLASS_TO_FAMILY, ModelSpec

# The pipeline loads without these (feature_extractor only feeds the safety checker, which the loader drops).
OPTIONAL_COMPONENTS = {"feature_extractor"}
COMPONENT_CONFIGS = {"unet": "config.json", "vae": "config.json", "text_encoder": "config.json",
                     "text_encoder_2": "config.json", "scheduler": "scheduler_config.json"}
TEXT_ENCODERS = {"sd15": ("text_encoder",), "sdxl": ("text_encoder", "text_encoder_2")}
UNET_ACCEPTED = {
    "sd15": "an SD1.5-style UNet (no addition embedding, cross_attention_dim = the text encoder's hidden size)",
    "sdxl": "an SDXL UNet (addition_embed_type 'text_time', cross_attention_dim = the two text encoders' hidden "
            "sizes summed)",
}
LORA_ACCEPTED = f"a diffusers or peft LoRA safetensors file ({DEFAULT_LORA_WEIGHTS}) trained on this model's UNet"
LORA_COMPONENT_PREFIXES = ("unet.", "text_encoder", "lora_unet_", "lora_te")  # diffusers, peft and kohya names
LORA_DOWN_SUFFIXES = (".lora_A.weight", ".lora.down.weight")  # shape (rank, in_features, ...)
LORA_UP_SUFFIXES = (".lora_B.weight", ".lora.up.weight")      # shape (out_features, rank, ...)


def _pipeline_accepted(family: str) -> str:
    return (f"a diffusers {family} pipeline folder (model_index.json listing "
            f"{', '.join(c for c in PIPELINE_COMPONENTS[family] if c not in OPTIONAL_COMPONENTS)}, "
            "each in its own subfolder)")


def _component_accepted(component: str) -> str:
    if component not in COMPONENT_WEIGHTS:
        return f"a {component} folder with {COMPONENT_CONFIGS.get(component, 'its config files')}"
    return f"a {component} folder with config.json and {COMPONENT_WEIGHTS[component]}"


# -- the whole model ----------------------------------------------------------------------------------------------
def check_model_files(spec: ModelSpec) -> None:
    """Every local file the load will read: pipeline folder, UNet / VAE overrides, LoRA; then whether the UNet fits."""
    what = f"model {spec.name!r}"
    base = Path(base_location(spec))
    overridden = {component for component, repo in (("unet", spec.unet_repo), ("vae", spec.vae_repo)) if repo}
    configs: dict[str, tuple[Path, dict[str, Any]]] = {}
    if base.is_dir():
        configs.update(check_pipeline_folder(base, spec.family, what, skip=overridden))
    for component, repo, subfolder in (("unet", spec.unet_repo, spec.unet_subfolder),
                                       ("vae", spec.vae_repo, spec.vae_subfolder)):
        if repo and is_local_location(repo):
            folder = override_folder(repo, subfolder, component, what)
            configs[component] = check_component_folder(folder, component, f"{what}: {component} override")
    if spec.lora_repo and is_local_location(spec.lora_repo):
        lora_shapes(spec)
    if "unet" in configs and all(encoder in configs for encoder in TEXT_ENCODERS[spec.family]):
        path, unet = configs["unet"]
        vae = configs.get("vae", (None, None))[1]
        problem = unet_family_problem(unet, spec.family, [configs[e][1] for e in TEXT_ENCODERS[spec.family]], vae)
        if problem:
            raise BadInputError(f"{what}: {path} {problem}; accepted: {UNET_ACCEPTED[spec.family]}")


def check_pipeline_folder(folder: Path, family: str, what: str,
                          skip: set[str] = frozenset()) -> dict[str, tuple[Path, dict[str, Any]]]:
    """model_index.json and each component it needs (minus `skip`, which come from overrides); returns the
    components' configs for the UNet check."""
    accepted = _pipeline_accepted(family)
    index_path = folder / "model_index.json"
    index = read_json_object(index_path, what, accepted)
    class_name = index.get("_class_name")
    if PIPELINE_CLASS_TO_FAMILY.get(class_name, family) != family:
        raise BadInputError(f"{what}: {index_path} describes a {class_name}, but the model's family is {family}; "
                            f"accepted: {accepted}")
    configs = {}
    for component in PIPELINE_COMPONENTS[family]:
        if component in skip or component in OPTIONAL_COMPONENTS:
            continue
        entry = index.get(component)
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(part, str) for part in entry)):
            raise BadInputError(f"{what}: {index_path} lists no {component} (found {entry!r}); accepted: {accepted}")
        if not (folder / component).is_dir():
            raise BadInputError(f"{what}: {folder / component} is missing (model_index.json lists it); "
                                f"accepted: {accepted}")
        config = check_component_folder(folder / component, component, what)
        if config is not None:
            configs[component] = config
    return configs


def override_folder(repo: str, subfolder: str | None, component: str, what: str) -> Path:
    folder = Path(repo).expanduser()
    target = folder / subfolder if subfolder else folder
    if not target.is_dir():
        missing = folder if not folder.is_dir() else target
        raise BadInputError(f"{what}: {component} override {missing} is not a folder; accepted: "
                            f"{_component_accepted(component)}")
    return target


def check_component_folder(folder: Path, component: str, what: str) -> tuple[Path, dict[str, Any]] | None:
    """The component's config (valid JSON) and weight files (readable safetensors); (config path, config)."""
    config_name = COMPONENT_CONFIGS.get(component)
    if config_name is None:
        return None  # tokenizers: several file layouts; the tokenizer library reports its own errors clearly
    accepted = _component_accepted(component)
    config_path = folder / config_name
    config = read_json_object(config_path, what, accepted)
    if component in COMPONENT_WEIGHTS:
        for weights in sharded_weight_files(folder, COMPONENT_WEIGHTS[component], what, accepted):
            safetensors_shapes(weights, what, accepted)
    return config_path, config


# -- does the UNet fit the family ---------------------------------------------------------------------------------
def unet_family_problem(unet: Mapping[str, Any], family: str, text_encoders: Sequence[Mapping[str, Any]],
                        vae: Mapping[str, Any] | None) -> str | None:
    """Why a UNet config cannot run in a `family` pipeline with these text encoders and VAE, or None."""
    addition = unet.get("addition_embed_type")
    if (addition == "text_time") != (family == "sdxl"):
        kind = ("an SDXL UNet" if addition == "text_time"
                else "an SD1.x/2.x-style UNet" if addition is None else "a UNet")
        return (f"is {kind} (addition_embed_type {addition!r}), but an {family} pipeline needs "
                f"{'text_time' if family == 'sdxl' else 'none'}")
    cross = unet.get("cross_attention_dim")
    widths = [int(config.get("hidden_size", 0)) for config in text_encoders]
    crosses = set(cross) if isinstance(cross, list | tuple) else {cross}
    if widths and crosses != {sum(widths)}:
        gives = (f"its text encoder gives {widths[0]}" if len(widths) == 1
                 else f"its text encoders give {' + '.join(map(str, widths))} = {sum(widths)}")
        return f"has cross_attention_dim {cross}, but {gives}"
    if family == "sdxl":
        time_dim, wanted = unet.get("addition_time_embed_dim"), unet.get("projection_class_embeddings_input_dim")
        pooled = text_encoders[-1].get("projection_dim") if text_encoders else None
        if all(isinstance(v, int) for v in (time_dim, wanted, pooled)) and wanted != 6 * time_dim + pooled:
            return (f"has projection_class_embeddings_input_dim {wanted}, but 6 x addition_time_embed_dim {time_dim} "
                    f"+ the second text encoder's projection_dim {pooled} = {6 * time_dim + pooled}")
    latent = (vae or {}).get("latent_channels")
    if latent is not None and unet.get("in_channels") != latent:
        return f"takes {unet.get('in_channels')} input channels, but the VAE makes {latent}-channel latents"
    return None


def unet_source(spec: ModelSpec, base: str) -> str:
    """Where the UNet's config comes from, for messages."""
    if spec.unet_repo:
        return "/".join(part for part in (spec.unet_repo, spec.unet_subfolder, "config.json") if part)
    return f"{base}/unet/config.json"


def check_unet_fits(pipe, spec: ModelSpec, base: str) -> None:
    """The same check on a loaded pipeline: hub checkpoints, whose configs were not on disk before the load."""
    encoders = [getattr(pipe, name).config.to_dict() for name in TEXT_ENCODERS[spec.family]
                if getattr(pipe, name, None) is not None]
    problem = unet_family_problem(pipe.unet.config, spec.family, encoders, pipe.vae.config)
    if problem:
        raise BadInputError(f"model {spec.name!r}: {unet_source(spec, base)} {problem}; "
                            f"accepted: {UNET_ACCEPTED[spec.family]}")


# -- LoRA ---------------------------------------------------------------------------------------------------------
def lora_file(spec: ModelSpec) -> Path | None:
    """A local LoRA's weights file (the LoRA path itself, or the weight name inside its folder); None for the Hub."""
    if not spec.lora_repo or not is_local_location(spec.lora_repo):
        return None
    path = Path(spec.lora_repo).expanduser()
    return path if path.is_file() else path / (spec.lora_weight_name or DEFAULT_LORA_WEIGHTS)


def lora_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """A local LoRA file's tensor shapes; refuses a file that is unreadable or holds no LoRA weights."""
    path = lora_file(spec)
    what = f"model {spec.name!r}: LoRA"
    shapes = safetensors_shapes(path, what, LORA_ACCEPTED)
    # diffusers' own rule (it raises "Invalid LoRA checkpoint" otherwise, without naming the file)
    foreign = sorted(name for name in shapes if "lora" not in name)
    if foreign or not shapes:
        examples = ", ".join(foreign[:3]) or "no tensors at all"
        raise BadInputError(f"{what} {path} is not a LoRA: {len(foreign)} of its {len(shapes)} tensor names lack "
                            f"'lora' (e.g. {examples}); accepted: {LORA_ACCEPTED}")
    # diffusers keeps only the names under a component prefix and ignores the rest with a log line: a LoRA of
    # unprefixed names would load as nothing at all and leave the model silently unchanged
    if not any(name.startswith(LORA_COMPONENT_PREFIXES) for name in shapes):
        raise BadInputError(f"{what} {path} holds no LoRA weights for the UNet or text encoders: no tensor name "
                            f"starts with {', '.join(LORA_COMPONENT_PREFIXES)} (e.g. {sorted(shapes)[0]}); "
                            f"accepted: {LORA_ACCEPTED}")
    return shapes


def _lora_target(name: str) -> tuple[str, bool] | None:
    """(UNet module path, is the down/A matrix) of a diffusers- or peft-format UNet LoRA tensor name."""
    if not name.startswith("unet."):
        return None  # text encoder LoRA, or a format (kohya) that diffusers converts itself
    for suffix in LORA_DOWN_SUFFIXES + LORA_UP_SUFFIXES:
        if name.endswith(suffix):
            return name[len("unet."):-len(suffix)], suffix in LORA_DOWN_SUFFIXES
    return None


def check_lora_fits(unet, spec: ModelSpec) -> None:
    """Each LoRA matrix must sit on a UNet layer of matching width: a LoRA of the other family fails here in one
    line instead of diffusers' multi-line state-dict report."""
    path = lora_file(spec)
    if path is None:
        return
    modules = dict(unet.named_modules())
    for name, shape in sorted(lora_shapes(spec).items()):
        target = _lora_target(name)
        if target is None:
            continue
        module_path, is_down = target
        module = modules.get(module_path)
        if module is None:
            raise BadInputError(f"model {spec.name!r}: LoRA {path} targets {module_path}, which the {spec.family} "
                                f"UNet does not have; accepted: {LORA_ACCEPTED}")
        width = (getattr(module, "in_features", None) or getattr(module, "in_channels", None) if is_down
                 else getattr(module, "out_features", None) or getattr(module, "out_channels", None))
        got = shape[1] if is_down else shape[0]
        if width is not None and len(shape) >= 2 and got != width:
            side = "input" if is_down else "output"
            raise BadInputError(f"model {spec.name!r}: LoRA {path} does not fit the {spec.family} UNet ({name} has "
                                f"shape {shape}, but {module_path} has {width} {side} features); "
                                f"accepted: {LORA_ACCEPTED}")
