"""What the official preference scorers (HPSv2, PickScore, ImageReward, aesthetic) share.

Each scorer reads its weights either from the Hub (the files it declares as `HubFiles`, fetched by
`rpo-bench download NAME`) or from a local path given as its argument (`hpsv2:/path/HPS_v2_compressed.pt`), in
the official file layout. Its `version` names the formula and the exact weights (hub commit or file hash), so
scores of different weights are never averaged together. Scoring is split into `prepare` (decode-side work:
preprocessing and tokenising) and `forward` (the model), so the benchmark can time the wrapper against the raw
forward.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from rpo_bench.core.errors import BadInputError, MissingWeightsError
from rpo_bench.hub.availability import hub_unavailable, missing_file_message
from rpo_bench.hub.hub_files import HubFiles
from rpo_bench.metrics.base import Metric
from rpo_bench.models.fingerprint import file_fingerprint, folder_fingerprint, resolve_hub_commit

log = logging.getLogger(__name__)


def fetch_hub_file(name: str, files: HubFiles, filename: str) -> Path:
    """A file of `files` from the local Hugging Face cache, downloading it when online."""
    from huggingface_hub import hf_hub_download  # noqa: PLC0415 - huggingface_hub loads in ~1 s: on first use


    reason = hub_unavailable()  # unreachable: the cache alone, not huggingface_hub's retries
    try:
        return Path(hf_hub_download(files.repo, filename, revision=files.revision, repo_type=files.repo_type,
                                    local_files_only=reason is not None))
    except Exception as exc:  # huggingface_hub raises several unrelated types for "not here"
        if reason is not None:
            raise MissingWeightsError(missing_file_message(name, files, filename, reason)) from exc
        raise MissingWeightsError(f"{name}: cannot fetch {files.repo}/{filename} (revision {files.revision}): "
                                  f"{type(exc).__name__}; fetch it with `rpo-bench download {name}`") from exc


@contextlib.contextmanager
def transformers_errors_only() -> Iterator[None]:
    """Mute transformers' load report while loading part of a checkpoint on purpose; errors still show."""
    from transformers.utils import logging as hf_logging  # noqa: PLC0415 - transformers loads in seconds: on first use

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def local_identity(path: Path) -> str:
    digest = folder_fingerprint(path) if path.is_dir() else file_fingerprint(path)
    return f"{path.name}@{digest[:12]}"


def check_prompts(prompts: Sequence[str], what: str) -> None:
    for position, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadInputError(f"{what}: prompt {position} is empty; preference scorers rate an image *for* a "
                                "prompt, accepted: non-empty text")


class OfficialScorer(Metric):
    """Base of the checkpoint-backed scorers. Subclasses set `hub`, `accepted_local` and implement
    `build` (load weights), `prepare` (images + prompts -> model inputs) and `forward` (inputs -> scores)."""

    formula_version = "1"
    hub: HubFiles
    accepted_local: str = ""     # what a local argument must be, for error messages
    token_limit: int = 77        # text tokens the official tokenizer keeps; longer prompts are truncated
    uses_prompt: bool = True     # the aesthetic predictor rates the image alone

    def __init__(self, arg: str | None = None):
        super().__init__(arg)
        if arg and arg.startswith("@"):  # `hpsv2:@<commit>`: the official weights at a pinned Hub revision
            if not re.fullmatch(r"[A-Za-z0-9._/-]+", arg[1:]):
                raise BadInputError(f"{self.name}:{arg}: the revision after '@' is empty or not a commit, branch or "
                                    f"tag name; accepted: {self.name}:@<commit hash>, e.g. {self.name}:@main")
            self.hub = dataclasses.replace(self.hub, revision=arg[1:])
        self._identity: str | None = None
        self._warned_truncation = False
        self.model: Any = None
        self.device, self.dtype = "cpu", torch.float32

    # --- where the weights are -------------------------------------------------------------------------
    def local_source(self) -> Path | None:
        if not self.arg or self.arg.startswith("@"):
            return None
        path = Path(self.arg).expanduser()
        if not path.exists():
            raise BadInputError(f"{self.key}: {path} does not exist; accepted: {self.accepted_local}")
        return path

    def hub_files(self) -> list[HubFiles]:
        """The Hub files this metric reads with its argument (what `rpo-bench download` fetches): all of them
        without one; subclasses whose local folders may lack a part (a tokenizer, a CLIP) add that part."""
        return self.all_hub_files() if self.local_source() is None else []

    def all_hub_files(self) -> list[HubFiles]:
        return [self.hub]

    def weights_file(self, filename: str, files: HubFiles | None = None) -> Path:
        """`filename` from the local argument (a folder holding it, or the file itself) or from the Hub."""
        local = self.local_source()
        if local is None:
            return fetch_hub_file(self.name, files or self.hub, filename)
        candidate = local / filename if local.is_dir() else local
        if local.is_dir() and not candidate.exists():
            raise BadInputError(f"{self.key}: {local} has no {filename}; accepted: {self.accepted_local}")
        return candidate  # present but a directory, empty or corrupt: the reader of that format says which

    @property
    def version(self) -> str:
        """Formula + every weight file's identity: a local file's hash, the Hub commit of each repo it reads."""
        if self._identity is None:
            local = self.local_source()
            parts = [local_identity(local)] if local is not None else []
            parts += [f"{files.repo}@{self._hub_commit(files)[:12]}" for files in self.hub_files()]
            self._identity = "+".join(parts)
        return f"{self.formula_version}+{self._identity}"

    def _hub_commit(self, files: HubFiles) -> str:
        return resolve_hub_commit(files.repo, files.revision, files.patterns[0], f"metric {self.key}", self.name)

    # --- scoring ---------------------------------------------------------------------------------------
    def load(self, device: str, dtype) -> None:
        self.device, self.dtype = device, dtype
        self.build()

    @abstractmethod
    def build(self) -> None:
        """Load the weights into `self.model` on `self.device` / `self.dtype`."""

    @abstractmethod
    def prepare(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Preprocess and tokenise: the model's inputs, on the device."""

    @abstractmethod
    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        """The model on prepared inputs: one score per image."""

    def count_truncated(self, prompts: Sequence[str]) -> int:
        return 0

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        if len(images) != len(prompts):
            raise BadInputError(f"{self.key}: {len(images)} images but {len(prompts)} prompts")
        if self.uses_prompt:
            check_prompts(prompts, self.key)
        if not self._warned_truncation and (count := self.count_truncated(prompts)):
            # said once per run: the official code truncates silently, and so do we, but the user should know
            log.warning("%s: %d prompt(s) exceed the tokenizer's %d tokens and are truncated, as the official "
                        "code does", self.key, count, self.token_limit)
            self._warned_truncation = True
        inputs = self.prepare(images, prompts)
        with torch.inference_mode():
            return self.forward(**inputs).float().cpu().tolist()

    def unload(self) -> None:
        self.model = None
