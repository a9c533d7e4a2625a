"""`rpo-bench demo`: the micro world end to end (see rpo_bench.workflows.demo)."""

from __future__ import annotations

from pathlib import Path

import typer

from rpo_bench.cli.console import console
from rpo_bench.training.methods import DEFAULT_SET


def demo(
    style: str | None = typer.Option(None, help="A micro style (rpo-bench styles): style pairs from its references "
                                     "instead of micro-pickapic, judged by micro-style:S beside content kept."),
    quick: bool = typer.Option(False, "--quick", help="A few minutes: a strided quarter of the prompts, "
                               "4 images per training prompt, 60 steps, 2 evaluation seeds. A smoke run of every "
                               "stage, not evidence."),
    out: Path | None = typer.Option(None, help="Folder for the runs, the results store and the reports (default "
                                    "$RPO_BENCH_HOME/demo/<micro|style>[-quick]); a rerun reuses what is there."),
    methods: str = typer.Option(",".join(DEFAULT_SET), help="Methods to train, comma-separated, or all "
                                "(rpo-bench methods lists them)."),
    train_seeds: str = typer.Option("0", help="Training seeds: integers and ranges, e.g. 0-2."),
    eval_seeds: str | None = typer.Option(None, help="Evaluation seeds (default 0-3; --quick 0-1)."),
    set_: list[str] = typer.Option([], "--set", help="KEY=VALUE training setting over the preset (repeatable)."),
    jobs: int = typer.Option(1, help="Runs trained at once, each in its own process on one torch thread."),
) -> None:
    """The micro world end to end: train SFT, DPO and RPO, evaluate, report.

    Trains SFT, DPO and RPO (or --methods) from micro-base on equal budgets,
    evaluates them on held-out prompts against the ground-truth judge, and
    reports which wins (markdown here; HTML, JSON and CSV written beside the
    runs). --quick is a smoke run of every stage, not evidence."""
    from rpo_bench.core.config import home_dir
    from rpo_bench.evaluation.seeds import parse_seeds
    from rpo_bench.training.config import parse_setting
    from rpo_bench.training.methods import resolve_methods
    from rpo_bench.workflows.demo import DemoConfig, run_demo, smoke_run_note

    name = (f"style-{style}" if style else "micro") + ("-quick" if quick else "")
    folder = (out or home_dir() / "demo" / name).expanduser()
    config = DemoConfig(out=folder, style=style, quick=quick,
                        methods=resolve_methods(methods),
                        train_seeds=parse_seeds(train_seeds),
                        eval_seeds=parse_seeds(eval_seeds) if eval_seeds is not None else None,
                        overrides=dict(parse_setting(item) for item in set_), jobs=jobs)
    smoke = smoke_run_note(config)
    if smoke:
        console.print(smoke, style="bold", soft_wrap=True)
    result = run_demo(config)
    for line in result.comparison_markdown.splitlines():  # the console escapes control characters, newlines too
        console.print(line, soft_wrap=True)
    console.print("")
    for kind in ("report.html", "report.md", "results.json", "results.csv", "grid.png"):
        if kind in result.files:
            console.print(f"{kind}: {result.files[kind]}", soft_wrap=True)
    if smoke:  # again under the results, which are what a reader looks at
        console.print("")
        console.print(smoke, style="bold", soft_wrap=True)
