"""`rpo-bench evaluate`, and the summary tables it prints."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.table import Table

from rpo_bench.cli.console import UserTextConsole, console
from rpo_bench.evaluation.defaults import (
    CLI_DEFAULT_PROTOCOLS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_METRICS,
    DEFAULT_MODELS,
    DEFAULT_PROMPTS,
)


def evaluate(
    models: str | None = typer.Option(None, help="Comma-separated model names or diffusers folders (default: "
                                      "micro-base; with --style: the style's base model, then these)."),
    prompts: str | None = typer.Option(None, help="Prompt set name, or a .txt / .jsonl file (default: micro-test; "
                                       "with --style: the style's held-out prompts)."),
    metrics: str | None = typer.Option(None, help="Comma-separated metrics; NAME or NAME:ARG (default: the micro "
                                       "world's oracle and micro-clip; with --style: the style metrics, plus these)."),
    seeds: str = typer.Option("0", help="Seeds: integers and ranges, e.g. 0,1 or 0-3."),
    protocol: str | None = typer.Option(None, help="Sampling protocol(s), comma-separated; every model under each "
                                        "(default: micro,micro-fast; with --style: the style's). Empty: each "
                                        "model's own."),
    style: str | None = typer.Option(None, help="Evaluate style alignment to style S (rpo-bench styles lists them): "
                                     "its prompts, its base model as the baseline, style gained vs content kept."),
    store: Path | None = typer.Option(None, help="Results store (SQLite); default $RPO_BENCH_HOME/results.sqlite."),
    image_cache: Path | None = typer.Option(None, help="Image cache folder; default $RPO_BENCH_HOME/images."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N, mps."),
    dtype: str = typer.Option("auto", help="auto (fp16 on GPU, fp32 on CPU), float32, float16, bfloat16."),
    score_dtype: str = typer.Option("float32", help="Scorers' dtype: float32 (default, comparable everywhere), "
                                    "float16, bfloat16, auto."),
    batch_size: int = typer.Option(DEFAULT_BATCH_SIZE, help="Images per generation / scoring batch."),
    baseline: str | None = typer.Option(None, help="The model every other is compared with, paired by prompt and "
                                        "seed; one of --models (default: the first)."),
    by: str | None = typer.Option(None, help="category: also summarise each prompt category (e.g. seen and "
                                  "held-out prompts) on its own (with --style: the default when the prompts have "
                                  "categories)."),
    grid: Path | None = typer.Option(None, help="Also write a PNG grid: the first 6 prompts (rows) x the models "
                                     "(columns), at the first seed and protocol."),
) -> None:
    """Generate (cached, seeded) and score images: models x protocols x prompts x seeds x metrics."""
    from rpo_bench.core.config import default_image_cache, default_store_path
    from rpo_bench.evaluation.evaluate import EvaluateConfig
    from rpo_bench.evaluation.evaluate import evaluate as run_evaluate
    from rpo_bench.evaluation.seeds import parse_seeds
    from rpo_bench.metrics import comma_separated, parse_metric_list

    # None: not given (the defaults below apply); "" is given, and refused as empty by comma_separated
    model_names = comma_separated(models, "--models", "model names or diffusers folders") if models is not None else []
    options = {"seeds": parse_seeds(seeds), "store": store or default_store_path(),
               "image_cache": image_cache or default_image_cache(), "device": device, "dtype": dtype,
               "score_dtype": score_dtype, "batch_size": batch_size}
    plan = None
    if style is not None:
        from rpo_bench.style.evaluate import style_config

        extra = parse_metric_list(metrics) if metrics is not None else []
        plan = style_config(style, model_names, extra, prompts=prompts, protocol=protocol, by=by,
                            **options)
        if baseline is not None:
            plan.config.baseline = baseline
        config = plan.config
    else:
        config = EvaluateConfig(models=model_names or list(DEFAULT_MODELS),
                                prompts=prompts if prompts is not None else DEFAULT_PROMPTS,
                                metrics=parse_metric_list(metrics) if metrics is not None else list(DEFAULT_METRICS),
                                protocol=(protocol if protocol is not None else CLI_DEFAULT_PROTOCOLS) or None,
                                baseline=baseline, by=by, **options)
    if grid is not None:  # a bad grid path fails before any image is made
        from rpo_bench.reporting.grids import check_png_path

        check_png_path(grid)
    if store is None:  # the default store's folder is ours to make; a given --store's folder must exist
        from rpo_bench.core.config import writable_dir

        writable_dir(config.store.parent, f"the results store {config.store}")
    result = run_evaluate(config)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    console.print(f"run {result.run_id}  ·  {config.prompts} x seeds {seeds}  ·  store {config.store}", soft_wrap=True)
    print_summary(result.summary)
    if plan is not None:
        print_style_table(plan, result.summary)
    for note in [*(plan.notes if plan else []), *result.notes]:
        console.print(note, soft_wrap=True)
    scored = ", ".join(f"{k} {v}" for k, v in result.scored.items())
    console.print(f"generated {result.generated} images, reused {result.reused} from the image cache; scored {scored}")
    if grid is not None:
        from rpo_bench.reporting.grids import write_evaluate_grid

        console.print(f"grid: {write_evaluate_grid(config, grid)}", soft_wrap=True)


def _shared_note(row) -> str | None:
    """One line when a comparison could use only part of the two models' samples."""
    if row.versus is None or row.versus.difference.n_samples == row.n == row.baseline_n:
        return None
    where = row.protocol + (f", category {row.category}" if row.category is not None else "")
    return (f"note: {row.model} vs {row.baseline} ({where}) compared on the {row.versus.difference.n_samples} "
            f"(prompt, seed) samples both have, of {row.n} and {row.baseline_n}")


