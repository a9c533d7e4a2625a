"""`rpo-bench models`, `metrics`, `prompts` and `protocols`: each registry's list, and `show NAME`."""

from __future__ import annotations

import typer

from rpo_bench.cli.console import console, kv_table, print_records
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

    # Fine-tunes (a UNet or LoRA over a base, e.g. registered by `train --name`) get a list of their own: listed
    # among the bases, their base's weights in the weights column made them look like another copy of it.
    bases, tuned = [], []
    for entry in MODELS:
        spec = entry.resolve()
        details = fine_tune_details(spec)
        if details:
            tuned.append((entry.name, details["fine-tune of"], details["weights"], entry.source,
                          entry.summary or spec.description))
            continue
        weights = f"tiny ({spec.tiny}, seed {spec.seed})" if spec.tiny else spec.repo
        bases.append((entry.name, spec.family, weights, spec.protocol, entry.source, entry.summary))
    print_records("models", ("name", "family", "weights", "protocol", "origin", "summary"), bases)
    if tuned:
        print_records("fine-tunes", ("name", "fine-tune of", "weights", "origin", "summary"), tuned)


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

    rows = []
    for entry in METRICS:
        metric = make_metric(example_spec(entry.name))
        rows.append((entry.name, "higher is better" if metric.higher_is_better else "lower is better",
                     f"{metric.value_range[0]:g} .. {metric.value_range[1]:g}", entry.source,
                     entry.summary or metric.summary))
    print_records("metrics", ("name", "direction", "range", "origin", "summary"), rows)


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

    rows = []
    for entry in PROMPT_SETS:
        spec = entry.resolve()
        rows.append((entry.name, spec.source, str(spec.size or ""), entry.source, entry.summary))
    print_records("prompt sets", ("name", "source", "size", "origin", "summary"), rows)


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

    rows = []
    for entry in PROTOCOLS:
        p = entry.resolve()
        fmt = lambda d: " / ".join(f"{k} {v or 'native'}" for k, v in d.items())  # noqa: E731
        rows.append((entry.name, str(p.version), p.sampler, str(p.steps), fmt(p.guidance), fmt(p.resolution),
                     entry.source, entry.summary))
    print_records("protocols", ("name", "version", "sampler", "steps", "guidance", "resolution", "origin",
                                "summary"), rows)


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

    rows = []
    for entry in METHODS:
        method = get_method(entry.name)
        reads = ("single images, desirable or not" if method.unpaired
                 else "winner / loser pairs" if method.reads_losers else "the winners only")
        rows.append((entry.name, method.title, reads, "yes" if method.needs_reference else "no",
                     method.convention or "-", entry.source, method.summary))
    print_records("training methods (default set: " + ", ".join(DEFAULT_SET) + "; --methods all: every one)",
                  ("name", "title", "reads", "reference", "beta convention", "origin", "summary"), rows)


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
