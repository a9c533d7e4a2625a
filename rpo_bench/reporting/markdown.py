"""`rpo-bench report --markdown`: the Report (reporting.report) rendered as markdown, every store string escaped."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path

from rpo_bench.evaluation.summary import SummaryRow
from rpo_bench.reporting.cells import comparison_cells, mean_text, ranks, settings_text
from rpo_bench.reporting.report import Report, Section, build_report, header_items
from rpo_bench.reporting.style_section import style_comparisons, style_markdown


def _cell(text: object) -> str:
    """Markdown-safe text from the store or the user (models, prompt sets, categories, labels): HTML is escaped, so
    a name like `<img onerror=...>` is shown and never run where markdown is rendered, and '|' and line breaks
    cannot break a table or start a heading."""
    text = html.escape(str(text), quote=False)
    return re.sub(r"[\x00-\x1f\x7f]", " ", text.replace("\\", "\\\\").replace("|", "\\|"))


def _code(text: str) -> str:
    """A one-line markdown code span of any text: control characters escaped, and a fence longer than any run of
    backticks inside it."""
    line = text.encode("unicode_escape").decode("ascii") if re.search(r"[\x00-\x1f\x7f]", text) else text
    fence = "`" * (max((len(run) for run in re.findall(r"`+", line)), default=0) + 1)
    return f"{fence} {line} {fence}" if len(fence) > 1 else f"`{line}`"


def _table(rows: Sequence[SummaryRow], baseline: str | None) -> list[str]:
    compared = baseline is not None
    header = ["model", "n", "mean [95% CI]", "rank"]
    if compared:
        header += [f"diff vs {baseline} [95% CI]", "win rate", "Holm p"]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join([":---", "---:", "---:", "---:"] + ["---:"] * (3 if compared else 0)) + "|"]
    row_ranks = ranks(rows)
    for row in rows:
        # the model's name is the store's text; the other cells are numbers this module formats
        cells = [_cell(row.model), row.samples if row.n else "0", mean_text(row), str(row_ranks.get(row.model, "-"))]
        if compared:
            cells += comparison_cells(row)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def provenance_lines(report: Report) -> list[str]:
    info = report.info
    lines = [f"- report made by rpo-bench {report.version}",
             f"- git commit(s) recorded by the runs: {', '.join(info.commits) or 'none (no runs recorded)'}"]
    if info.versions:
        lines.append("- library versions recorded by the runs: " + ", ".join(
            f"{_cell(name)} {_cell(' / '.join(v))}" for name, v in sorted(info.versions.items())))
    # the only place the store's own names of renamed models (folder paths) are shown
    lines += [f"- model {_cell(shown)} is {_code(name)} in the store" for name, shown in report.labels.items()]
    lines.append(f"- reproduce: {_code(report.command)}")
    return lines


def _section_lines(report: Report, section: Section, level: int) -> list[str]:
    """A section under a heading of `level` (2 in the body, 3 in the appendix), its tables one level below."""
    g = section.group
    lines = ["", f"{'#' * level} {_cell(section.title)}", "",
             f"protocol settings: {_cell(settings_text(g.protocol_settings))}; seeds: "
             f"{', '.join(str(s) for s in g.seeds)}"]
    if report.baseline is not None and section.baseline is None:
        lines += ["", f"(the baseline {_cell(report.baseline)} has no scores in this section: no comparison)"]
    for category, rows in section.tables():
        lines += ["", f"{'#' * (level + 1)} {'all prompts' if category is None else f'category {_cell(category)}'}",
                  ""]
        lines += _table(rows, section.baseline if section.compared else None)  # nothing to compare: no columns
    if section.reported:
        lines += ["", f"{'#' * (level + 1)} reported (published numbers, not measured here: other images and scorer "
                  "copies, so never ranked or compared with the rows above)", "",
                  "| model (reported) | value | source |", "|:---|---:|:---|"]
        lines += [f"| {_cell(r.model)} | {r.value:g} | {_cell(r.source)} |" for r in section.reported]
    return lines


def render_markdown(report: Report) -> str:
    """The report as markdown: a header (what was evaluated, which run leads), the sections that compare models
    (the lead run's first), the style comparisons and notes, an appendix of the sections that compare nothing, and
    a provenance footer."""
    lines = [f"# rpo-bench report: {_cell(report.store.name)}", ""]
    if (lead := report.lead_text()) is not None:
        lines += [f"**{_cell(lead)}**", ""]
    lines += [f"- {item}" for item in header_items(report, _cell, lambda text: f"`{text}`")]
    for section in report.main_sections:
        lines += _section_lines(report, section, 2)
    lines += style_markdown(style_comparisons(report))
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {_cell(n)}" for n in report.notes]
    if report.appendix:
        lines += ["", "## Appendix: single-model sections", "",
                  "Sections that compare nothing: one model alone, or models without the baseline."]
        for section in report.appendix:
            lines += _section_lines(report, section, 3)
    lines += ["", "## Provenance", "", *provenance_lines(report)]
    return "\n".join(lines) + "\n"


def report_markdown(store_path: Path, baseline: str | None = None, by: str | None = None,
                    metrics: str | Sequence[str] | None = None, command: str | None = None,
                    run: str | None = None) -> str:
    return render_markdown(build_report(store_path, baseline, by, metrics, command, run=run))
