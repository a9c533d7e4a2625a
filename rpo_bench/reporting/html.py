"""`rpo-bench report --html`: the report of reporting.report as ONE self-contained HTML file, from the Jinja2
template templates/report.html.j2 (autoescape on).

The page leads with what was asked last: the comparison sections of the lead run (reporting.report orders them
first), then an image grid of the compared models, then the other evaluations; sections that compare nothing are
folded into a closed <details> appendix, so a store full of earlier single-model runs does not bury the comparison.

Self-contained means the file alone shows everything, offline and forever: inline CSS, no script, no external URL,
every picture (charts, the grid's images) embedded as a data: PNG. The grid is an HTML table (an <img> per cell,
the prompts and model names as text), so the page can be searched, copied from and read when zoomed. The numbers
are the markdown report's cells (the same helpers format them), so the two formats never disagree. Every text
that comes from the store (model names, prompts, settings, versions, notes...) is HTML-escaped: a model may be
named by anyone.
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
from rpo_bench.reporting.grids import stored_images
from rpo_bench.reporting.plots import differences_png, interval_bars_png
from rpo_bench.reporting.report import Report, Section, header_items
from rpo_bench.reporting.style_section import style_comparisons, style_plot_png

GRID_PROMPTS = 6  # rows of the image grid: enough to see a difference, small enough to keep the file light
GRID_CELL = 96  # CSS pixels an image is shown at in the grid
GRID_MAX_PIXELS = 256  # larger images (SD's 512 px) are embedded at this size: the page stays light

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
p.lead { background: #eef2f7; padding: .4em .6em; border-left: 4px solid #4c78a8; }
table.grid td, table.grid th { vertical-align: middle; }
table.grid th.model { text-align: center; white-space: nowrap; }
table.grid td.prompt { max-width: 16em; }
table.grid td.image { padding: 2px; }
table.grid img { width: 96px; height: 96px; object-fit: contain; margin: 0; }
table.grid img.pixels { image-rendering: pixelated; }
table.grid td.missing { width: 96px; height: 96px; background: #dedede; color: #6e6e6e; text-align: center; }
details.appendix > summary { font-size: 1.25em; font-weight: bold; margin-top: 2em; cursor: pointer; }
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
    """The markdown report's table (same cells, same helpers), with its chart: each model's difference from the
    baseline with its interval when the table compares models, the means with their intervals when it holds
    several models without a comparison, none for one model alone (its table says all a single bar would)."""
    compared = baseline is not None
    header = ["model", "n", "mean [95% CI]", "rank"]
    if compared:
        header += [f"diff vs {baseline} [95% CI]", "win rate", "Holm p"]
    row_ranks = ranks(rows)
    body = [{"model": row.model, "baseline": row.model == baseline,
             "cells": [row.samples if row.n else "0", mean_text(row), str(row_ranks.get(row.model, "-")),
                       *(comparison_cells(row) if compared else [])]} for row in rows]
    # the section heading names the version and protocol; the chart keeps to what tells its tables apart
    if compared and len(rows) > 1:
        chart = _png_img(differences_png(rows, baseline, f"{metric} · {label}: difference from {baseline}"),
                         f"differences chart: each model's {metric} minus {baseline}'s with its 95% interval "
                         f"({label})")
    elif len(rows) > 1:
        chart = _png_img(interval_bars_png(rows, None, f"{metric} · {label}"),
                         f"bar chart: each model's mean {metric} with its 95% interval ({label})")
    else:
        chart = None
    return {"label": label, "header": header, "rows": body, "chart": chart}


def _section(section: Section, report: Report) -> dict:
    g = section.group
    baseline = section.baseline if section.compared else None  # the markdown's columns: none for a model alone
    tables = [_table("all prompts" if category is None else f"category {category}", rows, baseline, g.metric)
              for category, rows in section.tables()]
    reported = [{"model": r.model, "value": f"{r.value:g}", "source": r.source} for r in section.reported]
    no_baseline = report.baseline if report.baseline is not None and section.baseline is None else None
    return {"title": section.title, "settings": settings_text(g.protocol_settings),
            "seeds": ", ".join(str(s) for s in g.seeds), "no_baseline": no_baseline, "tables": tables,
            "reported": reported, "lead": section.lead}


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
    items += [Markup("model <b>{}</b> is <code>{}</code> in the store").format(shown, name)
              for name, shown in report.labels.items()]
    items.append(Markup("reproduce: <code>{}</code>").format(report.command))
    return items


def _escaped(text: object) -> Markup:
    return Markup.escape(str(text))


def render_html(report: Report, image_cache: Path | None = None) -> str:
    """The report as one self-contained HTML page: header, the comparison sections (the lead run's first, with
    their differences charts), an image grid of every compared model, style sections, notes, the sections that
    compare nothing in a closed appendix, provenance footer."""
    if image_cache is None:
        image_cache = default_image_cache()
    grids, grid_note = grid_tables(report, Path(image_cache).expanduser())
    title = f"rpo-bench report: {report.store.name}"
    header = [Markup(item) for item in header_items(report, _escaped, lambda text: Markup("<code>{}</code>").format(
        text))]
    main = [_section(s, report) for s in report.main_sections]
    return _template().render(
        title=title, css=Markup(CSS), header=header, lead=report.lead_text(),
        lead_sections=[s for s in main if s["lead"]], other_sections=[s for s in main if not s["lead"]],
        appendix=[_section(s, report) for s in report.appendix], styles=_style_sections(report),
        notes=list(report.notes), provenance=_provenance_items(report), grids=grids, grid_note=grid_note)


# -- image grid ----------------------------------------------------------------------------------------------------
def _cell_image(image, alt: str) -> Markup | None:
    """One generated image as an embedded PNG, at most GRID_MAX_PIXELS on a side; small ones (the micro world's
    32 px) are drawn as crisp pixel blocks at the cell's size instead of a blur."""
    if image is None:
        return None
    image = image.convert("RGB")
    if max(image.size) > GRID_MAX_PIXELS:
        image.thumbnail((GRID_MAX_PIXELS, GRID_MAX_PIXELS))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    css = ' class="pixels"' if max(image.size) < GRID_CELL else ""
    return Markup('<img src="data:image/png;base64,{}"{} alt="{}">').format(encoded, Markup(css), alt)


