"""Training refuses what would silently go wrong, loads checkpoints without running code, and loses no finished
step: typed settings, planted pickles, Ctrl-C, divergence, users' folders, resume checks, empty folders."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rpo_bench.cli import main
from rpo_bench.core.errors import BadInputError, RpoBenchError
from rpo_bench.training.checkpoint import OPTIMIZER_FILE, STATE_FILE, WEIGHTS_FILE
from rpo_bench.training.config import build_config, read_config_file
from rpo_bench.training.trainer import InterruptLatch, SpikeWatch, Trainer, TrainingDivergedError
from tests.test_training import _config, preference_folder  # noqa: F401 - the shared session fixture

LORA = "pytorch_lora_weights.safetensors"


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _train_argv(data, output, *extra: str) -> list[str]:
    return ["train", "--model", "tiny-sd15", "--data", str(data), "--output", str(output), "--lora-rank", "4",
            "--lr", "1e-3", "--beta", "500", "--device", "cpu", "--method", "dpo", "--pairs-per-device", "2",
            "--quiet", *extra]


# -- 3. typed settings ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix, text, message", [
    (".toml", 'pin_diagonal = "false"', "pin_diagonal = 'false' in {path}: str given; accepted: true or false"),
    (".toml", 'steps = "two"', "steps = 'two' in {path}: str given; accepted: an integer"),
    (".toml", "steps = 2.7", "steps = 2.7 in {path}: float given; accepted: an integer"),
    (".toml", "steps = true", "steps = True in {path}: bool given; accepted: an integer"),
    (".yaml", "lr: 1e-4", "lr = '1e-4' in {path}: str given; accepted: a number (YAML reads 1e-4 as text"),
    (".toml", "stpes = 3", "unknown training setting(s) stpes ({path})"),
    (".toml", "max_grad_norm = -1.0", "max_grad_norm = -1.0 in {path}; accepted: a finite number > 0, or 0 for no "
                                      "clipping"),
    (".json", '{"lr": NaN}', "lr = nan in {path}; accepted: a finite number > 0"),
    (".toml", "lr = inf", "lr = inf in {path}; accepted: a finite number > 0"),
    (".toml", "caption_dropout = 1.0", "caption_dropout = 1.0 in {path}; accepted: 0 <= p < 1"),
    (".toml", "checkpoints_keep = 0", "checkpoints_keep = 0 in {path}; accepted: an integer >= 1"),
    (".toml", 'lr_scheduler = "cosin"', "lr_scheduler = 'cosin' in {path}; accepted: constant,"),
])
def test_config_file_values_are_type_and_range_checked(tmp_path, suffix, text, message):
    path = tmp_path / f"c{suffix}"
    path.write_text(text + "\n")
    with pytest.raises(BadInputError) as caught:
        build_config(None, read_config_file(path), {"data": "d", "output": str(tmp_path / "o")})
    assert message.format(path=path) in str(caught.value)


@pytest.mark.parametrize("flags, message", [
    ({"max_grad_norm": -1.0}, "--max-grad-norm -1.0; accepted: a finite number > 0, or 0 for no clipping"),
    ({"lr": float("inf")}, "--lr inf; accepted: a finite number > 0"),
    ({"lr": float("nan")}, "--lr nan; accepted: a finite number > 0"),
    ({"lr": 0.0}, "--lr 0.0; accepted: a finite number > 0"),
    ({"steps": 0}, "--steps 0; accepted: an integer >= 1"),
    ({"tau": float("nan")}, "--tau nan; accepted: a finite number > 0"),
    ({"resolution": 100}, "--resolution 100; accepted: 0 (the model's native size) or a multiple of 8"),
])
def test_flag_values_are_range_checked(tmp_path, flags, message):
    with pytest.raises(BadInputError) as caught:
        build_config(None, None, {"data": "d", "output": str(tmp_path / "o"), **flags})
    assert message in str(caught.value)


def test_preset_values_are_named_by_their_preset(tmp_path, monkeypatch):
    from rpo_bench.training import config

    monkeypatch.setitem(config.PRESETS, "broken", dict(steps="10"))
    with pytest.raises(BadInputError, match="steps = '10' in preset broken: str given; accepted: an integer"):
        build_config("broken", None, {"data": "d", "output": "o"})


def test_integers_are_accepted_for_float_settings(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("lr = 1\nmax_grad_norm = 0\n")
    config = build_config(None, read_config_file(path), {"data": "d", "output": "o"})
    assert (config.lr, config.max_grad_norm) == (1.0, 0.0) and isinstance(config.lr, float)


def test_cli_prints_one_line_for_a_bad_config_value_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text('[train]\npin_diagonal = "false"\n')
    output = tmp_path / "out"
    assert main(["train", "--config", str(path), "--data", "d", "--output", str(output)]) == 2
    assert f"pin_diagonal = 'false' in {path}" in _one_error_line(capsys)
    assert not output.exists()


# -- shared runs ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(preference_folder, tmp_path_factory):  # noqa: F811
    """A 2-step DPO LoRA run with checkpoints at steps 1 and 2; tests copy it before changing it."""
    tmp = tmp_path_factory.mktemp("finished")
    Trainer(_config(preference_folder, tmp, method="dpo", checkpoint_every=1), show_progress=False).train()
    return tmp / "out"


def _copy_run(finished_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


# -- 1. checkpoints load without running code ----------------------------------------------------------------------
class _TouchOnUnpickle:
    """Unpickling this creates `marker`: what a planted payload could do with any code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _payload(marker: Path) -> bytes:
    data = pickle.dumps(_TouchOnUnpickle(marker))
    pickle.loads(data)  # the payload really runs when unpickled ...
    assert marker.exists()
    marker.unlink()  # ... so its absence below means nothing unpickled it
    return data


