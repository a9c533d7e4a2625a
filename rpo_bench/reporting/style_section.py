"""The style section of a report: style gained against content kept, per model, from numbers the report already
computed (paired differences with the baseline). Present when the store holds a style metric and a content metric
under the same prompt set and protocol.

Which metric speaks for each side is what the metrics declare (Metric.aspect, and aspect_rank for the order of
preference: the ground-truth judge where the micro world has one, then the probe, CSD and the centroid similarity
for style; the micro-oracle, then CLIP score for content), so a new style metric needs no edit here. Prompts
of the category "content" (the style's held-out prompts that do not name the style) are used when the report is
split by category, since prompts that name the style measure the prompt as much as the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from rpo_bench.evaluation import stats
from rpo_bench.metrics import metric_aspect
from rpo_bench.reporting.plots import figure_png, new_figure
from rpo_bench.reporting.report import Report, Section

CONTENT_CATEGORY = "content"


@dataclass(frozen=True)
class StylePoint:
    model: str
    style_gained: stats.Interval  # paired difference with the baseline, style metric
    content_kept: stats.Interval  # paired difference with the baseline, content metric


@dataclass(frozen=True)
class StyleComparison:
    prompt_set: str
    protocol: str
    category: str | None
    baseline: str
    style_metric: str
    content_metric: str
    points: tuple[StylePoint, ...]


def _pick(sections: list[Section], aspect: str) -> Section | None:
    """The section of the best-ranked metric of `aspect` that has a baseline (the first such section on a tie)."""
    ranked = [(declared[1], i, s) for i, s in enumerate(sections)
              if (declared := metric_aspect(s.group.metric)) is not None and declared[0] == aspect
              and s.baseline is not None]
    return min(ranked, key=lambda item: item[:2])[2] if ranked else None


def _differences(section: Section, category: str | None) -> dict[str, stats.Interval]:
    return {row.model: row.versus.difference for row in section.rows
            if row.category == category and row.versus is not None}


def style_comparisons(report: Report) -> list[StyleComparison]:
    """One comparison per (prompt set, protocol) that has both a style and a content metric."""
    by_setting: dict[tuple[str, str], list[Section]] = {}
    for section in report.sections:
        by_setting.setdefault((section.group.prompt_set, section.group.protocol), []).append(section)
    found = []
    for (prompt_set, protocol), sections in by_setting.items():
        style, content = _pick(sections, "style"), _pick(sections, "content")
        if style is None or content is None or style.baseline != content.baseline:
            continue
        categories = {row.category for row in style.rows} & {row.category for row in content.rows}
        category = CONTENT_CATEGORY if CONTENT_CATEGORY in categories else None
        gained, kept = _differences(style, category), _differences(content, category)
        points = tuple(StylePoint(model, gained[model], kept[model]) for model in gained if model in kept)
        if points:
            found.append(StyleComparison(prompt_set, protocol, category, style.baseline, style.group.metric,
                                         content.group.metric, points))
    return found


def style_markdown(comparisons: list[StyleComparison]) -> list[str]:
    lines: list[str] = []
    for c in comparisons:
        where = f"prompt set {c.prompt_set}, protocol {c.protocol}" + (
            f", {c.category} prompts" if c.category else ", all prompts")
        lines += ["", f"## Style gained vs content kept ({where})", "",
                  f"Paired differences with {c.baseline} [95% CI]: style by {c.style_metric}, content by "
                  f"{c.content_metric}. A model that buys style by losing the content sits low on the second.", "",
                  f"| model | style gained (Δ {c.style_metric}) | content kept (Δ {c.content_metric}) |",
                  "|:---|---:|---:|"]
        lines += [f"| {p.model.replace('|', '/')} | {p.style_gained.format(3)} | {p.content_kept.format(3)} |"
                  for p in c.points]
    return lines


def style_plot_png(comparison: StyleComparison) -> bytes:
    """Style gained (y) against content kept (x), each with its 95% interval, one labelled point per model."""
    figure = new_figure(5.6, 4.2)
    ax = figure.add_subplot()
    for point in comparison.points:
        x, y = point.content_kept, point.style_gained
        ax.errorbar(x.estimate, y.estimate, xerr=[[x.estimate - x.low], [x.high - x.estimate]],
                    yerr=[[y.estimate - y.low], [y.high - y.estimate]], fmt="o", capsize=3)
        label = point.model.rstrip("/").rsplit("/", 1)[-1]  # a trained run is named by its path: its folder
        ax.annotate(label, (x.estimate, y.estimate), textcoords="offset points", xytext=(5, 5), fontsize=7)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"content kept: Δ {comparison.content_metric} vs {comparison.baseline}", fontsize=8)
    ax.set_ylabel(f"style gained: Δ {comparison.style_metric}", fontsize=8)
    ax.tick_params(labelsize=8)
    return figure_png(figure)
