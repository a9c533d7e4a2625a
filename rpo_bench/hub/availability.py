"""Is what a command will read from the Hugging Face Hub on this machine, or can it be fetched now?

A file that is not cached is fetched on first use when the Hub answers. When it does not (HF_HUB_OFFLINE, an
air-gapped cluster, a firewall), huggingface_hub and datasets retry each file for tens of seconds and end in a
traceback about the first one. So a command lists what it needs first (each registry turns its entries into
`AbsentEntry` rows: models.hub_files, evaluation.prompts, style.availability, Metric.absent_entries; the
evaluation.preflight module gathers them); when something is absent and the Hub is offline or does not answer one
short probe, `require_available` stops in one line naming every absent entry and the `rpo-bench download`
command that fetches them all. This module knows HubFiles and the Hub, never a registry.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from rpo_bench.core.config import is_offline
from rpo_bench.core.errors import MissingWeightsError
from rpo_bench.core.registry import kinds_of
from rpo_bench.hub.hub_files import GLOB_CHARS, HubFiles, is_local_location

KINDS = ("models", "metrics", "prompts", "styles")
KIND_LABELS = {"models": "model", "metrics": "metric", "prompts": "prompt set", "styles": "style"}

# Long enough for a slow TLS handshake, short enough that a dropped-packet firewall costs seconds, not minutes.
PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class AbsentEntry:
    """A registry entry with parts that are not on this machine."""

    name: str  # as `rpo-bench download` takes it
    kind: str  # one of KINDS
    sources: tuple[str, ...]  # where the absent parts come from, for the error line
    files: frozenset[tuple[str, str, str]] = frozenset()  # (repo type, repo, file) absent from the HF cache
    outside_cache: bool = False  # a prompt set's JSONL or a style's references: only this entry fetches them

    def describe(self) -> str:
        return f"{KIND_LABELS[self.kind]} {self.name} ({', '.join(self.sources)})"


def require_available(absent: Sequence[AbsentEntry | None]) -> None:
    """Refuse in one line when something is absent and cannot be fetched now; otherwise return and let the
    loaders fetch on first use, as they always did."""
    entries = without_covered([entry for entry in absent if entry is not None])
    reason = hub_unavailable() if entries else None
    if reason is not None:
        raise MissingWeightsError(absent_message(entries, reason))


def absent_message(absent: Sequence[AbsentEntry], reason: str) -> str:
    one = len(absent) == 1
    return (f"{', '.join(entry.describe() for entry in absent)} {'is' if one else 'are'} not on this machine and "
            f"{reason}; fetch {'it' if one else 'them'} with {download_commands(absent)} {where_to_download()}")


def where_to_download() -> str:
    if is_offline():
        return "with HF_HUB_OFFLINE unset"
    return ("where the Hub is reachable, then copy the Hugging Face cache and $RPO_BENCH_HOME here (or set "
            "HF_ENDPOINT to a reachable mirror)")


def download_commands(absent: Sequence[AbsentEntry]) -> str:
    """One `rpo-bench download` for all, plus one with --kind for each name that is in two registries."""
    ambiguous = [entry for entry in absent if len(kinds_of(entry.name)) > 1]
    plain = [entry.name for entry in absent if entry not in ambiguous]
    commands = [f"`rpo-bench download {shlex.join(plain)}`"] if plain else []
    commands += [f"`rpo-bench download --kind {entry.kind} {shlex.quote(entry.name)}`" for entry in ambiguous]
    return " and ".join(commands)


# -- what is absent -----------------------------------------------------------------------------------------------
def without_covered(entries: list[AbsentEntry]) -> list[AbsentEntry]:
    """Each entry once, in the order models, metrics, prompt sets, styles; an entry whose absent files all come
    with a style or prompt set already named (`clip` beside a style embedding with it) is left out: its download
    would fetch nothing more."""
    entries = list({(entry.kind, entry.name): entry for entry in entries}.values())
    covered = {file for entry in entries if entry.outside_cache for file in entry.files}
    kept = [entry for entry in entries if entry.outside_cache or not entry.files <= covered]
    return sorted(kept, key=lambda entry: KINDS.index(entry.kind))


def entry_from_files(name: str, kind: str, hub_files: Sequence[HubFiles],
                     extra: Sequence[str] = ()) -> AbsentEntry | None:
    """The entry's row when some of its Hub files (or its `extra` sources outside the HF cache) are absent."""
    missing = missing_files(hub_files)
    if not missing and not extra:
        return None
    repos = dict.fromkeys(files.repo for files, _ in missing)
    return AbsentEntry(name, kind, (*extra, *repos), frozenset((f.repo_type, f.repo, file) for f, file in missing),
                       outside_cache=bool(extra))


