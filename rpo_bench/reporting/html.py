"""`rpo-bench report --html`: the report of reporting.report as ONE self-contained HTML file, from the Jinja2
template templates/report.html.j2 (autoescape on).

Self-contained means the file alone shows everything, offline and forever: inline CSS, no script, no external URL,
every picture (bar charts, the image grid) embedded as a data: PNG. The numbers are the markdown report's cells
(the same helpers format them), so the two formats never disagree. Every text that comes from the store (model
names, prompts, settings, versions, notes...) is HTML-escaped: a model may be named by anyone.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

from markupsafe import Markup

from rpo_bench.core.config import default_image_cache
from rpo_bench.evaluation.image_cache import ImageCache
from rpo_bench.evaluation.store import ResultsStore
from rpo_bench.evaluation.summary import SummaryRow
from rpo_bench.reporting.cells import comparison_cells, mean_text, ranks, settings_text
from rpo_bench.reporting.grids import image_grid, stored_images
from rpo_bench.reporting.plots import interval_bars_png
from rpo_bench.reporting.report import Report, Section, header_items
from rpo_bench.reporting.style_section import style_comparisons, style_plot_png

GRID_PROMPTS = 6  # rows of the image grid: enough to see a difference, small enough to keep the file light

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 70em;
       padding: 0 1em; color: #1a1a1a; background: #ffffff; line-height: 1.4; }
h1 { font-size: 1.6em; border-bottom: 2px solid #4c78a8; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #cccccc; }
h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .92em; }
th, td { border: 1px solid #cccccc; padding: .25em .6em; }
th { background: #eef2f7; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.baseline td { background: #fff4e8; }
code { background: #f3f3f3; padding: 0 .25em; word-break: break-all; }
img { max-width: 100%; height: auto; display: block; margin: .5em 0; }
.muted { color: #666666; }
footer { margin-top: 3em; font-size: .9em; border-top: 1px solid #cccccc; }
""".strip()


def _png_img(data: bytes, alt: str) -> Markup:
    encoded = base64.b64encode(data).decode("ascii")
    return Markup('<img src="data:image/png;base64,{}" alt="{}">').format(encoded, alt)


def _template():
    from jinja2 import Environment, FileSystemLoader  # noqa: PLC0415 - only the HTML report needs jinja2

    environment = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return environment.get_template("report.html.j2")


# -- what the page shows ---------------------------------------------------------------------------------------
def _table(label: str, rows: Sequence[SummaryRow], baseline: str | None, metric: str) -> dict:
    """The markdown report's table (same cells, same helpers), with its bar chart."""
    compared = baseline is not None
    header = ["model", "n", "mean [95% CI]", "rank"]
    if compared:
        header += [f"diff vs {baseline} [95% CI]", "win rate", "Holm p"]
    row_ranks = ranks(rows)
    body = [{"model": row.model, "baseline": row.model == baseline,
             "cells": [row.samples if row.n else "0", mean_text(row), str(row_ranks.get(row.model, "-")),
                       *(comparison_cells(row) if compared else [])]} for row in rows]
    # the section heading names the version and protocol; the chart keeps to what tells its tables apart
    chart = _png_img(interval_bars_png(rows, baseline, f"{metric} · {label}"),
                     f"bar chart: each model's mean {metric} with its 95% interval ({label})")
    return {"label": label, "header": header, "rows": body, "chart": chart}


def _section(section: Section, report: Report) -> dict:
    g = section.group
    tables = [_table("all prompts" if category is None else f"category {category}", rows, section.baseline,
                     g.metric) for category, rows in section.tables()]
    reported = [{"model": r.model, "value": f"{r.value:g}", "source": r.source} for r in section.reported]
    no_baseline = report.baseline if report.baseline is not None and section.baseline is None else None
    return {"title": section.title, "settings": settings_text(g.protocol_settings),
            "seeds": ", ".join(str(s) for s in g.seeds), "no_baseline": no_baseline, "tables": tables,
            "reported": reported}


