"""What a registry entry needs from the Hugging Face Hub, declared as data.

Models, metrics and prompt sets each describe their remote files as `HubFiles`; `rpo-bench download` fetches
them (with sha256 checks), and loaders name the same `rpo-bench download NAME` command when a file is missing
offline. Declaring files as data keeps the "what" (here) apart from the "how" (the download engine).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rpo_bench.core.errors import RpoBenchError

GLOB_CHARS = set("*?[")


class DownloadError(RpoBenchError):
    """A download that cannot run or complete, or whose bytes differ from the published ones."""


def is_local_location(location: str) -> bool:
    """A path (not a Hub repo id): what the loader and `rpo-bench download` read from disk, not from the Hub."""
    return bool(location) and (location.startswith(("/", ".", "~")) or Path(location).expanduser().is_dir())


@dataclass(frozen=True)
class HubFiles:
    """Files of one Hub repository at one revision.

    `patterns` are `allow_patterns` in huggingface_hub's sense (fnmatch on the repo path); empty means the whole
    repository. `sha256` pins the content of named files: a download whose hash differs is refused and removed.
    """

    repo: str
    revision: str = "main"
    repo_type: str = "model"  # "model" or "dataset"
    patterns: tuple[str, ...] = ()
    sha256: Mapping[str, str] = field(default_factory=dict)
    what: str = ""  # a human label for listings, e.g. "HPSv2 checkpoint"
