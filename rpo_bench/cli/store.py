"""`rpo-bench store migrate PATH`: bring a results store written by an older rpo-bench to this schema."""

from __future__ import annotations

from pathlib import Path

import typer

from rpo_bench.cli.console import console

store_app = typer.Typer(help="The results store (SQLite) that evaluate writes and report reads.")


@store_app.command("migrate")
def migrate(path: Path = typer.Argument(..., help="The store file (e.g. $RPO_BENCH_HOME/results.sqlite).")) -> None:
    """Migrate a store in place to this schema, keeping a copy of the old file.

    In one transaction, with a full copy of the old file beside it; a store of
    this schema is left as it is. (evaluate and other writers migrate a store
    they open on their own.)"""
    from rpo_bench.evaluation.store import migrate_store

    backup = migrate_store(path)
    if backup is None:
        console.print(f"results store {path}: already of this rpo-bench's schema; nothing to do", soft_wrap=True)
    else:
        console.print(f"results store {path}: migrated; the old file is kept as {backup}", soft_wrap=True)