PLANTED = [STATE_FILE, WEIGHTS_FILE, OPTIMIZER_FILE, "scheduler.bin", "random_states_0.pkl", "optimizer.bin",
           "scaler.pt", "pytorch_model.bin"]


@pytest.mark.parametrize("planted", PLANTED)
def test_resume_never_unpickles_a_planted_file(preference_folder, finished_run, tmp_path, planted):  # noqa: F811
    output = _copy_run(finished_run, tmp_path)
    marker = tmp_path / "pwned"
    (output / "checkpoints" / "step-2" / planted).write_bytes(_payload(marker))
    config = _config(preference_folder, tmp_path, method="dpo", checkpoint_every=1, output=str(output), steps=3)
    try:
        Trainer(config, resume=True, show_progress=False).train()
        refused = None
    except BadInputError as exc:
        refused = str(exc)
    assert not marker.exists(), f"resume ran code planted in {planted}"
    if planted in (STATE_FILE, WEIGHTS_FILE, OPTIMIZER_FILE):  # the files resume reads: refused, in one line
        assert refused is not None and planted in refused and "\n" not in refused
        assert not (output / "checkpoints" / "step-3").exists()
    else:  # a file resume never opens: the run continues from the real checkpoint
        assert refused is None and json.loads((output / "rpo_bench.json").read_text())["steps_done"] == 3


def test_old_accelerate_checkpoints_are_refused_in_one_line(preference_folder, finished_run, tmp_path, capsys):  # noqa: F811
    output = _copy_run(finished_run, tmp_path)
    old = output / "checkpoints" / "step-7"
    old.mkdir()
    (old / STATE_FILE).write_text(json.dumps({"step": 7, "config": {}, "data": "x"}))  # no "format": accelerate's
    marker = tmp_path / "pwned"
    for name in ("scheduler.bin", "random_states_0.pkl", "optimizer.bin"):
        (old / name).write_bytes(_payload(marker))
    assert main(_train_argv(preference_folder, output, "--steps", "8", "--resume")) == 2
    line = _one_error_line(capsys)
    assert f"checkpoint {old} is from an older rpo-bench" in line and "cannot be loaded safely" in line
    assert not marker.exists()


def test_resume_accepts_the_same_data_spelled_differently(preference_folder, finished_run, tmp_path,  # noqa: F811
                                                          monkeypatch):
    output = _copy_run(finished_run, tmp_path)
    monkeypatch.chdir(preference_folder.parent)
    spelled = f"./{preference_folder.name}/"  # relative, with a trailing slash; the run used the absolute path
    config = _config(preference_folder, tmp_path, method="dpo", output=str(output), steps=3, data=spelled)
    result = Trainer(config, resume=True, show_progress=False).train()
    assert (result.resumed_from, result.steps_done) == (2, 3)


