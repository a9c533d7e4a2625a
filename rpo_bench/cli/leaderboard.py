"""`rpo-bench leaderboard update NAME`: regenerate a committed leaderboard (see rpo_bench.workflows.leaderboard)."""

from __future__ import annotations

from pathlib import Path

import typer

from rpo_bench.cli.console import console

leaderboard_app = typer.Typer(help="Reproducible leaderboards: one folder per leaderboard under leaderboards/.")


@leaderboard_app.command("update")
def update(
    name: str = typer.Argument(..., help="The leaderboard: a sub-folder of --root holding leaderboard.toml."),
    root: Path = typer.Option(Path("leaderboards"), help="The folder of leaderboards (the repository's)."),
    jobs: int | None = typer.Option(None, help="Runs trained at once, each in its own process on one thread "
                                    "(default: one per core, two at most); the numbers do not depend on it."),
) -> None:
    """Rerun a leaderboard's recorded demo and rewrite its folder.

    Runs the leaderboard's recorded demo (reusing finished runs in
    $RPO_BENCH_HOME/leaderboards/NAME/work) and rewrites its folder: README.md,
    results.json, results.csv, comparison.json and the pictures; then the index."""
    from rpo_bench.workflows.leaderboard import update as update_leaderboard

    folder = update_leaderboard(name, root, jobs=jobs)
    console.print(f"leaderboard {name}: {folder / 'README.md'}", soft_wrap=True)
