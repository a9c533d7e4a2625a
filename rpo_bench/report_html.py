"""`rpo-bench report --html`: the report of rpo_bench.report as ONE self-contained HTML file.

Self-contained means the file alone shows everything, offline and forever: inline CSS, no script, no external URL,
every picture (bar charts, the image grid) embedded as a data: PNG. The numbers are the markdown report's cells
(the same helpers format them), so the two formats never disagree. Every text that comes from the store (model
names, prompts, settings, versions, notes...) is HTML-escaped: a model may be named by anyone.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

from rpo_bench.report import Report, Section, header_items, mean_text, ranks, settings_text, versus_cells
from rpo_bench.report_plots import interval_bars_png
from rpo_bench.store import ResultsStore
from rpo_bench.summary import SummaryRow

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


def _e(text: object) -> str:
    """HTML-escaped text (quotes too, so the result is safe inside attribute values as well)."""
    return html.escape(str(text), quote=True)


def _png_img(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{_e(alt)}">'


def _ul(items: Sequence[str]) -> str:
    """A list of already-escaped HTML items."""
    return "<ul>\n" + "\n".join(f"<li>{item}</li>" for item in items) + "\n</ul>"


# -- header --------------------------------------------------------------------------------------------------------
def _header_items(report: Report) -> list[str]:
    """What was evaluated: report.header_items, escaped for HTML instead of for markdown."""
    return header_items(report, _e, lambda text: f"<code>{_e(text)}</code>")


# -- sections ------------------------------------------------------------------------------------------------------
def _table(rows: Sequence[SummaryRow], baseline: str | None) -> str:
    """The markdown report's table (same cells, same helpers), as HTML."""
    compared = baseline is not None
    header = ["model", "n", "mean [95% CI]", "rank"]
    if compared:
        header += [f"diff vs {baseline} [95% CI]", "win rate", "Holm p"]
    lines = ["<table>", "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead>", "<tbody>"]
    row_ranks = ranks(rows)
    for row in rows:
        cells = [row.samples if row.n else "0", mean_text(row), str(row_ranks.get(row.model, "-"))]
        if compared:
            cells += versus_cells(row, baseline)
        css = ' class="baseline"' if row.model == baseline else ""
        lines.append(f"<tr{css}><td>{_e(row.model)}</td>" + "".join(f'<td class="num">{_e(c)}</td>' for c in cells)
                     + "</tr>")
    return "\n".join([*lines, "</tbody>", "</table>"])


def _section(section: Section, report: Report) -> str:
    g = section.group
    parts = [f"<h2>{_e(section.title)}</h2>",
             f"<p>protocol settings: {_e(settings_text(g.protocol_settings))}; seeds: "
             f"{_e(', '.join(str(s) for s in g.seeds))}</p>"]
    if report.baseline is not None and section.baseline is None:
        parts.append(f'<p class="muted">(the baseline {_e(report.baseline)} has no scores in this section: no '
                     "comparison)</p>")
    for category, rows in section.tables():
        label = "all prompts" if category is None else f"category {category}"
        parts += [f"<h3>{_e(label)}</h3>", _table(rows, section.baseline)]
        # the section heading names the version and protocol; the chart keeps to what tells its tables apart
        parts.append(_png_img(interval_bars_png(rows, section.baseline, f"{g.metric} · {label}"),
                              f"bar chart: each model's mean {g.metric} with its 95% interval ({label})"))
    if section.reported:
        parts += _reported(section)
    return "\n".join(parts)


def _reported(section: Section) -> list[str]:
    """Published values of the section's setting, as the markdown report shows them: a table of their own."""
    rows = "\n".join(f'<tr><td>{_e(r.model)}</td><td class="num">{r.value:g}</td><td>{_e(r.source)}</td></tr>'
                     for r in section.reported)
    return ["<h3>reported (published numbers, not measured here: other images and scorer copies, so never ranked "
            "or compared with the rows above)</h3>",
            "<table>\n<thead><tr><th>model (reported)</th><th>value</th><th>source</th></tr></thead>\n<tbody>\n"
            f"{rows}\n</tbody>\n</table>"]


