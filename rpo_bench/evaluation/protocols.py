"""Sampling protocols: the sampler, steps, guidance and resolution an image was generated with.

Protocols move scores more than methods do (METHOD.md), so they are named, versioned, and fingerprinted into
every cached image and result row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from rpo_bench.core.errors import BadInputError
from rpo_bench.core.registry import (
    INTEGER,
    NUMBER,
    STRING,
    Registry,
    ValueRule,
    check_table_keys,
    check_table_values,
    read_toml,
    rules_from_dataclass,
)
from rpo_bench.models.spec import FAMILIES

# sampler name -> diffusers scheduler class; "default" keeps the scheduler the checkpoint ships with.
SAMPLERS = {
    "default": None,
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "dpmpp-2m": "DPMSolverMultistepScheduler",
}
# How initial latents are drawn; part of the fingerprint so a future change cannot silently mix images.
NOISE_SCHEME = "cpu-float32-randn-per-seed-v1"


@dataclass(frozen=True)
class Protocol:
    name: str
    version: int
    sampler: str
    steps: int
    guidance: Mapping[str, float]
    resolution: Mapping[str, int]  # 0 = native
    eta: float = 0.0
    negative_prompt: str = ""
    summary: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def settings(self, family: str) -> dict[str, Any]:
        """The effective settings for one model family: what is hashed and recorded."""
        return {
            "protocol": self.name,
            "version": self.version,
            "sampler": self.sampler,
            "steps": self.steps,
            "guidance": self.guidance[family],
            "resolution": self.resolution[family],
            "eta": self.eta,
            "negative_prompt": self.negative_prompt,
            "noise": NOISE_SCHEME,
        }

    def fingerprint(self, family: str) -> str:
        return hashlib.sha256(json.dumps(self.settings(family), sort_keys=True).encode()).hexdigest()


def _per_family(value: Any, kind: type) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return {f: kind(value[f]) for f in FAMILIES}
    return {f: kind(value) for f in FAMILIES}


def _one_or_per_family(rule: ValueRule) -> ValueRule:
    """`guidance = 5.0` or `guidance = { sd15 = 7.5, sdxl = 5.0 }`: one value, or one per family, each valid."""
    def check(value: Any) -> bool:
        if isinstance(value, Mapping):
            return set(value) == set(FAMILIES) and all(rule.check(v) for v in value.values())
        return rule.check(value)

    return ValueRule(f"{rule.accepted}, or a table with exactly {', '.join(FAMILIES)} of those", check)


def _table_rules() -> dict[str, ValueRule]:
    # Types come from the Protocol dataclass; ranges where a setting has one. Resolution is in pixels of an
    # 8x-downsampling VAE, so it must divide by 8 (0 = the model's native size).
    return rules_from_dataclass(Protocol, {
        "version": INTEGER.refine("an integer >= 1", lambda value: value >= 1),
        "steps": INTEGER.refine("an integer >= 1", lambda value: value >= 1),
        "sampler": STRING.refine(f"one of {', '.join(SAMPLERS)}", lambda value: value in SAMPLERS),
        "eta": NUMBER.refine("a number >= 0", lambda value: value >= 0),
        "guidance": _one_or_per_family(NUMBER.refine("a number >= 0", lambda value: value >= 0)),
        "resolution": _one_or_per_family(INTEGER.refine("an integer >= 0 that is a multiple of 8 (0: native)",
                                                        lambda value: value >= 0 and value % 8 == 0)),
    })


def protocol_from_table(name: str, table: Mapping[str, Any]) -> Protocol:
    check_table_keys("protocol", name, table,
                     {"summary", "version", "sampler", "steps", "guidance", "resolution", "eta", "negative_prompt"})
    if "steps" not in table:
        raise BadInputError(f"[protocols.{name}] has no `steps`; accepted: an integer >= 1")
    check_table_values("protocols", name, table, _table_rules())
    return Protocol(
        name=name,
        version=table.get("version", 1),
        sampler=table.get("sampler", "default"),
        steps=table["steps"],
        guidance=_per_family(table.get("guidance", 5.0), float),
        resolution=_per_family(table.get("resolution", 0), int),
        eta=float(table.get("eta", 0.0)),
        negative_prompt=table.get("negative_prompt", ""),
        summary=table.get("summary", ""),
    )


PROTOCOLS: Registry[Protocol] = Registry("protocols", from_table=protocol_from_table)

with resources.as_file(resources.files("rpo_bench.evaluation") / "protocols.toml") as _path:
    for _name, _table in read_toml(_path).items():
        PROTOCOLS.register(_name, protocol_from_table(_name, _table), summary=_table.get("summary", ""))


def apply_sampler(pipe, protocol: Protocol) -> None:
    """Swap the pipeline's scheduler for the protocol's, keeping the checkpoint's noise schedule config."""
    class_name = SAMPLERS[protocol.sampler]
    if class_name is None:
        return
    import diffusers  # noqa: PLC0415 - diffusers loads in seconds: on first use

    scheduler_class = getattr(diffusers, class_name)
    if type(pipe.scheduler) is not scheduler_class:
        pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
