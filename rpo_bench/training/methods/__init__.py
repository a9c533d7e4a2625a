"""The training methods: one file per method in this package, registered here by "module:attr" targets so that
only the chosen method's file loads. A package of your own adds a method through the entry-point group
`rpo_bench.methods` (name = "your_package.your_module:METHOD"), as models and metrics are added.

Everything that lists methods (`train` flags, `rpo-bench methods`, `micro compare`, the demo, leaderboards)
reads this registry; nothing else names a method.
"""

from __future__ import annotations

from dataclasses import Field, fields
from typing import TYPE_CHECKING

from rpo_bench.core.errors import BadInputError
from rpo_bench.core.registry import Registry, load_target

if TYPE_CHECKING:
    from rpo_bench.training.methods.base import Method

METHODS: Registry = Registry("methods", noun="method")
METHODS.register("sft", "rpo_bench.training.methods.sft:METHOD", summary="SFT on the preferred images")
METHODS.register("dpo", "rpo_bench.training.methods.dpo:METHOD", summary="Diffusion-DPO")
METHODS.register("rpo", "rpo_bench.training.methods.rpo:METHOD", summary="Diffusion-RPO")
METHODS.register("kto", "rpo_bench.training.methods.kto:METHOD", summary="Diffusion-KTO")
METHODS.register("mapo", "rpo_bench.training.methods.mapo:METHOD", summary="MaPO (no reference)")
# What `micro compare`, the demo and a leaderboard train when no --methods is given.
DEFAULT_SET = ("sft", "dpo", "rpo")


def get_method(name: str) -> Method:
    """The registered method (its file loaded on first use); an unknown name gets the closest matches."""
    from rpo_bench.training.methods.base import Method  # noqa: PLC0415 - a method file imports the config, which imports this package lazily

    target = METHODS.get(name)
    method = load_target(target) if isinstance(target, str) else target
    if not isinstance(method, Method):
        raise BadInputError(f"method {name!r} is registered as {target!r}, which is not an rpo-bench Method")
    return method


def method_names() -> list[str]:
    return list(METHODS.names())


def resolve_methods(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """A --methods value: names (comma-separated or a list), or "all" for every registered method."""
    names = [n.strip() for n in text.split(",")] if isinstance(text, str) else [str(n).strip() for n in text]
    names = [n for n in names if n]
    if names == ["all"]:
        return tuple(method_names())
    if not names:
        raise BadInputError(f"no methods given; accepted: one or more of {', '.join(method_names())}, or all")
    for name in names:
        METHODS.canonical(name)  # an unknown name: "did you mean"
    return tuple(dict.fromkeys(METHODS.canonical(n) for n in names))


def all_fields() -> dict[str, Field]:
    """Every setting of every registered method (the union of their configs), for the `train` flags; a shared
    setting as TrainConfig declares it (`method` defaults to DEFAULT_METHOD there, to each one's own name in its
    config)."""
    from rpo_bench.training.config import TrainConfig  # noqa: PLC0415 - the config module imports this package lazily, and method files import it

    found: dict[str, Field] = {spec.name: spec for spec in fields(TrainConfig)}
    for name in method_names():
        for spec in fields(get_method(name).config):
            found.setdefault(spec.name, spec)
    return found


def readers(setting: str) -> list[str]:
    """The methods whose config has `setting`."""
    return [name for name in method_names() if setting in {f.name for f in fields(get_method(name).config)}]