# -- image grid ----------------------------------------------------------------------------------------------------
def _grid_prompts(store, section: Section, limit: int) -> list[str]:
    """The section's first `limit` prompts, in prompt-set order."""
    g = section.group
    return store.section_prompts(g.prompt_set_id, g.protocol_fingerprint, limit)


def grid_png(report: Report, image_cache: Path, limit: int = GRID_PROMPTS) -> tuple[bytes | None, str]:
    """(PNG, caption) of the first section's images: rows = its first prompts, columns = its models, all of its
    first seed; (None, why) when there is nothing to show. Missing images are grids.py's gray cells."""
    from rpo_bench.grids import image_grid, stored_images
    from rpo_bench.image_cache import ImageCache

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


def _grid_section(report: Report, image_cache: Path | None) -> str:
    if image_cache is None:
        # evaluate's default (lazy: it imports the generation code, which only the image grid needs)
        from rpo_bench.evaluate import default_image_cache

        image_cache = default_image_cache()
    data, caption = grid_png(report, Path(image_cache).expanduser())
    body = f'<p class="muted">{_e(caption)}</p>' if data is None else (
        f"<p>{_e(caption)}</p>\n" + _png_img(data, f"image grid: {caption}"))
    return "<h2>Images</h2>\n" + body


# -- notes, provenance, page ---------------------------------------------------------------------------------------
def _provenance_items(report: Report) -> list[str]:
    """The content of report.provenance_lines, escaped for HTML."""
    info = report.info
    items = [f"report made by rpo-bench {_e(report.version)}",
             "git commit(s) recorded by the runs: " + _e(", ".join(info.commits) or "none (no runs recorded)")]
    if info.versions:
        items.append("library versions recorded by the runs: " + _e(", ".join(
            f"{name} {' / '.join(v)}" for name, v in sorted(info.versions.items()))))
    items.append(f"reproduce: <code>{_e(report.command)}</code>")
    return items


def _style_sections(report: Report) -> list[str]:
    """Style gained vs content kept (rpo_bench.report_style): the table and the plot of one against the other."""
    from rpo_bench.report_style import style_comparisons, style_plot_png

    parts = []
    for c in style_comparisons(report):
        where = f"prompt set {c.prompt_set}, protocol {c.protocol}, {c.category or 'all'} prompts"
        rows = "\n".join(f'<tr><td>{_e(p.model)}</td><td class="num">{_e(p.style_gained.format(3))}</td>'
                         f'<td class="num">{_e(p.content_kept.format(3))}</td></tr>' for p in c.points)
        parts += [f"<h2>Style gained vs content kept ({_e(where)})</h2>",
                  f"<p>Paired differences with {_e(c.baseline)} [95% CI]: style by {_e(c.style_metric)}, content by "
                  f"{_e(c.content_metric)}.</p>",
                  f"<table>\n<thead><tr><th>model</th><th>style gained (Δ {_e(c.style_metric)})</th><th>content kept "
                  f"(Δ {_e(c.content_metric)})</th></tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>",
                  _png_img(style_plot_png(c), f"style gained against content kept, {where}")]
    return parts


def render_html(report: Report, image_cache: Path | None = None) -> str:
    """The report as one self-contained HTML page: header, one section per group (tables and bar charts), notes,
    an image grid of the first section (from `image_cache`, default evaluate's), provenance footer."""
    title = f"rpo-bench report: {report.store.name}"
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{_e(title)}</title>",
             f"<style>\n{CSS}\n</style>", "</head>", "<body>", f"<h1>{_e(title)}</h1>", _ul(_header_items(report))]
    parts += [_section(section, report) for section in report.sections]
    parts += _style_sections(report)
    if report.notes:
        parts += ["<h2>Notes</h2>", _ul([_e(note) for note in report.notes])]
    parts.append(_grid_section(report, image_cache))
    parts += ["<footer>", "<h2>Provenance</h2>", _ul(_provenance_items(report)), "</footer>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"
