"""Before any work: is everything a command will read from the Hugging Face Hub on this machine, or fetchable?

A file that is not cached is fetched on first use when the Hub answers. When it does not (HF_HUB_OFFLINE, an
air-gapped cluster, a firewall), huggingface_hub and datasets retry each file for tens of seconds and end in a
traceback about the first one. So a command lists what it needs first; when something is absent and the Hub is
offline or does not answer one short probe, it stops in one line naming every absent entry and the
`rpo-bench download` command that fetches them all.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rpo_bench.config import is_offline
from rpo_bench.entry_files import KIND_LABELS, KINDS, kinds_of, missing_files
from rpo_bench.errors import MissingWeightsError
from rpo_bench.hub_files import HubFiles

# Long enough for a slow TLS handshake, short enough that a dropped-packet firewall costs seconds, not minutes.
PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class AbsentEntry:
    """A registry entry with parts that are not on this machine."""

    name: str  # as `rpo-bench download` takes it
    kind: str  # one of entry_files.KINDS
    sources: tuple[str, ...]  # where the absent parts come from, for the error line
    files: frozenset[tuple[str, str, str]] = frozenset()  # (repo type, repo, file) absent from the HF cache
    outside_cache: bool = False  # a prompt set's JSONL or a style's references: only this entry fetches them

    def describe(self) -> str:
        return f"{KIND_LABELS[self.kind]} {self.name} ({', '.join(self.sources)})"


def require_fetchable(models: Iterable[str] = (), metrics: Iterable[str] = (), prompts: Iterable[str] = (),
                      styles: Iterable[str] = ()) -> None:
    """Refuse in one line when something the names need is absent and cannot be fetched now; otherwise return
    and let the loaders fetch on first use, as they always did. Unknown names fail here as they would later."""
    absent = absent_entries(models, metrics, prompts, styles)
    reason = hub_unavailable() if absent else None
    if reason is not None:
        raise MissingWeightsError(absent_message(absent, reason))


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
def absent_entries(models: Iterable[str] = (), metrics: Iterable[str] = (), prompts: Iterable[str] = (),
                   styles: Iterable[str] = ()) -> list[AbsentEntry]:
    """The named entries with absent parts, in the order models, metrics, prompt sets, styles. A style metric
    (style-prob:S, csd:S) also needs its style's references, so its style is checked too."""
    from rpo_bench.metrics import make_metric

    styles = list(styles)
    found = [_absent_model(name) for name in dict.fromkeys(models)]
    for key in dict.fromkeys(metrics):
        metric = make_metric(key)
        found.append(_from_files(metric.key, "metrics", metric.hub_files()))
        styles += [name for name in [_style_of(metric)] if name]
    found += [_absent_prompt_set(name) for name in dict.fromkeys(prompts)]
    found += [_absent_style(name) for name in dict.fromkeys(styles)]
    return _without_covered([entry for entry in found if entry is not None])


def _without_covered(entries: list[AbsentEntry]) -> list[AbsentEntry]:
    """Leave out an entry whose absent files all come with a style or prompt set already named (`clip` beside a
    style embedding with it): its download would fetch nothing more."""
    covered = {file for entry in entries if entry.outside_cache for file in entry.files}
    kept = [entry for entry in entries if entry.outside_cache or not entry.files <= covered]
    return sorted(kept, key=lambda entry: KINDS.index(entry.kind))


def _from_files(name: str, kind: str, hub_files: Sequence[HubFiles], extra: Sequence[str] = ()) -> AbsentEntry | None:
    missing = missing_files(hub_files)
    if not missing and not extra:
        return None
    repos = dict.fromkeys(files.repo for files, _ in missing)
    return AbsentEntry(name, kind, (*extra, *repos), frozenset((f.repo_type, f.repo, file) for f, file in missing),
                       outside_cache=bool(extra))


def _absent_model(name: str) -> AbsentEntry | None:
    from rpo_bench.entry_files import model_hub_files
    from rpo_bench.models.catalog import resolve_model

    return _from_files(name, "models", model_hub_files(resolve_model(name)))


def _absent_prompt_set(name: str) -> AbsentEntry | None:
    """A registered set from a Hub dataset without its JSONL; a file (or a typo, which load_prompt_set names) is
    not the Hub's business."""
    from rpo_bench.entry_files import prompts_fetched
    from rpo_bench.prompts import PROMPT_SETS

    if name not in PROMPT_SETS:
        return None
    spec = PROMPT_SETS.get(name)
    if not spec.hf_dataset or prompts_fetched(spec):
        return None
    return _from_files(name, "prompts", (), extra=(f"hf:{spec.hf_dataset}",))


def _absent_style(name: str) -> AbsentEntry | None:
    from rpo_bench.entry_files import references_fetched
    from rpo_bench.style_embedding import clip_metric
    from rpo_bench.styles import get_style

    style = get_style(name)
    references = (f"references from hf:{style.dataset}",) if style.dataset and not references_fetched(style) else ()
    return _from_files(name, "styles", clip_metric(style).hub_files(), extra=references)


def _style_of(metric) -> str | None:
    """The style a style metric fits its probe or prototype to; None for every other metric."""
    from rpo_bench.styles import Style

    style = getattr(metric, "style", None) if metric.arg else None
    return style.name if isinstance(style, Style) else None


# -- can the Hub be reached -------------------------------------------------------------------------------------
_PROBED: dict[str, str | None] = {}  # endpoint -> why it cannot be reached (None: it answered)


def hub_endpoint() -> str:
    """What huggingface_hub talks to: HF_ENDPOINT as it read it at import, https://huggingface.co by default."""
    from huggingface_hub import constants

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
    from huggingface_hub.utils import get_session

    try:
        status = get_session().head(endpoint, timeout=PROBE_TIMEOUT_S).status_code
    except Exception as exc:  # the client is requests, httpx or httpx2 by huggingface_hub version: no common type
        return one_line(exc)
    return f"HTTP {status}" if status >= 500 else None


def one_line(exc: BaseException) -> str:
    """huggingface_hub's messages span lines (status, then the reason, then the URL): keep them all, on one."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
