"""The model registry, filled from catalog.toml (built-ins) and the user's registry.toml."""

from __future__ import annotations

from importlib import resources

from rpo_bench.models.spec import ModelSpec, spec_from_folder, spec_from_table
from rpo_bench.registry import Registry, read_toml

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
        from pathlib import Path

        if Path(name_or_path).expanduser().exists():
            return spec_from_folder(name_or_path)
    return MODELS.get(name_or_path)  # raises the "did you mean" error