def test_resume_below_the_checkpoint_step_is_refused(preference_folder, finished_run, tmp_path, capsys):  # noqa: F811
    output = _copy_run(finished_run, tmp_path)
    weights = (output / LORA).read_bytes()
    assert main(_train_argv(preference_folder, output, "--steps", "1", "--resume")) == 2
    line = _one_error_line(capsys)
    assert f"checkpoint {output / 'checkpoints' / 'step-2'} at step 2 is past --steps 1; pass --steps >= 2" in line
    assert (output / LORA).read_bytes() == weights


# -- 2. Ctrl-C keeps finished steps ------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, weights", [
    ((), LORA),
    (("--lora-rank", "0", "--lr-scheduler", "cosine", "--warmup-steps", "2"),
     "unet/diffusion_pytorch_model.safetensors"),
], ids=["lora", "full-cosine"])
def test_ctrl_c_checkpoints_the_last_finished_step_and_resume_matches(preference_folder, tmp_path,  # noqa: F811
                                                                      monkeypatch, capsys, extra, weights):
    clean, interrupted = tmp_path / "clean", tmp_path / "interrupted"
    assert main(_train_argv(preference_folder, clean, "--steps", "4", *extra)) == 0
    real_step, calls = Trainer._optimizer_step, []

    def interrupt_third(self, step):
        calls.append(step)
        if len(calls) == 3:  # steps 1 and 2 are finished; there is no periodic checkpoint
            raise KeyboardInterrupt
        return real_step(self, step)

    monkeypatch.setattr(Trainer, "_optimizer_step", interrupt_third)
    assert main(_train_argv(preference_folder, interrupted, "--steps", "4", *extra)) == 130
    assert "interrupted" in capsys.readouterr().err
    assert (interrupted / "checkpoints" / "step-2" / STATE_FILE).is_file()
    assert not (interrupted / weights).exists()
    with open(interrupted / "train_log.jsonl", "a") as log:
        log.write('{"step": 3, "lo')  # what a kill in mid-write leaves: resume must drop it, not crash on it
    monkeypatch.setattr(Trainer, "_optimizer_step", real_step)
    assert main(_train_argv(preference_folder, interrupted, "--steps", "4", "--resume", *extra)) == 0
    assert "resumed at step 2" in capsys.readouterr().out
    a, b = load_file(clean / weights), load_file(interrupted / weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (interrupted / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_ctrl_c_during_an_update_is_held_until_the_update_is_done():
    # Python's own Ctrl-C handler, as in a terminal: a suite started in the background of a non-interactive shell
    # inherits SIGINT ignored, and the latch rightly leaves a handler it did not install alone.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        latch = InterruptLatch()
        with latch.deferred():
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-update: must not cut it in half
            finished_update = True
        assert finished_update and latch.pending
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with pytest.raises(KeyboardInterrupt):
            latch.raise_if_pending()
    finally:
        signal.signal(signal.SIGINT, previous)


# -- 4. divergence ---------------------------------------------------------------------------------------------
def test_a_diverging_run_stops_naming_the_step_and_keeps_the_last_checkpoint(preference_folder, tmp_path,  # noqa: F811
                                                                              capsys):
    output = tmp_path / "out"
    argv = _train_argv(preference_folder, output, "--steps", "4", "--checkpoint-every", "1", "--lr", "1e6")
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert "training diverged at step 2: loss nan" in line
    assert f"last checkpoint: {output / 'checkpoints' / 'step-1'}" in line
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["step-1"]
    assert not (output / LORA).exists() and not (output / "rpo_bench.json").exists()
    assert issubclass(TrainingDivergedError, RpoBenchError) and TrainingDivergedError.exit_code == 2


def test_a_loss_that_stays_high_warns_once_naming_the_step():
    watch = SpikeWatch()
    messages = [watch.check({"step": step, "loss": 1.0, "grad_norm": 2.0}) for step in range(1, 31)]
    assert not any(messages)
    # one step far above the rest is a hard batch, not divergence (the micro-style preset's run has such steps)
    assert watch.check({"step": 31, "loss": 50.0, "grad_norm": 40.0}) == []
    assert not any(watch.check({"step": step, "loss": 1.0, "grad_norm": 2.0}) for step in range(32, 41))
    # a loss that rises and stays: warned when the median of the last 10 steps is 10x the level before
    rising = [watch.check({"step": step, "loss": 50.0, "grad_norm": 2.0}) for step in range(41, 61)]
    warned = [(step, lines) for step, lines in zip(range(41, 61), rising, strict=True) if lines]
    assert len(warned) == 1 and warned[0][0] == 45  # the 5th high step lifts the median of 10 to (1 + 50) / 2
    assert warned[0][1][0].startswith("step 45: loss has stayed high: 25.5 (median of the last 10 steps) is 26x "
                                      "its median over the 35 steps before (1)")


# -- 5. users' folders -----------------------------------------------------------------------------------------
def test_output_folder_with_a_users_files_is_refused_before_training(preference_folder, tmp_path, capsys):  # noqa: F811
    output = tmp_path / "mine"
    output.mkdir()
    (output / "README.md").write_text("my notes\n")
    assert main(_train_argv(preference_folder, output, "--steps", "1")) == 2
    line = _one_error_line(capsys)
    assert f"--output {output} holds files that are not an rpo-bench run (README.md)" in line
    assert sorted(os.listdir(output)) == ["README.md"] and (output / "README.md").read_text() == "my notes\n"


def test_a_readme_we_did_not_write_is_never_overwritten(preference_folder, finished_run, tmp_path):  # noqa: F811
    output = _copy_run(finished_run, tmp_path)
    assert (output / "README.md").read_text().startswith("<!-- model card written by rpo-bench")
    (output / "README.md").write_text("my own notes\n")
    config = _config(preference_folder, tmp_path, method="dpo", output=str(output), steps=3)
    Trainer(config, resume=True, show_progress=False).train()
    assert (output / "README.md").read_text() == "my own notes\n"
    assert "3 steps of Diffusion-DPO" in (output / "MODEL_CARD.md").read_text()


# -- 8. a taken --name ------------------------------------------------------------------------------------------
def test_a_taken_name_is_refused_before_training(preference_folder, tmp_path, capsys, monkeypatch):  # noqa: F811
    from rpo_bench.models.catalog import MODELS
    from rpo_bench.training.output import register_model

    monkeypatch.setenv("RPO_BENCH_HOME", str(tmp_path / "home"))  # a registry of its own; refusal needs no model
    MODELS.reset_plugins()
    table = {k: v for k, v in MODELS.get("tiny-sd15").to_dict().items() if k not in ("name", "description")}
    register_model("hardening-taken-name", table)
    for name in ("hardening-taken-name", "tiny-sd15"):
        output = tmp_path / name
        assert main(_train_argv(preference_folder, output, "--steps", "1", "--name", name)) == 2
        assert f"--name '{name}' is already" in _one_error_line(capsys)
        assert not output.exists()


def test_a_run_may_keep_its_own_name_when_resumed(preference_folder, finished_run, tmp_path):  # noqa: F811
    from rpo_bench.models.catalog import resolve_model

    output = _copy_run(finished_run, tmp_path)
    for steps in (3, 4):  # the second resume finds the name registered, for this very folder
        config = _config(preference_folder, tmp_path, method="dpo", output=str(output), steps=steps,
                         name="hardening-resumed-name")
        Trainer(config, resume=True, show_progress=False).train()
    assert resolve_model("hardening-resumed-name").lora_repo == str(output.resolve())
    with pytest.raises(BadInputError, match="'hardening-resumed-name' is already in"):
        Trainer(_config(preference_folder, tmp_path, output=str(tmp_path / "other"), name="hardening-resumed-name"))


def test_a_finished_run_is_not_overwritten_without_resume(preference_folder, finished_run, tmp_path):  # noqa: F811
    output = _copy_run(finished_run, tmp_path)
    shutil.rmtree(output / "checkpoints")
    with pytest.raises(BadInputError, match="already holds a run; pass --resume"):
        Trainer(_config(preference_folder, tmp_path, method="dpo", output=str(output)))


# -- 9. no empty folders on a typo ----------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--model", "tiny-sd1", "--metric", "tiny-clip"], "unknown model 'tiny-sd1'"),
    (["--model", "tiny-sd15", "--metric", "tiny-clop"], "unknown metric 'tiny-clop'"),
    (["--model", "tiny-sd15", "--metric", "tiny-clip", "--device", "cdua"], "unknown device 'cdua'"),
    (["--model", "tiny-sd15", "--metric", "tiny-clip", "--protocol", "nope"], "nope"),
])
def test_pairs_leaves_no_folder_on_a_typo(tmp_path, capsys, argv, message):
    output = tmp_path / "pairs"
    assert main(["pairs", "--prompts", "smoke", "--output", str(output), *argv]) == 2
    assert message in _one_error_line(capsys)
    assert not output.exists()


