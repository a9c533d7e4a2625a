"""Whether a style's parts are on this machine: its CLIP (what style-prob, style-sim and base-sim embed with) and,
for a style streamed from a Hub dataset, its references."""

from __future__ import annotations

from rpo_bench.hub.availability import AbsentEntry, entry_from_files
from rpo_bench.style.embedding import clip_metric
from rpo_bench.style.registry import CAPTIONS_FILE, Style, dataset_folder, get_style


def references_fetched(style: Style) -> bool:
    """Whether a Hub-dataset style's references were streamed into their folder (captions.jsonl comes last)."""
    return (dataset_folder(style) / CAPTIONS_FILE).is_file()


def absent_style(name: str) -> AbsentEntry | None:
    """The style's row for the preflight when its CLIP or its references are not on this machine."""
    style = get_style(name)
    references = (f"references from hf:{style.dataset}",) if style.dataset and not references_fetched(style) else ()
    return entry_from_files(name, "styles", clip_metric(style).hub_files(), extra=references)
