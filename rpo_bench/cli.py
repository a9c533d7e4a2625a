"""The `rpo-bench` command: parses, calls the library, renders with rich. No logic lives here."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import signal
import sys
import threading
import traceback
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from rpo_bench.errors import BadInputError, RpoBenchError

# C0 and C1 control characters (ESC starts terminal sequences that clear the screen or retitle the window; CR
# and BS overwrite what was printed) and the bidi overrides that reorder a line on screen.
_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """`text` with every control character shown as a visible escape (\\x1b, \\n, \\u202e), as repr() would, so
    that prompts, paths and registry entries print as what they are instead of acting on the terminal."""
    def escape(match: re.Match) -> str:
        char = match.group()
        return _SHORT_ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")

    return _CONTROL_CHARACTERS.sub(escape, text)


class UserTextConsole(Console):
    """A rich Console for text that is largely the user's (prompts, paths, names from user registry files): every
    string, in a print, a table cell or a title, shows as typed. Rich markup is off, so "[bold]" in a prompt is
    text and "[/x]" cannot fail, and control characters become visible escapes (see `printable`)."""

    def render_str(self, text: str, **kwargs) -> Text:
        kwargs["markup"] = False
        return super().render_str(printable(text), **kwargs)


console = UserTextConsole(emoji=False, markup=False)
err_console = UserTextConsole(stderr=True, emoji=False, markup=False)
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Diffusion-RPO, Diffusion-DPO and SFT for text-to-image diffusion, and a benchmark "
                       "that compares them reproducibly.")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show the full traceback instead of the one-line error "
                                     "(and where an interrupt stopped); accepted anywhere on the command line, "
                                     "or set RPO_BENCH_DEBUG=1.")) -> None:
    """`--debug` is taken out of the arguments by `main` before parsing, so that it works after any subcommand;
    this option only makes it visible in `rpo-bench --help`."""


# The embedded default: the micro world, whose judge measures what each prompt asked for.
DEFAULT_METRICS = ("micro-oracle,micro-oracle:colour,micro-oracle:shape,micro-oracle:size,micro-oracle:position,"
                   "micro-oracle:background,micro-clip")


# -- evaluate -----------------------------------------------------------------------------------------------
@app.command()
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
    batch_size: int = typer.Option(16, help="Images per generation / scoring batch."),
    baseline: str | None = typer.Option(None, help="The model every other is compared with, paired by prompt and "
                                        "seed; one of --models (default: the first)."),
    by: str | None = typer.Option(None, help="category: also summarise each prompt category (e.g. seen and "
                                  "held-out prompts) on its own (with --style: the default when the prompts have "
                                  "categories)."),
    grid: Path | None = typer.Option(None, help="Also write a PNG grid: the first 6 prompts (rows) x the models "
                                     "(columns), at the first seed and protocol."),
) -> None:
    """Generate (cached, seeded) and score images: models x protocols x prompts x seeds x metrics."""
    from rpo_bench.evaluate import EvaluateConfig, default_image_cache, default_store_path, parse_seeds
    from rpo_bench.evaluate import evaluate as run_evaluate
    from rpo_bench.metrics import comma_separated, parse_metric_list

    # None: not given (the defaults below apply); "" is given, and refused as empty by comma_separated
    model_names = comma_separated(models, "--models", "model names or diffusers folders") if models is not None else []
    options = {"seeds": parse_seeds(seeds), "store": store or default_store_path(),
               "image_cache": image_cache or default_image_cache(), "device": device, "dtype": dtype,
               "score_dtype": score_dtype, "batch_size": batch_size}
    plan = None
    if style is not None:
        from rpo_bench.style_evaluate import style_config

        extra = parse_metric_list(metrics) if metrics is not None else []
        plan = style_config(style, model_names, extra, prompts=prompts, protocol=protocol, by=by,
                            **options)
        if baseline is not None:
            plan.config.baseline = baseline
        config = plan.config
    else:
        config = EvaluateConfig(models=model_names or ["micro-base"],
                                prompts=prompts if prompts is not None else "micro-test",
                                metrics=parse_metric_list(metrics if metrics is not None else DEFAULT_METRICS),
                                protocol=(protocol if protocol is not None else "micro,micro-fast") or None,
                                baseline=baseline, by=by, **options)
    if grid is not None:  # a bad grid path fails before any image is made
        from rpo_bench.grids import check_png_path

        check_png_path(grid)
    if store is None:  # the default store's folder is ours to make; a given --store's folder must exist
        from rpo_bench.config import writable_dir

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
        from rpo_bench.grids import write_evaluate_grid

        console.print(f"grid: {write_evaluate_grid(config, grid)}", soft_wrap=True)


def _p_text(p: float | None) -> str:
    return "" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def _comparison_cells(row) -> list[str]:
    """diff [CI], win rate, Holm p for a non-baseline row; blanks on the baseline's own row."""
    if row.baseline is None:
        return ["(baseline)", "", ""]
    if row.versus is None:
        return ["no shared sample", "", ""]
    return [row.versus.difference.format(3), f"{100 * row.versus.win_rate.estimate:.0f}%", _p_text(row.versus.p_holm)]


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
            mean = "-" if row.interval is None else (f"{row.mean:.3f} [{row.interval.low:.3f}, "
                                                    f"{row.interval.high:.3f}]")
            model = row.model if group else f"{row.model} ({row.protocol})"
            cells = [metric, model, row.samples if row.n else "0", mean]
            table.add_row(*cells, *(_comparison_cells(row) if compared else []), end_section=last)
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

    from rpo_bench.style_evaluate import gain_table

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