def test_micro_preferences_leaves_no_folder_on_a_typo(tmp_path, capsys):
    output = tmp_path / "prefs"
    assert main(["micro", "preferences", "--out", str(output), "--device", "cdua"]) == 2
    assert "unknown device 'cdua'" in _one_error_line(capsys)
    assert not output.exists()


# -- 10. micro build rewrites nothing it did not rebuild -----------------------------------------------------------
def test_micro_build_that_rebuilds_nothing_leaves_build_json_alone(tmp_path):
    from rpo_bench.micro.build import build_micro

    (tmp_path / "judge.safetensors").write_bytes(b"judge")
    for stage in ("micro-clip", "micro-base"):
        (tmp_path / stage).mkdir()
    recorded = json.dumps({"settings": {"seed": 0, "clip_steps": 1500}, "micro-clip": {"final_loss": 0.3}})
    (tmp_path / "build.json").write_text(recorded)
    report = build_micro(tmp_path, seed=5, clip_steps=7, show_progress=False, world=1)  # the record's world
    assert (tmp_path / "build.json").read_text() == recorded
    assert report["settings"] == {"seed": 0, "clip_steps": 1500}  # what the files were built with


# -- 11. resume checks the state it reads; the output is writable, and has one writer (E9) ---------------------------
def _resume_argv(data, output, steps: int) -> list[str]:
    """A resume of `finished_run` with its own settings: nothing but the edited state could refuse it."""
    return _train_argv(data, output, "--pairs-per-device", "3", "--checkpoint-every", "1", "--steps", str(steps),
                       "--resume")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_edited_trainer_state_with_step_minus_2_is_refused_not_resumed_at_step_minus_2(
        preference_folder, finished_run, tmp_path, capsys):  # noqa: F811
    output = _copy_run(finished_run, tmp_path)
    state_file = output / "checkpoints" / "step-2" / STATE_FILE
    state_file.write_text(state_file.read_text().replace('"step": 2', '"step": -2'))
    before = _files(output)
    assert main(_resume_argv(preference_folder, output, 3)) == 2
    line = _one_error_line(capsys)
    assert f"checkpoint {output / 'checkpoints' / 'step-2'}: {STATE_FILE} says step -2; accepted: a step >= 0" in line
    assert _files(output) == before  # no checkpoints/step--1, no log line, nothing rewritten


