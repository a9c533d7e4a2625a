"""The CLI entry point under hostile conditions: Ctrl-C, --debug, metric lists, seeds in metric arguments, and
user text that would act on the terminal or be read as rich markup."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import typer
from rich.table import Table

from rpo_bench.cli import main, printable
from rpo_bench.cli.app import _RESUME_HINTS
from rpo_bench.cli.console import console
from rpo_bench.core.errors import RpoBenchError
from rpo_bench.metrics import parse_metric_list


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_clean_line(err: str, out: str = "") -> str:
    assert "Traceback" not in err + out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- Ctrl-C ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def _stored_images(store) -> int:
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    except sqlite3.Error:  # not created yet, or its schema not yet written
        return 0


def test_ctrl_c_during_evaluate_exits_130_and_keeps_the_finished_images(tmp_path):
    cache, store = tmp_path / "images", tmp_path / "results.sqlite"
    command = [sys.executable, "-m", "rpo_bench", "evaluate", "--models", "tiny-sd15", "--prompts", "smoke",
               "--seeds", "0-999", "--metrics", "tiny-clip", "--protocol", "", "--batch-size", "2",
               "--image-cache", str(cache), "--store", str(store)]
    # A suite started in the background of a non-interactive shell inherits SIGINT ignored, and so would the
    # child: give it the disposition a terminal gives, so Python installs its Ctrl-C handler.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while _stored_images(store) < 2:  # the first batch is recorded (its PNGs reach the cache a moment before)
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "evaluate recorded no batch in 240 s"
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    line = _one_clean_line(err, out)
    assert line.startswith("interrupted:") and "run the same command again" in line
    with sqlite3.connect(store) as db:  # the finished batches are recorded: a rerun reuses them
        assert db.execute("SELECT COUNT(*) FROM images").fetchone()[0] >= 2


@pytest.mark.parametrize("raised", [KeyboardInterrupt, typer.Abort], ids=["KeyboardInterrupt", "Abort"])
def test_interrupted_command_returns_130_with_what_is_kept(capsys, monkeypatch, raised):
    def interrupted(config):
        raise raised()

    monkeypatch.setattr("rpo_bench.evaluation.evaluate.evaluate", interrupted)
    code, out, err = _run(capsys, "evaluate", "--models", "tiny-sd15", "--metrics", "tiny-clip")
    assert code == 130
    assert _one_clean_line(err, out) == f"interrupted: {_RESUME_HINTS['evaluate']}"


def test_interrupted_train_says_how_to_resume(capsys, monkeypatch, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("rpo_bench.training.trainer.train", interrupted)
    code, out, err = _run(capsys, "train", "--preset", "tiny-cpu", "--data", "micro-pickapic",
                          "--output", str(tmp_path / "run"))
    assert code == 130 and "--resume" in _one_clean_line(err, out)


def test_debug_shows_where_an_interrupt_stopped(capsys, monkeypatch):
    def interrupted(config):
        signal.raise_signal(signal.SIGINT)  # a real SIGINT, through the handler --debug installs

    monkeypatch.setattr("rpo_bench.evaluation.evaluate.evaluate", interrupted)
    previous = signal.getsignal(signal.SIGINT)
    code, _, err = _run(capsys, "evaluate", "--debug", "--models", "tiny-sd15", "--metrics", "tiny-clip")
    assert code == 130
    assert "Traceback of the interrupt" in err and "in interrupted" in err
    assert err.strip().splitlines()[-1].startswith("interrupted:")
    assert signal.getsignal(signal.SIGINT) is previous  # handler restored


def test_exit_codes_of_commands_pass_through(capsys):
    assert main(["--help"]) == 0
    assert main(["models"]) == 0
    assert main(["no-such-command"]) == 2


# -- --debug ---------------------------------------------------------------------------------------------------
def test_debug_is_listed_in_the_root_help(capsys):
    code, out, _ = _run(capsys, "--help")
    assert code == 0 and "--debug" in out and "RPO_BENCH_DEBUG" in out


DEBUG_CASES = [
    ["evaluate", "--metrics", ""],
    ["score", "{tmp}/missing.png", "--prompt", "a cat"],
    ["score", "{tmp}", "--prompt", "a cat", "--out", "{tmp}"],
    ["pairs", "--model", "no-such-model", "--prompts", "smoke", "--metric", "tiny-clip", "--output", "{tmp}/p"],
    ["train", "--preset", "no-such-preset"],
    ["micro", "preferences", "--k", "0", "--out", "{tmp}/m"],
    ["models", "show", "no-such-model"],
    ["metrics", "show", "tiny-hpsv2:x"],
    ["prompts", "show", "smoke", "--first", "-1"],
    ["protocols", "show", "no-such-protocol"],
    ["download", "--dry-run", "no-such-name"],
]


@pytest.mark.parametrize("argv", DEBUG_CASES, ids=[" ".join(a[:2]) for a in DEBUG_CASES])
def test_every_command_hides_the_traceback_unless_debug(capsys, tmp_path, argv):
    argv = [a.format(tmp=tmp_path) for a in argv]
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert _one_clean_line(err, out).startswith("error: ")
    for position in (0, len(argv)):  # before the command or after its arguments
        with pytest.raises(RpoBenchError):
            main([*argv[:position], "--debug", *argv[position:]])
    capsys.readouterr()


def test_debug_from_the_environment(capsys, monkeypatch):
    monkeypatch.setenv("RPO_BENCH_DEBUG", "1")
    with pytest.raises(RpoBenchError):
        main(["models", "show", "no-such-model"])


def test_installed_command_with_debug_prints_the_traceback():
    result = subprocess.run([sys.executable, "-m", "rpo_bench", "models", "show", "no-such-model", "--debug"],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "UnknownNameError" in result.stderr


# -- metric lists and seeds ------------------------------------------------------------------------------------
def test_metric_list_items_are_stripped():
    assert parse_metric_list(" tiny-clip , micro-oracle:colour") == ["tiny-clip", "micro-oracle:colour"]


@pytest.mark.parametrize("text, message", [
    ("", "--metrics '' is empty"),
    (" , ", "--metrics ' , ' is empty"),
    ("tiny-clip,,tiny-hpsv2", "--metrics 'tiny-clip,,tiny-hpsv2' has an empty item"),
    ("tiny-clip,", "--metrics 'tiny-clip,' has an empty item"),
    ("tiny-clip,tiny-clip", "names tiny-clip more than once"),
])
@pytest.mark.parametrize("command", ["evaluate", "score"])
def test_bad_metric_lists_are_refused(capsys, tmp_path, command, text, message):
    if command == "evaluate":
        args = ["evaluate", "--store", str(tmp_path / "r.sqlite")]
    else:
        args = ["score", str(tmp_path), "--prompt", "a cat", "--out", str(tmp_path / "r.sqlite")]
    code, out, err = _run(capsys, *args, "--metrics", text)
    assert code == 2 and message in _one_clean_line(err, out)
    assert not (tmp_path / "r.sqlite").exists()  # refused before anything was written


@pytest.mark.parametrize("spec", ["tiny-clip:²", "tiny-clip:٣", "tiny-hpsv2:²", "tiny-pickscore:-1",
                                  "tiny-aesthetic:1.5", "tiny-imagereward:99999999999999999999"])
def test_seed_arguments_are_ascii_decimal(capsys, tmp_path, spec):
    code, out, err = _run(capsys, "evaluate", "--metrics", spec, "--store", str(tmp_path / "r.sqlite"))
    line = _one_clean_line(err, out)
    assert code == 2 and spec in line and "ASCII digits" in line


# -- user text on the terminal ---------------------------------------------------------------------------------
def test_printable_escapes_every_control_character_and_nothing_else():
    assert printable("a\x1b[2Jb\x07\x00\x7f\x9b\r\n\t") == "a\\x1b[2Jb\\x07\\x00\\x7f\\x9b\\r\\n\\t"
    assert printable("abc\u202edef\u2066") == "abc\\u202edef\\u2066"
    plain = "café ✓ C:\\dir [bold] 東京 \u00a0"
    assert printable(plain) == plain


HOSTILE = "\x1b[2J\x1b]0;owned\x07[bold]red[/bold] cat [/nonsense] \u202eevil"
SHOWN = "\\x1b[2J\\x1b]0;owned\\x07[bold]red[/bold] cat [/nonsense] \\u202eevil"


def test_prompts_show_prints_control_characters_and_markup_as_text(capsys, tmp_path):
    prompts = tmp_path / "hostile.jsonl"
    prompts.write_text(json.dumps({"prompt": HOSTILE}) + "\n", encoding="utf-8")
    code, out, err = _run(capsys, "prompts", "show", str(prompts))
    assert code == 0, err
    assert "\x1b" not in out and "\u202e" not in out
    cells = "".join(out.replace("│", "").split())  # the table wraps the long prompt over several rows
    assert "".join(SHOWN.split()) in cells


def test_error_lines_escape_user_text(capsys):
    code, out, err = _run(capsys, "models", "show", HOSTILE)
    line = _one_clean_line(err, out)
    assert code == 2 and "\x1b" not in err and SHOWN in line


def test_tables_titles_and_prints_show_user_text_as_typed(capsys):
    table = Table(title=f"run  ·  {HOSTILE}")  # as evaluate titles its table with the prompt set and store
    table.add_column("model")
    table.add_row(HOSTILE)
    console.print(table)
    console.print(HOSTILE)
    out = capsys.readouterr().out
    assert "\x1b" not in out and out.count("[bold]red[/bold]") >= 3


def test_usage_errors_escape_user_text(capsys):
    code, out, err = _run(capsys, "evaluate", "--\x1b[2J")
    assert code == 2 and "\x1b" not in err + out and "No such option: --\\x1b[2J" in err


def test_evaluate_with_an_unusable_home_is_one_line(capsys, monkeypatch, tmp_path):
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv("RPO_BENCH_HOME", str(tmp_path / "a-file" / "home"))
    code, out, err = _run(capsys, "evaluate", "--models", "tiny-sd15", "--metrics", "tiny-clip")
    line = _one_clean_line(err, out)
    assert code == 2 and f"cannot write the folder {tmp_path / 'a-file' / 'home'}" in line


@pytest.mark.parametrize("argv, value", [(["evaluate", "--batch-size", "two"], "'two'"),
                                         (["train", "--steps", "1.5"], "'1.5'"),
                                         (["micro", "build", "--seed", "x"], "'x'")])
def test_usage_errors_name_the_refused_value(capsys, argv, value):
    code, _, err = _run(capsys, *argv)
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert code == 2 and len(errors) == 1 and value in errors[0]
