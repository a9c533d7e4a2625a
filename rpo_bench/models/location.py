"""Where a model's base pipeline is read from: a local folder, a tiny model built on first use, or a Hub repo id."""

from __future__ import annotations

from pathlib import Path

from rpo_bench.core.config import home_dir
from rpo_bench.core.errors import BadInputError
from rpo_bench.models.spec import ModelSpec
from rpo_bench.models.tiny import ensure_tiny_model


def tiny_models_dir() -> Path:
    return home_dir() / "models"


def base_location(spec: ModelSpec) -> str:
    """Where the base pipeline is read from: a local folder (tiny models are built on first use) or a hub id."""
    if spec.tiny:
        return str(ensure_tiny_model(spec.tiny, spec.seed, tiny_models_dir()))
    if spec.is_local:
        folder = Path(spec.location).expanduser()
        if not (folder / "model_index.json").is_file():
            raise BadInputError(f"model {spec.name!r}: {spec.location} is not a diffusers pipeline folder "
                                "(no model_index.json)")
        return str(folder)
    return spec.repo