def _register_styles() -> None:
    from rpo_bench.cli_styles import styles_app

    app.add_typer(styles_app, name="styles")


_register_styles()


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
    console.print(_kv_table(f"model {spec.name}", fine_tune_details(spec) | spec.to_dict()))


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

    if first < 0:  # a negative slice would silently print all but the last prompts
        raise BadInputError(f"--first {first}: accepted: an integer >= 0")
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
INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C

# What an interrupted command keeps, by command: each saves its work as it goes (see the commands' docs).
_RESUME_HINTS = {
    "evaluate": "images and scores finished so far are kept in the image cache and results store; run the same "
                "command again to resume",
    "pairs": "images and scores finished so far are kept in the image cache and results store; run the same "
             "command again to resume",
    "score": "scores of finished batches are kept in the --out file (none without --out); run the same command "
             "again to resume",
    "train": "saved checkpoints are kept; run the same command with --resume to continue from the last one",
    "micro": "finished stages and images are kept; run the same command again to resume",
    "download": "files downloaded so far are kept; run the same command again to continue",
}


def _interrupted_line(argv: list[str]) -> str:
    command = next((arg for arg in argv if not arg.startswith("-")), "")
    return f"interrupted: {_RESUME_HINTS.get(command, 'nothing was changed by this command')}"


def _click_exception_classes() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(ClickException, Abort) classes of typer's bundled click and of the click package, whichever exist: typer
    >= 0.24 raises its own copies, and a library may still raise the package's."""
    click_errors: list[type] = []
    aborts: list[type] = [typer.Abort]
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            exceptions = __import__(module, fromlist=["ClickException"])
        except ImportError:
            continue
        click_errors.append(exceptions.ClickException)
        if hasattr(exceptions, "Abort"):
            aborts.append(exceptions.Abort)
    return tuple(click_errors), tuple(aborts)


class _InterruptRecorder:
    """With --debug, keeps the stack where Ctrl-C arrived: typer turns KeyboardInterrupt into a bare exit code 130,
    so its traceback is otherwise gone by the time `main` sees the result."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.previous = None

    def __enter__(self) -> _InterruptRecorder:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._record)
        return self

    def _record(self, signum, frame) -> None:
        self.stack = traceback.format_stack(frame)
        raise KeyboardInterrupt

    def __exit__(self, *exc_info) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _configure_logging(debug: bool) -> None:
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        for noisy in ("diffusers", "transformers"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def _print_error(message: str) -> None:
    err_console.print(Text.assemble(("error: ", "bold red"), printable(message)), highlight=False, soft_wrap=True)


def _name_the_bad_value(exc) -> None:
    """typer >= 0.25 converts values with pydantic, whose message ("Input should be a valid integer, ...") does not
    say which value was refused; the validation error it comes from does, so the message gets it back."""
    errors = getattr(exc.__cause__, "errors", None)
    try:
        value = errors()[0]["input"] if callable(errors) else None
    except (IndexError, KeyError, TypeError):
        return
    message = getattr(exc, "message", None)
    if value is not None and isinstance(message, str) and str(value) not in message:
        exc.message = f"{message} (got {str(value)!r})"


def _show_usage_error(exc) -> None:
    """Click's usage message (usage line, hint, error), with the user's text in it made printable."""
    _name_the_bad_value(exc)
    buffer = io.StringIO()
    exc.show(file=buffer)
    sys.stderr.write("".join(printable(line) + "\n" for line in buffer.getvalue().splitlines()))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code: user errors become one line on stderr and exit code 2, Ctrl-C one line
    saying what is kept and exit code 130 (a traceback for either only with --debug)."""
    click_errors, aborts = _click_exception_classes()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("RPO_BENCH_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    _configure_logging(debug)
    recorder = _InterruptRecorder() if debug else None
    try:
        with recorder or contextlib.nullcontext():
            code = typer.main.get_command(app).main(args=argv, prog_name="rpo-bench", standalone_mode=False)
    except RpoBenchError as exc:
        if debug:
            raise
        _print_error(str(exc))
        return exc.exit_code
    except typer.Exit as exc:
        code = exc.exit_code
    except click_errors as exc:
        _show_usage_error(exc)
        return exc.exit_code
    except (KeyboardInterrupt, *aborts):
        if debug:
            raise
        code = INTERRUPTED
    # In non-standalone mode typer returns what a command returned (None) or the code of an exit; Ctrl-C inside a
    # command arrives here as 130, which typer made of the KeyboardInterrupt.
    if code == INTERRUPTED:
        if recorder is not None and recorder.stack:
            sys.stderr.write("".join(["Traceback of the interrupt (most recent call last):\n", *recorder.stack]))
        err_console.print(_interrupted_line(argv), highlight=False, soft_wrap=True)
        return INTERRUPTED
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