def print_summary(rows: list) -> None:
    """One table per protocol (and per category with --by category), a metric's models side by side: mean with
    its 95% interval over prompts, and every other model minus the baseline on shared (prompt, seed) samples."""
    from rich import box

    from rpo_bench.reporting.cells import comparison_cells, mean_text

    tables: dict[tuple[str, str | None], list] = {}
    for row in rows:
        tables.setdefault((row.group, row.category), []).append(row)
    compared = any(row.baseline is not None for row in rows)
    notes: dict[str, None] = {}
    for (group, category), members in tables.items():
        where = "all prompts" if category is None else f"category {category}"
        title = f"protocol {group}" if group else "each model under its own protocol"
        table = Table(title=f"{title}  ·  {where}", box=box.SIMPLE_HEAD, show_edge=False,
                      title_justify="left")
        columns = ["metric", "model", "n", "mean [95% CI]"]
        if compared:
            columns += [f"diff vs {next(r.baseline for r in rows if r.baseline)} [95% CI]", "win", "p (Holm)"]
        for column in columns:
            table.add_column(column, justify="left" if column in ("metric", "model") else "right")
        for i, row in enumerate(members):
            first = i == 0 or members[i - 1].metric != row.metric
            last = i == len(members) - 1 or members[i + 1].metric != row.metric
            metric = f"{row.metric} {'↑' if row.higher_is_better else '↓'}" if first else ""
            mean = mean_text(row)
            model = row.model if group else f"{row.model} ({row.protocol})"
            cells = [metric, model, row.samples if row.n else "0", mean]
            table.add_row(*cells, *(comparison_cells(row) if compared else []), end_section=last)
            if (note := _shared_note(row)) is not None:
                notes[note] = None
        # A terminal gets the table fitted to its width; a pipe or log file gets it at its natural width, since
        # rich's 80-column default there would break every interval over two lines.
        if console.is_terminal:
            console.print(table)
        else:
            natural = console.measure(table, options=console.options.update_width(1_000)).maximum
            UserTextConsole(file=console.file, width=max(natural, console.width), emoji=False).print(table)
    for note in notes:
        console.print(note)


def print_style_table(plan, summary: list) -> None:
    """`evaluate --style`: style gained vs content kept, every model against the style's base model."""
    from rich import box

    from rpo_bench.style.evaluate import gain_table

    columns, rows = gain_table(plan, summary)
    table = Table(title=f"style gained vs content kept  ·  {plan.style.name}, each model minus "
                        f"{plan.config.baseline} on the same prompts and seeds", box=box.SIMPLE_HEAD,
                  show_edge=False, title_justify="left")
    for column in columns:
        table.add_column(column, justify="left" if column in ("protocol", "model", "prompts") else "right")
    for row in rows:
        table.add_row(*row)
    if console.is_terminal:
        console.print(table)
    else:  # a pipe or log gets the table at its natural width, as print_summary does
        natural = console.measure(table, options=console.options.update_width(1_000)).maximum
        UserTextConsole(file=console.file, width=max(natural, console.width), emoji=False).print(table)


def register(app: typer.Typer) -> None:
    app.command()(evaluate)
