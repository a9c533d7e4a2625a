"""What `rpo-bench train` prints and leaves behind (E14): the default output folder under the home and the line
saying where it is, one header per phase that runs, absolute step numbers after --resume, every line once, a
closing hint that evaluates the run as trained, files readable under the umask, and `train --help` in panels.

Real CLI runs on tiny-sd15, shared by the tests that read them: a style run without --output and the very same
command again (umask 022), and a plain run of two steps resumed to four (umask 077)."""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from rpo_bench.cli import main
from rpo_bench.style.registry import STYLES
from tests.conftest import private_home, striped_references
from tests.test_training import preference_folder  # noqa: F401 - the shared session fixture

STYLE = "tiny-painted"
N_REFERENCES = 20
HEADERS = ("building pairs", "generating losers", "reading pairs", "embeddings", "training", "saving")


@contextlib.contextmanager
def _home(home: Path):
    """RPO_BENCH_HOME pointed at `home` for a module-scoped fixture (monkeypatch is per test), styles re-read."""
    before = os.environ.get("RPO_BENCH_HOME")
    os.environ["RPO_BENCH_HOME"] = str(home)
    STYLES.reset_plugins()
    try:
        yield
    finally:
        os.environ["RPO_BENCH_HOME"] = before if before is not None else ""
        if before is None:
            del os.environ["RPO_BENCH_HOME"]
        STYLES.reset_plugins()


