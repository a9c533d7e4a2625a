"""`rpo-bench models`, `metrics`, `prompts` and `protocols`: each registry's list, and `show NAME`."""

from __future__ import annotations

import typer
from rich.table import Table

from rpo_bench.cli.console import console, kv_table
from rpo_bench.core.errors import BadInputError

models_app = typer.Typer(help="The model registry: list, or `show NAME`.")
metrics_app = typer.Typer(help="The metric registry: list, or `show NAME`.")
prompts_app = typer.Typer(help="The prompt-set registry: list, or `show NAME`.")
protocols_app = typer.Typer(help="The sampling-protocol registry: list, or `show NAME`.")


@models_app.callback(invoke_without_command=True)
def models_list(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand:
        return
    from rpo_bench.models.catalog import MODELS, fine_tune_details

    table = Table(title="models")
    for column in ("name", "family", "weights", "protocol", "origin", "summary"):
        table.add_column(column, no_wrap=column == "name")
    # Fine-tunes (a UNet or LoRA over a base, e.g. registered by `train --name`) get a table of their own: listed
    # among the bases, their base's weights in the weights column made them look like another copy of it.
    tuned = Table(title="fine-tunes")
    for column in ("name", "fine-tune of", "weights", "origin", "summary"):
        tuned.add_column(column, no_wrap=column == "name")
    for entry in MODELS:
        spec = entry.resolve()
        details = fine_tune_details(spec)
        if details:
            tuned.add_row(entry.name, details["fine-tune of"], details["weights"], entry.source,
                          entry.summary or spec.description)
            continue
        weights = f"tiny ({spec.tiny}, seed {spec.seed})" if spec.tiny else spec.repo
        table.add_row(entry.name, spec.family, weights, spec.protocol, entry.source, entry.summary)
    console.print(table)
    if tuned.row_count:
        console.print(tuned)


@models_app.command("show")
def models_show(name: str) -> None:
    from rpo_bench.models.catalog import fine_tune_details, resolve_model

    spec = resolve_model(name)
    console.print(kv_table(f"model {spec.name}", fine_tune_details(spec) | spec.to_dict()))


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
    console.print(kv_table(f"metric {metric.key}", values))


@prompts_app.callback(invoke_without_command=True)
def prompts_list(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand:
        return
    from rpo_bench.evaluation.prompts import PROMPT_SETS

    table = Table(title="prompt sets")
    for column in ("name", "source", "size", "origin", "summary"):
        table.add_column(column, no_wrap=column == "name")
    for entry in PROMPT_SETS:
        spec = entry.resolve()
        table.add_row(entry.name, spec.source, str(spec.size or ""), entry.source, entry.summary)
    console.print(table)


@prompts_app.command("show")
def prompts_show(name: str, first: int = typer.Option(5, help="How many prompts to print.")) -> None:
    from rpo_bench.evaluation.prompts import PROMPT_SETS, load_prompt_set

    if first < 0:  # a negative slice would silently print all but the last prompts
        raise BadInputError(f"--first {first}: accepted: an integer >= 0")
    values = dict(vars(PROMPT_SETS.get(name))) if name in PROMPT_SETS else {"file": name}
    prompt_set = load_prompt_set(name)
    values["prompts"] = len(prompt_set.prompts)
    values["fingerprint"] = prompt_set.fingerprint[:16]
    for prompt in prompt_set.prompts[:first]:
        values[f"#{prompt.index}"] = f"{prompt.text}" + (f"  [{prompt.category}]" if prompt.category else "")
    console.print(kv_table(f"prompt set {prompt_set.name}", {k: v for k, v in values.items() if v not in (None, ())}))


@protocols_app.callback(invoke_without_command=True)
def protocols_list(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand:
        return
    from rpo_bench.evaluation.protocols import PROTOCOLS

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
    from rpo_bench.evaluation.protocols import PROTOCOLS
    from rpo_bench.models.spec import FAMILIES

    protocol = PROTOCOLS.get(name)
    for family in FAMILIES:
        values = protocol.settings(family) | {"fingerprint": protocol.fingerprint(family)}
        console.print(kv_table(f"protocol {protocol.name} for {family}", values))


methods_app = typer.Typer(help="The training-method registry: list, or `show NAME` (its settings and sources).")


@methods_app.callback(invoke_without_command=True)
def methods_list(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand:
        return
    from rpo_bench.training.methods import DEFAULT_SET, METHODS, get_method

    table = Table(title="training methods (default set: " + ", ".join(DEFAULT_SET) + "; --methods all: every one)")
    for column in ("name", "title", "reads", "reference", "beta convention", "origin", "summary"):
        table.add_column(column, no_wrap=column == "name")
    for entry in METHODS:
        method = get_method(entry.name)
        reads = ("single images, desirable or not" if method.unpaired
                 else "winner / loser pairs" if method.reads_losers else "the winners only")
        table.add_row(entry.name, method.title, reads, "yes" if method.needs_reference else "no",
                      method.convention or "-", entry.source, method.summary)
    console.print(table)


@methods_app.command("show")
def methods_show(name: str) -> None:
    """A method's facts and the settings of its own (beyond those every method shares)."""
    from dataclasses import fields

    from rpo_bench.training.config import TrainConfig
    from rpo_bench.training.methods import get_method

    method = get_method(name)
    shared = {f.name for f in fields(TrainConfig)}
    own = {f.name: f"{f.default!r}: {f.metadata.get('help', '')}" for f in fields(method.config)
           if f.name not in shared}
    console.print(kv_table(f"method {method.name}", {"title": method.title, "summary": method.summary,
                                                     "source": method.source, "beta convention": method.convention,
                                                     "reference forward": method.needs_reference, **own}))
