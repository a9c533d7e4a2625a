"""What a new user reads: every command's --help (flags shown as flags, one-line summaries), the lists the CLI
prints at 80 columns, and `demo --quick` saying that it is a smoke run."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from rich.cells import cell_len

from rpo_bench.cli import main
from rpo_bench.cli.app import app

WIDTH = 80


@pytest.fixture
def narrow(monkeypatch):
    """An 80-column terminal: rich reads COLUMNS for a console whose width was not fixed (the help's and ours)."""
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    monkeypatch.delenv("TERMINAL_WIDTH", raising=False)


def _run(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def _too_wide(text: str, width: int = WIDTH) -> list[str]:
    return [line for line in text.splitlines() if cell_len(line) > width]


def _flat(text: str) -> str:
    """The text without spaces, line breaks and table rules: what a folded cell still holds, whole."""
    return "".join(ch for ch in text if not ch.isspace() and ch not in "│┃")


def _commands() -> list[tuple[list[str], object]]:
    """Every command and subcommand of the app, found by walking the click tree (a new one is covered too)."""
    found = []

    def walk(command, path: list[str]) -> None:
        found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def test_every_help_shows_flags_as_flags_and_fits_80_columns(narrow, capsys):
    commands = _commands()
    names = {" ".join(path) for path, _ in commands}
    assert {"", "evaluate", "train", "demo", "micro check", "styles fetch", "store migrate"} <= names
    for path, _ in commands:
        code, out = _run(capsys, *path, "--help")
        shown = " ".join(["rpo-bench", *path])
        assert code == 0 and f"Usage: {shown} " in out, shown
        assert "<bool>" not in out, f"{shown} --help shows a flag as taking a value"
        assert "--help " in out and not _too_wide(out), (shown, _too_wide(out))


def test_root_help_lists_every_command_with_debug_as_a_flag(narrow, capsys):
    code, out = _run(capsys, "--help")
    assert code == 0
    debug = next(line for line in out.splitlines() if "--debug" in line)
    assert debug.split("--debug")[1].split()[0] == "Show"  # the help text follows the flag, no type between
    for path, _ in _commands():
        if len(path) == 1:
            assert f" {path[0]} " in out


def test_every_command_summary_is_one_line_of_text():
    """The root and group help list each command by its docstring's first paragraph, keeping its line breaks
    (typer's rich mode): a paragraph over several source lines prints as ragged fragments."""
    broken = [" ".join(path) for path, command in _commands()
              if "\n" in inspect.cleandoc(command.help or "").split("\n\n")[0]]
    assert broken == []


@pytest.mark.parametrize("args, whole", [
    (["models"], "tiny-sdxl"), (["metrics"], "higher is better"), (["prompts"], "pickapic-val"),
    (["protocols"], "spo-ddim20"), (["methods"], "winner / loser pairs"), (["styles"], "hf:huggan/wikiart"),
    (["models", "show", "sd15-dpo"], "mhdang/dpo-sd1.5-text2image-v1"), (["metrics", "show", "clip"], "clip"),
    (["prompts", "show", "smoke"], "red apple"), (["protocols", "show", "dpo-default"], "fingerprint"),
    (["methods", "show", "rpo"], "Diffusion-RPO"), (["styles", "show", "vangogh"], "sd15-base")])
def test_lists_and_cards_fit_80_columns_and_cut_nothing(narrow, capsys, args, whole):
    code, out = _run(capsys, *args)
    assert code == 0 and whole in out
    assert not _too_wide(out), _too_wide(out)
    assert "…" not in out  # nothing cut short with an ellipsis


def test_a_wide_terminal_still_gets_the_table(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "250")
    code, out = _run(capsys, "protocols")
    assert code == 0 and "┃ name" in out and "spo-ddim20" in out
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    code, out = _run(capsys, "protocols")
    assert code == 0 and "┃ name" not in out and "  sampler     ddim" in out  # one block per protocol


def test_score_tables_fit_80_columns(narrow, capsys):
    from rpo_bench.cli.score import print_score_tables

    images = [Path(f"folder/a-rather-long-image-file-name-{i:02d}.png") for i in range(3)]
    summaries = [SimpleNamespace(metric=name, higher_is_better=True, values=[0.1234, 0.5, 0.75], mean=0.4578,
                                 stderr=0.0123, version=f"{name}@0123456789abcdef0123456789abcdef01234567")
                 for name in ("hpsv2", "pickscore", "imagereward", "aesthetic", "clip")]
    print_score_tables(images, summaries)
    out = capsys.readouterr().out
    assert not _too_wide(out), _too_wide(out)
    assert "a-rather-long-image-file-name-02.png" in _flat(out) and "…" not in out
    assert "imagereward@0123456789abcdef0123456789abcdef01234567" in _flat(out)


def test_download_listings_fit_80_columns(narrow, capsys):
    from rpo_bench.cli.download import _print_repo_files, _show_results

    remote = SimpleNamespace(filename="text_encoder/model.fp16.safetensors", size=246_144_152, cached=False,
                             source="LFS sha256", expected="ab" * 32)
    repo = SimpleNamespace(commit="0123456789abcdef", remote=[remote] * 3, files=SimpleNamespace(
        repo="stable-diffusion-v1-5/stable-diffusion-v1-5", patterns=["*.json"]),
        outcomes=[SimpleNamespace(fetched=True, remote=remote)] * 3)
    _print_repo_files(repo)
    _show_results([SimpleNamespace(entry=SimpleNamespace(name="sd15-base", note=""), repos=[repo], prompts=None,
                                   references=None, record=None)])
    out = capsys.readouterr().out
    assert not _too_wide(out), _too_wide(out)
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in out and "246.1 MB" in out


def test_smoke_run_note_names_the_full_demo(tmp_path):
    from rpo_bench.workflows.demo import DemoConfig, smoke_run_note

    assert smoke_run_note(DemoConfig(out=tmp_path)) is None
    note = smoke_run_note(DemoConfig(out=tmp_path, quick=True, style="micro-sketch", train_seeds=(0, 1)))
    assert "smoke run" in note and "not evidence" in note
    assert note.endswith("The full demo: rpo-bench demo --style micro-sketch --train-seeds 0,1")