def _grid_sections(report: Report) -> list[Section]:
    """One section per grid: the first compared section, then the first of each later (prompt set, protocol) that
    has a compared model no earlier grid shows, so that every compared model is in a grid once."""
    shown: set[str] = set()
    chosen = []
    for section in report.main_sections:
        if set(section.group.models) - shown:
            chosen.append(section)
            shown |= set(section.group.models)
    return chosen


def grid_tables(report: Report, image_cache: Path, limit: int = GRID_PROMPTS) -> tuple[list[dict], str]:
    """The image grids of the page, each {caption, models, rows: [{prompt, cells}]} with a cell an <img> (None: an
    image missing from the cache): rows = the section's first prompts, columns = its models, at its first seed.
    With nothing to show: ([], why)."""
    sections = _grid_sections(report)
    if not sections:
        if not report.sections:
            return [], "no scores in this store, so no images to show"
        return [], "no section compares models, so no grid (the appendix lists each model's scores)"
    if not image_cache.is_dir():
        return [], f"no images are cached: image cache {image_cache} is not a folder"
    grids = []
    store, cache = ResultsStore(report.store, readonly=True), ImageCache(image_cache)
    try:
        for section in sections:
            g = section.group
            prompts = store.section_prompts(g.prompt_set_id, g.protocol_fingerprint, limit)
            seed = g.seeds[0]
            columns = [[_cell_image(image, f"{model}: {prompt}") for image, prompt in zip(
                stored_images(store, cache, report.store_name(model), g.protocol, prompts, seed), prompts, strict=True)]
                for model in g.models]
            if not prompts or all(cell is None for column in columns for cell in column):
                continue
            caption = (f"prompt set {g.prompt_set}, protocol {g.protocol}, seed {seed}: the first {len(prompts)} "
                       f"prompts (rows) x {len(g.models)} models (columns); a gray cell is an image missing from the "
                       "cache")
            grids.append({"caption": caption, "models": list(g.models),
                          "rows": [{"prompt": prompt, "cells": [column[i] for column in columns]}
                                   for i, prompt in enumerate(prompts)]})
    finally:
        store.close()
        cache.close()
    if not grids:
        return [], f"no images of the compared sections are cached in {image_cache}"
    return grids, ""