def _run(argv: list[str], umask: int) -> SimpleNamespace:
    """The CLI in this process under `umask`, its stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    previous = os.umask(umask)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        os.umask(previous)
    return SimpleNamespace(code=code, out=out.getvalue(), err=err.getvalue())


def _headers(text: str) -> list[str]:
    return [line[3:].split(":", 1)[0] for line in text.splitlines() if line.startswith("== ")]


def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mode & 0o777 for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def style_home(tmp_path_factory, session_home):
    """A home with the session's built tiny models and one user style: twenty captioned striped references,
    tiny-sd15 losers."""
    root = tmp_path_factory.mktemp("train-output")
    home = private_home(root, session_home)
    references = root / "refs"
    names = striped_references(references, N_REFERENCES, seed=2, axis=0)
    # a caption each: the losers come from one generation call (one caption for all would make one per image)
    (references / "captions.jsonl").write_text("".join(f'{{"file": "{name}", "caption": "painting number {i}"}}\n'
                                                       for i, name in enumerate(names)), encoding="utf-8")
    (home / "registry.toml").write_text(
        f'[styles.{STYLE}]\nfolder = "{references}"\nprompts = "smoke"\n'
        f'base_model = "tiny-sd15"\nembedding = "tiny-clip:0"\nreferences = {N_REFERENCES}\ncsd = false\n',
        encoding="utf-8")
    return home


STYLE_ARGV = ["train", "--style", STYLE, "--steps", "2", "--pairs-per-device", "2", "--heldout-pairs", "0",
              "--device", "cpu", "--log-every", "1", "--beta", "500"]


@pytest.fixture(scope="module")
def style_run(style_home):
    """`train --style` with no --output under umask 022, then the very same command again."""
    with _home(style_home):
        first = _run(STYLE_ARGV, 0o022)
        output = style_home / "runs" / f"tiny-sd15-rpo-{STYLE}-seed0"
        record = (output / "rpo_bench.json").read_bytes() if output.is_dir() else b""
        again = _run(STYLE_ARGV, 0o022)
    return SimpleNamespace(first=first, again=again, output=output, record=record)


@pytest.fixture(scope="module")
def resumed_run(preference_folder, tmp_path_factory):  # noqa: F811 - the shared session fixture
    """Two steps with --quiet, then --resume to four steps, both under umask 077."""
    output = tmp_path_factory.mktemp("resume") / "run"
    argv = ["train", "--model", "tiny-sd15", "--data", str(preference_folder), "--output", str(output),
            "--method", "dpo", "--lora-rank", "4", "--lr", "1e-3", "--beta", "500", "--pairs-per-device", "2",
            "--device", "cpu", "--heldout-pairs", "1", "--eval-every", "0", "--log-every", "1"]
    first = _run([*argv, "--steps", "2", "--quiet"], 0o077)
    resumed = _run([*argv, "--steps", "4", "--resume"], 0o077)
    return SimpleNamespace(first=first, resumed=resumed, output=output)


def test_without_output_the_run_goes_to_the_default_folder_and_says_so(style_run):
    assert style_run.first.code == 0, style_run.first.err
    assert (style_run.output / "rpo_bench.json").is_file()
    lines = style_run.first.out.splitlines()
    assert lines[0] == f"output: {style_run.output} (the default; --output DIR puts a run elsewhere)"
    assert f"trained rpo for 2 steps -> {style_run.output}" in lines


def test_a_finished_run_at_the_default_folder_is_not_overwritten(style_run):
    assert style_run.again.code == 2
    error = style_run.again.err.strip()
    assert error.count("\n") == 0 and str(style_run.output) in error and "pass --resume" in error
    assert (style_run.output / "rpo_bench.json").read_bytes() == style_run.record
    assert "== " not in style_run.again.out  # refused before any phase began


def test_each_phase_that_runs_has_one_header(style_run, resumed_run):
    assert _headers(style_run.first.out) == list(HEADERS)
    lines = style_run.first.out.splitlines()
    # a header comes before its phase's own lines: the images generated for the losers, the training steps
    assert lines.index(next(ln for ln in lines if ln.startswith("== generating losers"))) < \
        lines.index(next(ln for ln in lines if ln.startswith("generate tiny-sd15")))
    assert lines.index(next(ln for ln in lines if ln.startswith("== training"))) < \
        lines.index(next(ln for ln in lines if ln.startswith("step 1 ")))
    # pairs given as --data, DPO (no embeddings): only what runs is announced; --quiet announces nothing
    assert _headers(resumed_run.resumed.out) == ["reading pairs", "training", "saving"]
    assert _headers(resumed_run.first.out) == []


def test_no_line_is_printed_twice(style_run, resumed_run):
    for run in (style_run.first, resumed_run.first, resumed_run.resumed):
        assert run.code == 0, run.err
        repeated = [line for line, n in Counter(run.out.splitlines()).items() if n > 1]
        assert repeated == []
    # the last step's diagnostics and held-out line, once each, with and without --quiet
    for run, last in ((resumed_run.first, 2), (resumed_run.resumed, 4)):
        assert sum(line.startswith(f"step {last}  loss") for line in run.out.splitlines()) == 1
        assert sum(line.startswith(f"step {last} held-out") for line in run.out.splitlines()) == 1


def test_a_resumed_run_counts_steps_from_where_it_resumed(resumed_run):
    out = resumed_run.resumed.out
    assert "== training: dpo, steps 3-4, resumed from the checkpoint at step 2" in out
    assert re.search(r"^train dpo: step 4/4 \(100%\)", out, re.MULTILINE), out  # not 2/2: the bar's numbers
    assert not re.search(r"step 2/2", out)
    steps = [int(m) for m in re.findall(r"^step (\d+)  loss", out, re.MULTILINE)]
    assert steps == [3, 4]
    assert "trained dpo for 4 steps (resumed at step 2)" in out


def test_the_closing_hint_evaluates_the_run_as_trained(style_run, resumed_run):
    assert f"evaluate it: rpo-bench evaluate --style {STYLE} --models {style_run.output}" \
        in style_run.first.out.splitlines()
    # tiny-sd15 samples under its own protocol, which evaluate does not use by default
    assert f"evaluate it: rpo-bench evaluate --models tiny-sd15,{resumed_run.output} --protocol tiny" \
        in resumed_run.resumed.out.splitlines()
    # the model card says the same, the folder as a placeholder (it may be moved)
    assert f"- Evaluate it: `rpo-bench evaluate --style {STYLE} --models <this folder>`" \
        in (style_run.output / "README.md").read_text(encoding="utf-8")
    assert "- Evaluate it: `rpo-bench evaluate --models tiny-sd15,<this folder> --protocol tiny`" \
        in (resumed_run.output / "README.md").read_text(encoding="utf-8")


def test_files_are_readable_by_others_under_umask_022(style_run):
    modes = _modes(style_run.output)
    assert "unet/diffusion_pytorch_model.safetensors" in modes  # safetensors makes these 0600 by itself
    assert any(name.startswith("checkpoints/") and name.endswith(".safetensors") for name in modes)
    assert {name for name, mode in modes.items() if mode != 0o644} == set()


def test_files_follow_a_private_umask_077(resumed_run):
    modes = _modes(resumed_run.output)
    assert "pytorch_lora_weights.safetensors" in modes and "rpo_bench.json" in modes
    assert {name for name, mode in modes.items() if mode != 0o600} == set()


def test_train_help_groups_every_option_in_panels(capsys, monkeypatch):
    from rpo_bench.training.config import all_fields

    monkeypatch.setenv("COLUMNS", "200")  # at 80 columns rich shortens the longest switch pair with an ellipsis
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    panels = ["Data", "Model", "Method", "Optimisation", "Style", "Output", "Advanced"]
    found = [re.search(rf"^╭─ {name} ─", text, re.MULTILINE) for name in panels]
    assert all(found), text
    assert [m.start() for m in found] == sorted(m.start() for m in found)  # in this order
    flags = set(re.findall(r"--[a-z][a-z0-9-]*", text))
    expected = {f"--{name.replace('_', '-')}" for name in all_fields()} | {"--config", "--preset", "--resume",
                                                                           "--quiet", "--overwrite-name"}
    assert expected <= flags  # no option lost
    style_panel = text[found[4].start():found[5].start()]
    assert "--style" in style_panel and "--pairs" in style_panel
    data_panel = text[found[0].start():found[1].start()]
    assert data_panel.index("--data ") < data_panel.index("--data-limit")  # most used first
