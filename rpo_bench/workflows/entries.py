"""Which Hub files a name of any registry (model, metric, prompt set, style) reads: what `rpo-bench download NAME`
plans from, and its did-you-mean across every kind.

Each registry declares its own files (models.hub_files for a ModelSpec, `Metric.hub_files()`, a prompt set's
dataset files, a style's CLIP and the Hub dataset its references are streamed from); this module only finds which
registry a name belongs to, so it sits with the workflows, above all of them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rpo_bench.core.errors import UnknownNameError
from rpo_bench.core.registry import kinds_of, registry_of
from rpo_bench.evaluation.prompts import PROMPT_SETS, cached_prompts_path, prompts_fetched
from rpo_bench.hub.availability import KIND_LABELS, KINDS
from rpo_bench.hub.hub_files import DownloadError, HubFiles
from rpo_bench.metrics import make_metric
from rpo_bench.models.catalog import resolve_model
from rpo_bench.models.hub_files import model_hub_files
from rpo_bench.style.availability import references_fetched
from rpo_bench.style.embedding import clip_metric
from rpo_bench.style.registry import dataset_folder, get_style


# -- what a name needs ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EntryFiles:
    """One registry entry's remote files, plus what the listing should say about everything else."""

    name: str
    kind: str
    files: tuple[HubFiles, ...] = ()
    note: str = ""
    prompt_set: Any = None  # a PromptSetSpec fetched from the Hub: load_spec writes its JSONL after the files
    style: Any = None  # a Style whose references are streamed from a Hub dataset after the files


def hub_files_for(name: str, kind: str | None = None) -> list[HubFiles]:
    """The Hub files registry entry `name` reads; `kind` (models, metrics, prompts) when the name is ambiguous."""
    return list(entry_files(name, kind).files)


def entry_files(name: str, kind: str | None = None) -> EntryFiles:
    if kind is not None and kind not in KINDS:
        raise DownloadError(f"unknown kind {kind!r}; accepted: {', '.join(KINDS)}")
    kind = kind or _kind_of(name)
    if kind == "models":
        return _model_entry(name)
    if kind == "metrics":
        return _metric_entry(name)
    if kind == "styles":
        return _style_entry(name)
    return _prompt_set_entry(name)


def _kind_of(name: str) -> str:
    found = kinds_of(name)
    if len(found) > 1:
        raise DownloadError(f"{name!r} names a {' and a '.join(KIND_LABELS[k] for k in found)}; choose one with "
                            f"--kind {' or --kind '.join(found)}")
    if found:
        return found[0]
    if Path(name).expanduser().is_dir():  # a model folder, accepted wherever a model name is
        return "models"
    raise UnknownNameError(f"unknown model, metric, prompt set or style {name!r}; {_close_names_hint(name)}")


def _close_names_hint(name: str) -> str:
    """Close names from every kind `download` takes, each labelled, so a style is not offered as a prompt set."""
    labels: dict[str, list[str]] = {}
    for kind in KINDS:
        for candidate in registry_of(kind).names():
            labels.setdefault(candidate, []).append(KIND_LABELS[kind])
    close = difflib.get_close_matches(name, sorted(labels), n=3, cutoff=0.5)
    if not close:
        return "see `rpo-bench models`, `rpo-bench metrics`, `rpo-bench prompts` and `rpo-bench styles`"
    named = [f"{candidate} ({' or '.join(labels[candidate])})" for candidate in close]
    return f"did you mean {', '.join(named)}?"


def _model_entry(name: str) -> EntryFiles:
    spec = resolve_model(name)
    files = tuple(model_hub_files(spec))
    if files:
        return EntryFiles(name, "models", files)
    note = "a tiny model, built on this machine on first use" if spec.tiny else "local weights"
    return EntryFiles(name, "models", note=f"{note}: nothing to download")


def _metric_entry(name: str) -> EntryFiles:
    files = tuple(make_metric(name).hub_files())
    return EntryFiles(name, "metrics", files, note="" if files else "declares no Hub files: nothing to download")


def _style_entry(name: str) -> EntryFiles:
    """A style's CLIP (what style-prob, style-sim and base-sim embed with) and, for a Hub-dataset style, its
    references: after `download S`, `train --style S` and `evaluate --style S` need nothing more of the style."""
    style = get_style(name)
    files = tuple(clip_metric(style).hub_files())
    if not style.dataset:
        where = f"references: {style.source_text}"
        return EntryFiles(name, "styles", files, note=where if files else f"{where}: nothing to download")
    state = "already there" if references_fetched(style) else "not fetched yet"
    return EntryFiles(name, "styles", files, style=style,
                      note=f"{style.references} references of {style.source_text} are streamed by the datasets "
                           f"library into {dataset_folder(style)} ({state})")


def _prompt_set_entry(name: str) -> EntryFiles:
    spec = PROMPT_SETS.get(name)
    if not spec.hf_dataset:
        return EntryFiles(name, "prompts", note=f"a file ({spec.file}): nothing to download")
    jsonl = cached_prompts_path(spec.name)
    if spec.hf_files:
        files = HubFiles(spec.hf_dataset, repo_type="dataset", patterns=tuple(spec.hf_files),
                         what=f"prompt set {spec.name}")
        return EntryFiles(name, "prompts", (files,), note=f"prompts are then written to {jsonl}", prompt_set=spec)
    state = "already there" if prompts_fetched(spec) else "not fetched yet"
    return EntryFiles(name, "prompts", prompt_set=spec,
                      note=f"split {spec.split!r} of dataset {spec.hf_dataset} is fetched by the datasets library "
                           f"(files and sizes not listed here) into {jsonl} ({state})")
