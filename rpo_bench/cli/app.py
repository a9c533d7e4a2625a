"""The `rpo-bench` command: parses, calls the library, renders with rich. No logic lives here.

This module makes the typer app, registers every command module's commands on it, and holds the entry point
(`main`, `run`) with its error and Ctrl-C handling. No other module of the CLI imports it."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import threading
import traceback

import typer
from rich.text import Text

from rpo_bench.cli.console import err_console, printable
from rpo_bench.cli.demo import demo
from rpo_bench.cli.download import download
from rpo_bench.cli.evaluate import register as register_evaluate
from rpo_bench.cli.leaderboard import leaderboard_app
from rpo_bench.cli.micro import micro_app
from rpo_bench.cli.registries import methods_app, metrics_app, models_app, prompts_app, protocols_app
from rpo_bench.cli.report import report
from rpo_bench.cli.score import score
from rpo_bench.cli.store import store_app
from rpo_bench.cli.styles import styles_app
from rpo_bench.cli.train import register as register_train
from rpo_bench.core.errors import RpoBenchError


def _flags_show_no_value_type() -> None:
    """A flag takes no value, yet typer's rich help (0.29) prints a value type beside every option: `--help <bool>`,
    `--debug <bool>`, as if each wanted a true or false after it. Click's plain help and older typer print none for
    a flag; the type column comes from `TyperOption.display_type_rich`, so for a flag (not a counter) that gives
    none. A typer without that method renders flags its own way and is left as it is."""
    option_class = getattr(typer.core, "TyperOption", None)
    display_type_rich = getattr(option_class, "display_type_rich", None)
    if display_type_rich is None or getattr(display_type_rich, "flags_show_no_type", False):
        return

    def flag_aware(self, ctx):
        if getattr(self, "is_flag", False) and not getattr(self, "count", False):
            return None
        return display_type_rich(self, ctx)

    flag_aware.flags_show_no_type = True
    option_class.display_type_rich = flag_aware


_flags_show_no_value_type()

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Diffusion-RPO, Diffusion-DPO and SFT for text-to-image diffusion, and a benchmark "
                       "that compares them reproducibly.")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show the full traceback instead of the one-line error "
                                     "(and where an interrupt stopped); accepted anywhere on the command line, "
                                     "or set RPO_BENCH_DEBUG=1.")) -> None:
    """`--debug` is taken out of the arguments by `main` before parsing, so that it works after any subcommand;
    this option only makes it visible in `rpo-bench --help`."""


# -- the commands, in the order `rpo-bench --help` lists them -------------------------------------------------
register_evaluate(app)
register_train(app)
app.add_typer(micro_app, name="micro")
app.command()(score)
app.command()(report)
app.command()(demo)
app.add_typer(leaderboard_app, name="leaderboard")
app.command()(download)
app.add_typer(models_app, name="models")
app.add_typer(metrics_app, name="metrics")
app.add_typer(prompts_app, name="prompts")
app.add_typer(protocols_app, name="protocols")
app.add_typer(methods_app, name="methods")
app.add_typer(styles_app, name="styles")
app.add_typer(store_app, name="store")


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
    "demo": "finished training runs, images and scores are kept in the demo's folder; run the same command again "
            "to resume",
    "leaderboard": "finished training runs, images and scores are kept in its work folder; run the same command "
                   "again to resume",
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
    for library in ("huggingface_hub", "datasets"):  # each has its own stderr handler: via root, a second copy
        logging.getLogger(library).propagate = False
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
