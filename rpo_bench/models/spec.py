"""ModelSpec: everything needed to rebuild one text-to-image pipeline, and nothing about how to run it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from rpo_bench.core.errors import BadInputError
from rpo_bench.core.registry import INTEGER, STRING, check_table_keys, check_table_values, rules_from_dataclass
from rpo_bench.hub.hub_files import is_local_location

FAMILIES = ("sd15", "sdxl")
PACKAGE_PREFIX = "package:"  # a path relative to the rpo_bench package folder
PIPELINE_CLASS_TO_FAMILY = {
    "StableDiffusionPipeline": "sd15",
    "StableDiffusionXLPipeline": "sdxl",
}


@dataclass(frozen=True)
class ModelSpec:
    """A base pipeline (hub repo or local folder) plus optional UNet / VAE / LoRA overrides.

    `tiny` names a builder of a random-weight model with the real architecture; such models are built once
    into the cache home and then loaded from that folder exactly like a user's local checkpoint.
    """

    name: str
    family: str
    repo: str = ""
    revision: str = "main"
    unet_repo: str | None = None
    unet_subfolder: str | None = None
    unet_revision: str = "main"
    vae_repo: str | None = None
    vae_subfolder: str | None = None
    vae_revision: str = "main"
    lora_repo: str | None = None
    lora_weight_name: str | None = None
    lora_scale: float = 1.0
    dtype: str = "auto"
    protocol: str = "spo-ddim20"
    tiny: str | None = None
    seed: int = 0
    clip: str | None = None  # the CLIP that goes with this model (RPO weights with --embed-model auto)
    description: str = ""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise BadInputError(f"model {self.name!r}: unknown family {self.family!r}; accepted: {', '.join(FAMILIES)}")
        if not self.repo and not self.tiny:
            raise BadInputError(f"model {self.name!r}: needs `repo` (hub id or local folder) or `tiny`")

    @property
    def location(self) -> str:
        """`repo`, with "package:" paths (models shipped inside rpo_bench, like micro-base) made absolute."""
        if self.repo.startswith(PACKAGE_PREFIX):
            return str(Path(__file__).resolve().parents[1] / self.repo.removeprefix(PACKAGE_PREFIX))
        return self.repo

    @property
    def clip_source(self) -> str:
        """The CLIP for this model's RPO similarity weights: its own, else the scorer stack's default."""
        if self.clip and self.clip.startswith(PACKAGE_PREFIX):
            return str(Path(__file__).resolve().parents[1] / self.clip.removeprefix(PACKAGE_PREFIX))
        return self.clip or ("tiny-clip" if self.tiny else "openai/clip-vit-large-patch14")

    @property
    def is_local(self) -> bool:
        return is_local_location(self.location)

    @property
    def micro_world(self) -> int | None:
        """The micro world version the base belongs to (build.json beside a micro build's micro-base, which
        `rpo-bench micro build` writes; world 1's has no version), None for every other model. Recorded with
        every run and result, so that numbers from two worlds are never read as one."""
        if self.tiny or not self.is_local:
            return None
        build = Path(self.location).expanduser().parent / "build.json"
        if not build.is_file():
            return None
        try:
            return int(json.loads(build.read_text(encoding="utf-8")).get("world", 1))
        except (ValueError, TypeError, AttributeError):
            return None  # not a micro build's record: no world to name

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


def _table_rules() -> dict:
    # The seed names the tiny model's folder and seeds its weights: only a non-negative integer is both.
    return rules_from_dataclass(ModelSpec, {
        "seed": INTEGER.refine("an integer >= 0", lambda value: value >= 0),
        "family": STRING.refine(f"one of {', '.join(FAMILIES)}", lambda value: value in FAMILIES),
        "summary": STRING,
    })


def spec_from_table(name: str, table: Mapping[str, Any]) -> ModelSpec:
    """A catalog or user-registry table -> ModelSpec; unknown keys and values of the wrong type are an error,
    not silently dropped or carried into a path or a seed."""
    check_table_keys("model", name, table, {f.name for f in fields(ModelSpec)} - {"name"} | {"summary"})
    check_table_values("models", name, table, _table_rules())
    values = {k: v for k, v in table.items() if k != "summary"}
    values.setdefault("description", str(table.get("summary", "")))
    return ModelSpec(name=name, **values)


def spec_from_folder(path: str) -> ModelSpec:
    """A local folder named on the command line instead of a registry name: a diffusers pipeline folder, or
    the output of `rpo-bench train` (its rpo_bench.json names the base model; the folder holds the UNet or LoRA)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise BadInputError(f"model path {path!r} is not a folder; give a registry name (rpo-bench models) "
                            "or a diffusers pipeline folder")
    record = folder / "rpo_bench.json"
    if record.is_file() and not (folder / "model_index.json").is_file():
        return _spec_from_training_output(folder, record)
    index = folder / "model_index.json"
    if not index.is_file():
        raise BadInputError(f"model path {path!r} is not a diffusers pipeline folder (no model_index.json)")
    try:
        class_name = json.loads(index.read_text(encoding="utf-8")).get("_class_name", "")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{index} is not valid JSON: {exc}") from exc
    family = PIPELINE_CLASS_TO_FAMILY.get(class_name)
    if family is None:
        raise BadInputError(f"model path {path!r} holds a {class_name or 'unknown'} pipeline; accepted: "
                            f"{', '.join(PIPELINE_CLASS_TO_FAMILY)}")
    return ModelSpec(name=str(folder.resolve()), family=family, repo=str(folder.resolve()))


def _spec_from_training_output(folder: Path, record_path: Path) -> ModelSpec:
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        base = dict(record["base_model"])
        kind = record["kind"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise BadInputError(f"{record_path} is not a valid rpo-bench training record: {exc}") from exc
    base.pop("name", None)
    base["description"] = f"{record.get('method')} fine-tune of {base.get('repo') or base.get('tiny')}"
    folder = folder.resolve()
    if kind == "lora":
        base.update(lora_repo=str(folder), lora_weight_name="pytorch_lora_weights.safetensors")
    else:
        base.update(unet_repo=str(folder), unet_subfolder="unet")
    return ModelSpec(name=str(folder), **base)