def test_a_step_3_folder_whose_state_says_step_1_is_refused_not_resumed_silently(
        preference_folder, finished_run, tmp_path, capsys):  # noqa: F811
    output = _copy_run(finished_run, tmp_path)
    shutil.copytree(output / "checkpoints" / "step-1", output / "checkpoints" / "step-3")
    before = _files(output)
    assert main(_resume_argv(preference_folder, output, 4)) == 2
    line = _one_error_line(capsys)
    assert f"checkpoint {output / 'checkpoints' / 'step-3'}: {STATE_FILE} says step 1, its folder step-3" in line
    assert _files(output) == before


def test_a_state_whose_schedule_disagrees_with_its_step_is_refused(preference_folder, finished_run, tmp_path,  # noqa: F811
                                                                   capsys):
    output = _copy_run(finished_run, tmp_path)
    for step in (1, 2):  # both folders renamed one step on, their states edited to match: the schedule still says
        folder = output / "checkpoints" / f"step-{step}"
        state = json.loads((folder / STATE_FILE).read_text())
        (folder / STATE_FILE).write_text(json.dumps({**state, "step": step + 2}))
        folder.rename(output / "checkpoints" / f"step-{step + 2}")
    assert main(_resume_argv(preference_folder, output, 5)) == 2
    assert "says step 4, its learning-rate schedule step 2" in _one_error_line(capsys)


def _unwritable_output(tmp_path: Path) -> Path:
    """A folder this process may not create: under a read-only folder, or as root (whom permissions do not stop)
    in /sys, where creating a folder fails for everyone."""
    if os.geteuid() != 0:
        parent = tmp_path / "read-only"
        parent.mkdir()
        parent.chmod(0o555)
        return parent / "out"
    output = Path("/sys/rpo-bench-test-output")
    try:
        output.mkdir()
    except OSError:
        return output
    output.rmdir()
    pytest.skip("running as root on a machine where /sys can be written")


