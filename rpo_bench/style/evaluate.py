"""`rpo-bench evaluate --style S`: the style's held-out prompts, its base model first, every model under one
protocol, and the metrics that report style gained beside content kept (METHOD.md "Style alignment").

The closing "style gained vs content kept" table is read from the summary rows evaluate already computed (paired
differences against the base model, by prompt category): no statistic is computed twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rpo_bench.core.errors import MissingWeightsError
from rpo_bench.evaluation.evaluate import EvaluateConfig
from rpo_bench.evaluation.prompts import load_prompt_set
from rpo_bench.evaluation.summary import SummaryRow
from rpo_bench.hub.availability import first_missing_file
from rpo_bench.metrics import make_metric
from rpo_bench.models.catalog import resolve_model
from rpo_bench.style.embedding import content_metric
from rpo_bench.style.registry import Style, get_style


@dataclass
class StylePlan:
    style: Style
    config: EvaluateConfig
    style_metrics: list[str]  # style gained: paired differences vs the base model
    content_metrics: list[str]  # content kept: paired differences vs the base model
    base_sim: str  # content kept: the mean image cosine to the base model's image
    notes: list[str] = field(default_factory=list)  # metrics left out, and why


def _csd_or_note(style: Style) -> tuple[list[str], list[str]]:
    """csd:S when its weights are on this machine; otherwise a note, so the rest of the evaluation still runs."""
    key = f"csd:{style.name}"
    try:
        metric = make_metric(key)
        _ = metric.version
        missing = first_missing_file(metric.hub_files())
    except MissingWeightsError as exc:
        return [], [f"{key} skipped: {exc}"]
    if missing is not None:
        files, filename = missing
        return [], [f"{key} skipped: {filename} of {files.repo} is not on this machine; fetch it with "
                    f"`rpo-bench download csd`"]
    return [key], []


def style_metrics(style: Style) -> tuple[list[str], list[str], list[str], list[str]]:
    """(every metric to score, the style-gained ones, the content-kept ones, notes on metrics left out)."""
    judges = list(style.judges)
    style_judges = [j for j in judges if j.startswith("micro-style:")]
    csd, notes = _csd_or_note(style) if style.csd else ([], [])
    gained = [f"style-prob:{style.name}", *style_judges, *csd]
    kept = [content_metric(style), *(j for j in judges if j not in style_judges)]
    everything = [f"style-prob:{style.name}", f"style-sim:{style.name}", *csd, content_metric(style),
                  f"base-sim:{style.name}", *judges]
    return list(dict.fromkeys(everything)), gained, kept, notes


def style_config(style_name: str, models: Sequence[str] = (), extra_metrics: Sequence[str] = (), *,
                 prompts: str | None = None, protocol: str | None = None, by: str | None = None,
                 **options: Any) -> StylePlan:
    """The evaluate configuration of a style: base model first (the baseline), the style's prompts and protocol
    unless given, its metrics plus `extra_metrics`, split by prompt category when the prompts have categories
    (the micro styles' "content" and "worded") unless `by` says otherwise. `options` are the remaining
    EvaluateConfig fields."""
    style = get_style(style_name)
    prompts = prompts if prompts is not None else style.prompts
    if by is None and any(prompt.category for prompt in load_prompt_set(prompts).prompts):
        by = "category"
    base = style.base_model
    metrics, gained, kept, notes = style_metrics(style)
    config = EvaluateConfig(
        models=list(dict.fromkeys([base, *models])),
        prompts=prompts,
        metrics=list(dict.fromkeys([*metrics, *extra_metrics])),
        # one protocol for every model: base-sim pairs images made the same way, and the base's default is what
        # the style's probe negatives were made with
        protocol=protocol or style.protocol or resolve_model(base).protocol,
        baseline=base, by=by, **options)
    return StylePlan(style, config, gained, kept, f"base-sim:{style.name}", notes)


# -- the closing table --------------------------------------------------------------------------------------------
def _difference(row: SummaryRow | None) -> str:
    if row is None or row.versus is None:
        return "-"
    return row.versus.difference.format(3)


def _mean(row: SummaryRow | None) -> str:
    if row is None or row.interval is None:
        return "-"
    return f"{row.mean:.3f} [{row.interval.low:.3f}, {row.interval.high:.3f}]"


def gain_table(plan: StylePlan, summary: Sequence[SummaryRow]) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of "style gained vs content kept": one row per (protocol, model other than the base,
    prompt category), style metrics' and content metrics' differences vs the base with 95% CIs, mean base-sim."""
    index = {(row.group, row.model, row.category, row.metric): row for row in summary}
    groups = list(dict.fromkeys(row.group for row in summary))
    categories = list(dict.fromkeys(row.category for row in summary))
    base = plan.config.baseline
    columns = [*(["protocol"] if len(groups) > 1 else []), "model", "prompts",
               *(f"Δ {m} [95% CI]" for m in plan.style_metrics), *(f"Δ {m} [95% CI]" for m in plan.content_metrics),
               f"{plan.base_sim} [95% CI]"]
    rows = []
    for group in groups:
        for model in dict.fromkeys(row.model for row in summary if row.group == group and row.model != base):
            for category in categories:
                cells = [_difference(index.get((group, model, category, m)))
                         for m in (*plan.style_metrics, *plan.content_metrics)]
                rows.append([*([group] if len(groups) > 1 else []), model, category or "all", *cells,
                             _mean(index.get((group, model, category, plan.base_sim)))])
    return columns, rows
