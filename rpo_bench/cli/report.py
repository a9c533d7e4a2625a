"""`rpo-bench report`: a results store's scores as markdown (see rpo_bench.report)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import typer

from rpo_bench.cli.console import console


def report(
    store: Path = typer.Option(..., help="Results store (SQLite) written by rpo-bench evaluate; read only."),
    baseline: str | None = typer.Option(None, help="The model every other is compared with, paired by prompt and "
                                        "seed (default: the first model of the store's first run)."),
    by: str | None = typer.Option(None, help="category: also report each prompt category on its own."),
    metrics: str | None = typer.Option(None, help="Comma-separated metrics to report (default: every metric with "
                                       "scores)."),
    markdown: bool = typer.Option(True, "--markdown", help="Markdown output (the only format for now)."),
    out: Path | None = typer.Option(None, help="Write the report to this file (atomically) instead of stdout."),
) -> None:
    """Report every score of a results store: one markdown table per prompt set, protocol and metric version."""
    from rpo_bench.errors import BadInputError
    from rpo_bench.report import report_markdown, reproduce_command

    if out is not None:
        out = out.expanduser()
        if out.is_dir():
            raise BadInputError(f"--out {out} is a folder; accepted: a file path (e.g. {out / 'report.md'})")
        if not out.parent.is_dir():
            raise BadInputError(f"--out {out}: folder {out.parent} does not exist")
    text = report_markdown(store, baseline=baseline, by=by, metrics=metrics,
                           command=reproduce_command(store, baseline, by, metrics, out))
    if out is None:
        console.file.write(text)
        console.file.flush()
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    console.print(f"report: {out}", soft_wrap=True)
