"""`rpo-bench report`: a results store's scores as markdown, HTML, JSON or CSV (see rpo_bench.reporting.report)."""

from __future__ import annotations

from pathlib import Path

import typer

from rpo_bench.cli.console import console

FORMATS = ("markdown", "html", "json", "csv")


def report(
    store: Path | None = typer.Option(None, help="Results store (SQLite) written by rpo-bench evaluate; read only "
                                      "(default: the one evaluate writes by default, $RPO_BENCH_HOME/results.sqlite)."),
    run: str | None = typer.Option(None, help="The evaluation the report leads with: a run id as evaluate prints it, "
                                   "or its first characters (default: the store's latest run)."),
    baseline: str | None = typer.Option(None, help="The model every other is compared with, paired by prompt and "
                                        "seed (default: the first model of the --run, as evaluate compared them; "
                                        "for a run of one model, the first model of the store's first run)."),
    by: str | None = typer.Option(None, help="category: also report each prompt category on its own."),
    metrics: str | None = typer.Option(None, help="Comma-separated metrics to report (default: every metric with "
                                       "scores)."),
    markdown: bool = typer.Option(False, "--markdown", help="Markdown (the default format)."),
    html: bool = typer.Option(False, "--html", help="One self-contained HTML file: tables, bar charts with "
                              "intervals, an image grid from the image cache (needs --out)."),
    json_: bool = typer.Option(False, "--json", help="Results JSON (lm-evaluation-harness style): provenance, per "
                               "metric value, interval and n, per sample image key, prompt hash and score."),
    csv: bool = typer.Option(False, "--csv", help="CSV: one row per section, category and model."),
    label: list[str] | None = typer.Option(None, help="NAME=LABEL: show the model the store names NAME (e.g. a "
                                           "run's folder path) as LABEL; repeat for each model. Without it a folder "
                                           "is shown by its registered --name, else its folder name."),
    image_cache: Path | None = typer.Option(None, help="Image cache for the HTML grid (default: the home's)."),
    out: Path | None = typer.Option(None, help="Write the report to this file (atomically) instead of stdout."),
) -> None:
    """Report a results store's scores as markdown, HTML, JSON or CSV.

    One table per prompt set, protocol and metric version; the latest
    evaluation's comparison first, sections of one model alone in an
    appendix."""
    from rpo_bench.core.config import default_store_path
    from rpo_bench.core.errors import BadInputError
    from rpo_bench.reporting.markdown import render_markdown
    from rpo_bench.reporting.report import build_report, parse_labels, reproduce_command

    chosen = [name for name, flag in zip(FORMATS, (markdown, html, json_, csv), strict=True) if flag]
    if len(chosen) > 1:
        raise BadInputError(f"{' and '.join('--' + c for c in chosen)}: choose one format; accepted: "
                            f"{', '.join('--' + f for f in FORMATS)}")
    fmt = chosen[0] if chosen else "markdown"
    if out is not None:
        out = out.expanduser()
        if out.is_dir():
            raise BadInputError(f"--out {out} is a folder; accepted: a file path (e.g. {out / 'report.md'})")
        if not out.parent.is_dir():
            raise BadInputError(f"--out {out}: folder {out.parent} does not exist")
    elif fmt == "html":
        raise BadInputError("--html needs --out FILE.html (an HTML page with embedded images is not for a terminal)")
    store = _existing_store(store, default_store_path())
    labels = parse_labels(label)
    result = build_report(store, baseline=baseline, by=by, metrics=metrics, labels=labels, run=run,
                          command=reproduce_command(store, baseline, by, metrics, out, fmt, labels, run=run))
    if fmt == "html":
        from rpo_bench.reporting.html import render_html

        text = render_html(result, image_cache=image_cache)
    elif fmt == "json":
        from rpo_bench.reporting.json_export import export_json_text

        text = export_json_text(result)
    elif fmt == "csv":
        from rpo_bench.reporting.csv_export import export_csv

        text = export_csv(result)
    else:
        text = render_markdown(result)
    if out is None:
        console.file.write(text)
        console.file.flush()
        return
    from rpo_bench.core.atomic import atomic_write

    atomic_write(out, text, what="report")
    console.print(f"report: {out}", soft_wrap=True)


def _existing_store(given: Path | None, default: Path) -> Path:
    """--store, default evaluate's default store (core.config.default_store_path, the one definition both read).
    A missing default store is one line naming its path and what to run first; a missing --store while the default
    one exists says so (the likely mix-up). Any other missing --store gets the store's own one line when opened."""
    from rpo_bench.core.errors import BadInputError

    if given is None:
        if not default.exists():
            raise BadInputError(f"results store {default} does not exist (no --store given, so evaluate's default); "
                                "run `rpo-bench evaluate` first, or pass --store PATH of an earlier evaluate")
        return default
    store = given.expanduser()
    if not store.exists() and default.is_file():
        raise BadInputError(f"results store {store} does not exist; evaluate wrote its default store {default}: "
                            f"leave out --store to report that one, or run `rpo-bench evaluate --store {store}` first")
    return store
