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

from rpo_bench.errors import BadInputError
from rpo_bench.models.spec import FAMILIES
from rpo_bench.registry import Registry, check_table_keys, read_toml

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


def _per_family(name: str, key: str, value: Any, kind: type) -> dict[str, Any]:
    if isinstance(value, Mapping):
        missing = [f for f in FAMILIES if f not in value]
        if missing:
            raise BadInputError(f"protocol {name!r}: {key} has no value for {', '.join(missing)}")
        return {f: kind(value[f]) for f in FAMILIES}
    return {f: kind(value) for f in FAMILIES}


def protocol_from_table(name: str, table: Mapping[str, Any]) -> Protocol:
    check_table_keys("protocol", name, table,
                     {"summary", "version", "sampler", "steps", "guidance", "resolution", "eta", "negative_prompt"})
    sampler = str(table.get("sampler", "default"))
    if sampler not in SAMPLERS:
        raise BadInputError(f"protocol {name!r}: unknown sampler {sampler!r}; accepted: {', '.join(SAMPLERS)}")
    try:
        steps = int(table["steps"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"protocol {name!r}: `steps` must be a positive integer") from exc
    if steps < 1:
        raise BadInputError(f"protocol {name!r}: steps={steps}; accepted: a positive integer")
    return Protocol(
        name=name,
        version=int(table.get("version", 1)),
        sampler=sampler,
        steps=steps,
        guidance=_per_family(name, "guidance", table.get("guidance", 5.0), float),
        resolution=_per_family(name, "resolution", table.get("resolution", 0), int),
        eta=float(table.get("eta", 0.0)),
        negative_prompt=str(table.get("negative_prompt", "")),
        summary=str(table.get("summary", "")),
    )


PROTOCOLS: Registry[Protocol] = Registry("protocols", from_table=protocol_from_table)

with resources.as_file(resources.files("rpo_bench") / "protocols.toml") as _path:
    for _name, _table in read_toml(_path).items():
        PROTOCOLS.register(_name, protocol_from_table(_name, _table), summary=_table.get("summary", ""))


def apply_sampler(pipe, protocol: Protocol) -> None:
    """Swap the pipeline's scheduler for the protocol's, keeping the checkpoint's noise schedule config."""
    class_name = SAMPLERS[protocol.sampler]
    if class_name is None:
        return
    import diffusers

    scheduler_class = getattr(diffusers, class_name)
    if type(pipe.scheduler) is not scheduler_class:
        pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