def test_train_output_on_a_read_only_file_system_is_refused_in_one_line(preference_folder, tmp_path, capsys):  # noqa: F811
    output = _unwritable_output(tmp_path)
    assert main(_train_argv(preference_folder, output, "--steps", "2")) == 2
    line = _one_error_line(capsys)
    assert str(output) in line and "cannot write" in line
    assert not output.exists()


def test_train_output_under_a_file_is_refused_before_anything_loads(preference_folder, tmp_path, capsys):  # noqa: F811
    (tmp_path / "afile").write_text("x\n")
    assert main(_train_argv(preference_folder, tmp_path / "afile" / "out", "--steps", "1")) == 2
    assert f"--output {tmp_path / 'afile' / 'out'}: {tmp_path / 'afile'} is not a folder" in _one_error_line(capsys)


def test_a_second_train_into_a_locked_output_is_refused_naming_the_holder(preference_folder, tmp_path, capsys):  # noqa: F811
    from rpo_bench.core.locks import folder_lock

    output = tmp_path / "out"
    ready = tmp_path / "locked"
    pid = os.fork()
    if pid == 0:  # another process writing into the output (a lock is re-entrant within one process)
        try:
            with folder_lock(output, "training output"):
                ready.touch()
                signal.pause()
        finally:
            os._exit(1)
    try:
        while not ready.exists():
            time.sleep(0.01)
        assert main(_train_argv(preference_folder, output, "--steps", "2")) == 2
        line = _one_error_line(capsys)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert f"the training output {output} is in use by process {pid}, which is writing into it" in line
    assert sorted(os.listdir(output)) == [".rpo-bench.lock"]  # nothing of a run


def test_a_lock_left_by_a_killed_train_is_taken_over(preference_folder, tmp_path):  # noqa: F811
    from rpo_bench.core.locks import folder_lock

    output = tmp_path / "out"
    ready = tmp_path / "locked"
    pid = os.fork()
    if pid == 0:  # a writer that holds the lock and is killed, as by SIGKILL or the OOM killer
        try:
            with folder_lock(output, "training output"):
                ready.touch()
                signal.pause()
        finally:
            os._exit(1)
    while not ready.exists():
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert (output / ".rpo-bench.lock").read_text().strip() == str(pid)
    assert main(_train_argv(preference_folder, output, "--steps", "1")) == 0
    assert (output / ".rpo-bench.lock").read_text().strip() == str(os.getpid())
    assert json.loads((output / "rpo_bench.json").read_text())["steps_done"] == 1


def test_the_lock_file_of_a_training_output_changes_neither_its_model_nor_its_resume(
        preference_folder, finished_run, tmp_path):  # noqa: F811
    from rpo_bench.models.catalog import resolve_model
    from rpo_bench.models.loader import load_pipeline, model_fingerprint

    output = _copy_run(finished_run, tmp_path)
    lock = output / ".rpo-bench.lock"
    assert lock.is_file()  # the run held it, and it stays
    fingerprint = model_fingerprint(resolve_model(str(output)))
    lock.write_text("12345\n")  # another holder's pid: the weights are the same
    assert model_fingerprint(resolve_model(str(output))) == fingerprint
    load_pipeline(resolve_model(str(output)), device="cpu", dtype=torch.float32)
    config = _config(preference_folder, tmp_path, method="dpo", checkpoint_every=1, output=str(output), steps=3)
    assert Trainer(config, resume=True, show_progress=False).train().resumed_from == 2


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="needs torchrun")
def test_a_locked_output_refuses_every_process_of_a_two_process_run_without_a_hang(preference_folder, tmp_path,  # noqa: F811
                                                                                   session_home):
    """Only the main process takes the lock; the others hear its refusal instead of waiting for it forever."""
    from rpo_bench.core.locks import folder_lock

    output = tmp_path / "out"
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "RPO_BENCH_HOME": str(session_home), "OMP_NUM_THREADS": "1"}
    with folder_lock(output, "training output"):
        result = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "rpo_bench",
                                 *_train_argv(preference_folder, output, "--steps", "2")],
                                env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    refusal = f"error: the training output {output} is in use by process {os.getpid()}"
    assert result.stderr.count(refusal) == 2, result.stderr[-3000:]  # one line from each process
    assert sorted(os.listdir(output)) == [".rpo-bench.lock"]
