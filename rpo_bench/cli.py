"""The `rpo-bench` command: parses, calls the library, renders with rich. No logic lives here."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from rpo_bench.errors import RpoBenchError

console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Diffusion-RPO, Diffusion-DPO and SFT for text-to-image diffusion, and a benchmark "
                       "that compares them reproducibly.")


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


# The embedded default: the micro world, whose judge measures what each prompt asked for.
DEFAULT_METRICS = ("micro-oracle,micro-oracle:colour,micro-oracle:shape,micro-oracle:size,micro-oracle:position,"
                   "micro-oracle:background,micro-clip")


# -- evaluate -----------------------------------------------------------------------------------------------
@app.command()
def evaluate(
    models: str = typer.Option("micro-base", help="Comma-separated model names or diffusers folders."),
    prompts: str = typer.Option("micro-test", help="Prompt set name, or a .txt / .jsonl file."),
    metrics: str = typer.Option(DEFAULT_METRICS, help="Comma-separated metrics; NAME or NAME:ARG."),
    seeds: str = typer.Option("0", help="Seeds: integers and ranges, e.g. 0,1 or 0-3."),
    protocol: str | None = typer.Option("micro,micro-fast", help="Sampling protocol(s), comma-separated; every "
                                        "model under each. Empty: each model's own."),
    store: Path | None = typer.Option(None, help="Results store (SQLite); default $RPO_BENCH_HOME/results.sqlite."),
    image_cache: Path | None = typer.Option(None, help="Image cache folder; default $RPO_BENCH_HOME/images."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N, mps."),
    dtype: str = typer.Option("auto", help="auto (fp16 on GPU, fp32 on CPU), float32, float16, bfloat16."),
    score_dtype: str = typer.Option("float32", help="Scorers' dtype: float32 (default, comparable everywhere), "
                                    "float16, bfloat16, auto."),
    batch_size: int = typer.Option(16, help="Images per generation / scoring batch."),
) -> None:
    """Generate (cached, seeded) and score images: models x protocols x prompts x seeds x metrics."""
    from rpo_bench.evaluate import EvaluateConfig, default_image_cache, default_store_path, parse_seeds
    from rpo_bench.evaluate import evaluate as run_evaluate

    config = EvaluateConfig(models=_split(models), prompts=prompts, metrics=_split(metrics), seeds=parse_seeds(seeds),
                            protocol=protocol or None, store=store or default_store_path(),
                            image_cache=image_cache or default_image_cache(), device=device, dtype=dtype,
                            score_dtype=score_dtype, batch_size=batch_size)
    if store is None:
        config.store.parent.mkdir(parents=True, exist_ok=True)
    result = run_evaluate(config)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    table = Table(title=f"run {result.run_id}  ·  {config.prompts} x seeds {seeds}  ·  store {config.store}")
    for column in ("model", "protocol", "metric", "n", "mean ± s.e."):
        table.add_column(column, justify="right" if column in ("n", "mean ± s.e.") else "left")
    for row in result.summary:
        arrow = "↑" if row.higher_is_better else "↓"
        mean = f"{row.mean:.3f} ± {row.stderr:.3f}"
        table.add_row(row.model, row.protocol, f"{row.metric} {arrow}", str(row.n), mean)
    console.print(table)
    scored = ", ".join(f"{k} {v}" for k, v in result.scored.items())
    console.print(f"generated {result.generated} images, reused {result.reused} from the image cache; scored {scored}")


# -- train, pairs, presets ----------------------------------------------------------------------------------------
def _register_training_commands() -> None:
    from rpo_bench.cli_micro import micro_app
    from rpo_bench.cli_train import register

    register(app)
    app.add_typer(micro_app, name="micro")
    from rpo_bench.cli_score import score

    app.command()(score)
    from rpo_bench.cli_download import download

    app.command()(download)


_register_training_commands()


# -- registries: list and show --------------------------------------------------------------------------------
def _kv_table(title: str, values: dict) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in values.items():
        table.add_row(str(key), str(value))
    return table


models_app = typer.Typer(help="The model registry: list, or `show NAME`.")
metrics_app = typer.Typer(help="The metric registry: list, or `show NAME`.")
prompts_app = typer.Typer(help="The prompt-set registry: list, or `show NAME`.")
protocols_app = typer.Typer(help="The sampling-protocol registry: list, or `show NAME`.")
app.add_typer(models_app, name="models")
app.add_typer(metrics_app, name="metrics")
app.add_typer(prompts_app, name="prompts")
app.add_typer(protocols_app, name="protocols")


@models_app.callback(invoke_without_command=True)
def models_list(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand:
        return
    from rpo_bench.models.catalog import MODELS

    table = Table(title="models")
    for column in ("name", "family", "weights", "protocol", "origin", "summary"):
        table.add_column(column, no_wrap=column == "name")
    for entry in MODELS:
        spec = entry.resolve()
        weights = f"tiny ({spec.tiny}, seed {spec.seed})" if spec.tiny else spec.repo
        if spec.unet_repo:
            weights += f" + UNet {spec.unet_repo}"
        table.add_row(entry.name, spec.family, weights, spec.protocol, entry.source, entry.summary)
    console.print(table)


@models_app.command("show")
def models_show(name: str) -> None:
    from rpo_bench.models.catalog import resolve_model

    spec = resolve_model(name)
    console.print(_kv_table(f"model {spec.name}", spec.to_dict()))


@metrics_app.callback(invoke_without_command=True)
def metrics_list(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand:
        return
    from rpo_bench.metrics import METRICS, example_spec, make_metric

    table = Table(title="metrics")
    for column in ("name", "direction", "range", "origin", "summary"):
        table.add_column(column, no_wrap=column == "name")
    for entry in METRICS:
        metric = make_metric(example_spec(entry.name))
        table.add_row(entry.name, "higher is better" if metric.higher_is_better else "lower is better",
                      f"{metric.value_range[0]:g} .. {metric.value_range[1]:g}", entry.source,
                      entry.summary or metric.summary)
    console.print(table)


@metrics_app.command("show")
def metrics_show(name: str) -> None:
    from rpo_bench.metrics import METRICS, example_spec, make_metric

    metric = make_metric(name if ":" in name else example_spec(name))
    entry = METRICS.entry(name.partition(":")[0])
    values = {"class": f"{type(metric).__module__}.{type(metric).__name__}", "summary": entry.summary or metric.summary,
              "higher is better": metric.higher_is_better, "range": metric.value_range, "origin": entry.source}
    for files in metric.hub_files():  # what `rpo-bench download NAME` fetches
        values[f"weights: {files.what or files.repo}"] = f"{files.repo}@{files.revision}: {', '.join(files.patterns)}"
    console.print(_kv_table(f"metric {metric.key}", values))


@prompts_app.callback(invoke_without_command=True)
def prompts_list(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand:
        return
    from rpo_bench.prompts import PROMPT_SETS

    table = Table(title="prompt sets")
    for column in ("name", "source", "size", "origin", "summary"):
        table.add_column(column, no_wrap=column == "name")
    for entry in PROMPT_SETS:
        spec = entry.resolve()
        table.add_row(entry.name, spec.source, str(spec.size or ""), entry.source, entry.summary)
    console.print(table)


@prompts_app.command("show")
def prompts_show(name: str, first: int = typer.Option(5, help="How many prompts to print.")) -> None:
    from rpo_bench.prompts import PROMPT_SETS, load_prompt_set

    values = dict(vars(PROMPT_SETS.get(name))) if name in PROMPT_SETS else {"file": name}
    prompt_set = load_prompt_set(name)
    values["prompts"] = len(prompt_set.prompts)
    values["fingerprint"] = prompt_set.fingerprint[:16]
    for prompt in prompt_set.prompts[:first]:
        values[f"#{prompt.index}"] = f"{prompt.text}" + (f"  [{prompt.category}]" if prompt.category else "")
    console.print(_kv_table(f"prompt set {prompt_set.name}", {k: v for k, v in values.items() if v not in (None, ())}))


@protocols_app.callback(invoke_without_command=True)
def protocols_list(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand:
        return
    from rpo_bench.protocols import PROTOCOLS

    table = Table(title="protocols")
    for column in ("name", "v", "sampler", "steps", "guidance", "resolution", "origin", "summary"):
        table.add_column(column, no_wrap=column == "name")
    for entry in PROTOCOLS:
        p = entry.resolve()
        fmt = lambda d: " / ".join(f"{k} {v or 'native'}" for k, v in d.items())  # noqa: E731
        table.add_row(entry.name, str(p.version), p.sampler, str(p.steps), fmt(p.guidance), fmt(p.resolution),
                      entry.source, entry.summary)
    console.print(table)


@protocols_app.command("show")
def protocols_show(name: str) -> None:
    from rpo_bench.models.spec import FAMILIES
    from rpo_bench.protocols import PROTOCOLS

    protocol = PROTOCOLS.get(name)
    for family in FAMILIES:
        values = protocol.settings(family) | {"fingerprint": protocol.fingerprint(family)}
        console.print(_kv_table(f"protocol {protocol.name} for {family}", values))


# -- entry point ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Run the CLI: user errors become one line on stderr and exit code 2 (a traceback only with --debug)."""
    try:  # typer >= 0.24 ships its own copy of click; older typer uses the click package
        from typer._click import exceptions as click_exceptions
    except ImportError:  # pragma: no cover
        from click import exceptions as click_exceptions

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("RPO_BENCH_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        for noisy in ("diffusers", "transformers"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    try:
        typer.main.get_command(app).main(args=argv, prog_name="rpo-bench", standalone_mode=False)
    except RpoBenchError as exc:
        if debug:
            raise
        err_console.print(Text.assemble(("error: ", "bold red"), str(exc)), highlight=False, soft_wrap=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except click_exceptions.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        err_console.print("interrupted: finished batches are saved; run the same command again to resume")
        return 130
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