def _style_sections(report: Report) -> list[dict]:
    """Style gained vs content kept (reporting.style_section): the table and the plot of one against the other."""
    return [{"where": (where := f"prompt set {c.prompt_set}, protocol {c.protocol}, {c.category or 'all'} prompts"),
             "baseline": c.baseline, "style_metric": c.style_metric, "content_metric": c.content_metric,
             "points": [{"model": p.model, "gained": p.style_gained.format(3), "kept": p.content_kept.format(3)}
                        for p in c.points],
             "plot": _png_img(style_plot_png(c), f"style gained against content kept, {where}")}
            for c in style_comparisons(report)]


def _provenance_items(report: Report) -> list:
    """The content of markdown.provenance_lines, for HTML."""
    info = report.info
    items: list = [f"report made by rpo-bench {report.version}",
                   "git commit(s) recorded by the runs: " + (", ".join(info.commits) or "none (no runs recorded)")]
    if info.versions:
        items.append("library versions recorded by the runs: " + ", ".join(
            f"{name} {' / '.join(v)}" for name, v in sorted(info.versions.items())))
    items.append(Markup("reproduce: <code>{}</code>").format(report.command))
    return items


def _escaped(text: object) -> Markup:
    return Markup.escape(str(text))


def render_html(report: Report, image_cache: Path | None = None) -> str:
    """The report as one self-contained HTML page: header, one section per group (tables and bar charts), notes,
    an image grid of the first section (from `image_cache`, default the home's), provenance footer."""
    if image_cache is None:
        image_cache = default_image_cache()
    grid, caption = grid_png(report, Path(image_cache).expanduser())
    title = f"rpo-bench report: {report.store.name}"
    header = [Markup(item) for item in header_items(report, _escaped, lambda text: Markup("<code>{}</code>").format(
        text))]
    return _template().render(
        title=title, css=Markup(CSS), header=header, sections=[_section(s, report) for s in report.sections],
        styles=_style_sections(report), notes=list(report.notes), provenance=_provenance_items(report),
        grid=_png_img(grid, f"image grid: {caption}") if grid is not None else None, grid_caption=caption)


# -- image grid ----------------------------------------------------------------------------------------------------
def _grid_prompts(store, section: Section, limit: int) -> list[str]:
    """The section's first `limit` prompts, in prompt-set order."""
    g = section.group
    return store.section_prompts(g.prompt_set_id, g.protocol_fingerprint, limit)


def grid_png(report: Report, image_cache: Path, limit: int = GRID_PROMPTS) -> tuple[bytes | None, str]:
    """(PNG, caption) of the first section's images: rows = its first prompts, columns = its models, all of its
    first seed; (None, why) when there is nothing to show. Missing images are grids.py's gray cells."""
    if not report.sections:
        return None, "no scores in this store, so no images to show"
    section = report.sections[0]
    g = section.group
    if not image_cache.is_dir():
        return None, f"no images are cached: image cache {image_cache} is not a folder"
    store, cache = ResultsStore(report.store, readonly=True), ImageCache(image_cache)
    try:
        prompts = _grid_prompts(store, section, limit)
        seed = g.seeds[0]
        columns = [stored_images(store, cache, report.store_name(model), g.protocol, prompts, seed)
                   for model in g.models]
    finally:
        store.close()
        cache.close()
    if not prompts or all(image is None for column in columns for image in column):
        return None, f"no images of this section are cached in {image_cache}"
    cells = [[column[i] for column in columns] for i in range(len(prompts))]
    # the caption names prompt set and protocol: a grid of few columns has room for a short title only
    image = image_grid(cells, prompts, g.models, title=f"seed {seed}")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    caption = (f"prompt set {g.prompt_set}, protocol {g.protocol}, seed {seed}: the first {len(prompts)} prompts "
               f"(rows) x {len(g.models)} models (columns); a gray cell is an image missing from the cache")
    return buffer.getvalue(), caption