# -- can the Hub be reached -------------------------------------------------------------------------------------
_PROBED: dict[str, str | None] = {}  # endpoint -> why it cannot be reached (None: it answered)


def hub_endpoint() -> str:
    """What huggingface_hub talks to: HF_ENDPOINT as it read it at import, https://huggingface.co by default."""
    from huggingface_hub import constants  # noqa: PLC0415 - huggingface_hub loads in ~1 s: on first use

    return constants.ENDPOINT


def hub_unavailable() -> str | None:
    """Why nothing can be fetched now, as the end of a sentence, or None when the Hub answers. Loaders ask this
    instead of checking HF_HUB_OFFLINE alone, so an unreachable Hub fails in seconds with the same one line."""
    if is_offline():
        return "HF_HUB_OFFLINE is set"
    why = hub_unreachable()
    return None if why is None else f"the Hub at {hub_endpoint()} cannot be reached ({why})"


def hub_unreachable() -> str | None:
    """None when the Hub answers; otherwise why not, in one line. Asked once per process and endpoint."""
    endpoint = hub_endpoint()
    if endpoint not in _PROBED:
        _PROBED[endpoint] = _probe(endpoint)
    return _PROBED[endpoint]


def _probe(endpoint: str) -> str | None:
    """One HEAD request through huggingface_hub's own client (its proxies and certificates), without its retries:
    an answer means the Hub is there, unless it is a server error, which huggingface_hub would retry for tens of
    seconds per file (a proxy that cannot reach the Hub answers 502 or 503)."""
    from huggingface_hub.utils import get_session  # noqa: PLC0415 - huggingface_hub loads in ~1 s: on first use

    try:
        status = get_session().head(endpoint, timeout=PROBE_TIMEOUT_S).status_code
    except Exception as exc:  # the client is requests, httpx or httpx2 by huggingface_hub version: no common type
        return one_line(exc)
    return f"HTTP {status}" if status >= 500 else None


def one_line(exc: BaseException) -> str:
    """huggingface_hub's messages span lines (status, then the reason, then the URL): keep them all, on one."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- which files are here ---------------------------------------------------------------------------------------
def download_command(name: str) -> str:
    return f"`rpo-bench download {name}`"


def missing_file_message(name: str, hub_files: HubFiles, filename: str, reason: str = "HF_HUB_OFFLINE is set") -> str:
    """The one line every "file not here, Hub offline or unreachable" error prints: what is missing, why it cannot
    be fetched now (`hub_unavailable`), and the command that fetches it."""
    return (f"{name}: {hub_files.repo}/{filename} (revision {hub_files.revision}) is not on this machine and "
            f"{reason}; fetch it with {download_command(name)}")


def first_missing_file(hub_files: Sequence[HubFiles]) -> tuple[HubFiles, str] | None:
    missing = missing_files(hub_files)
    return missing[0] if missing else None


def missing_files(hub_files: Sequence[HubFiles]) -> list[tuple[HubFiles, str]]:
    """Every declared file (a pattern without wildcards) absent from the local cache. Offline, nothing else is
    knowable: which files a wildcard matches is a question for the Hub. Local paths and names that are no repo
    id are skipped: the loader's own checks say what is wrong with them."""
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415 - huggingface_hub loads in ~1 s: on use
    from huggingface_hub.errors import HFValidationError  # noqa: PLC0415 - huggingface_hub loads in ~1 s: on first use

    missing = []
    for files in hub_files:
        if is_local_location(files.repo):
            continue
        for pattern in files.patterns:
            if not GLOB_CHARS.isdisjoint(pattern):
                continue
            try:
                cached = try_to_load_from_cache(files.repo, pattern, revision=files.revision,
                                                repo_type=files.repo_type)
            except HFValidationError:
                break
            if not isinstance(cached, str):
                missing.append((files, pattern))
    return missing
