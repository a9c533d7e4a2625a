"""Training that says how it is going: held-out accuracy and margin, step-1 ties, progress in a log file, and the
small things researchers tripped over (help defaults, the method default, --overwrite-name, fine-tunes in
`rpo-bench models`, absolute paths in rpo_bench.json)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from rpo_bench.cli import main
from rpo_bench.core.errors import BadInputError
from rpo_bench.core.progress import PlainProgress, progress_bar
from rpo_bench.training import losses
from rpo_bench.training.config import DEFAULT_METHOD, HELDOUT_CAP, TrainConfig, build_config
from rpo_bench.training.heldout import split_heldout
from rpo_bench.training.methods.sft import SFTConfig
from rpo_bench.training.output import RECORD_FILE, format_diagnostics, format_heldout
from rpo_bench.training.trainer import LOG_FILE, Trainer
from tests.test_training import _config, preference_folder  # noqa: F401 - the shared session fixture

TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")


def _log(output) -> list[dict]:
    return [json.loads(line) for line in (output / LOG_FILE).read_text(encoding="utf-8").splitlines()]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# -- step-1 diagnostics: ties count half --------------------------------------------------------------------------
def test_tied_logits_count_half_and_rounding_is_a_tie():
    err = torch.tensor([0.1, 0.2, 0.3])
    tied = losses.preference_diagnostics(err, err, err, err, 5000.0)
    assert tied["acc_diag"] == 0.5 and tied["acc_offdiag"] == 0.5
    # The model's own pass rounded one ulp away from the reference's: still no preference.
    nudged = torch.nextafter(err, torch.tensor(1.0))
    assert losses.preference_diagnostics(nudged, err, err, err, 5000.0)["acc_diag"] == 0.5
    better = losses.preference_diagnostics(err - 0.01, err, err, err, 5000.0)  # winners' error fell
    assert better["acc_diag"] == 1.0


def test_step_one_of_a_run_shows_acc_one_half_not_zero(preference_folder, tmp_path):  # noqa: F811
    config = _config(preference_folder, tmp_path, method="dpo", steps=1, heldout_pairs=0.0)
    result = Trainer(config, show_progress=False).train()
    first = result.history[0]
    assert first["acc_diag"] == 0.5  # the model is the reference at step 1: every logit ties at 0
    assert "acc 0.50" in format_diagnostics(first)


# -- the held-out slice --------------------------------------------------------------------------------------------
def test_heldout_slice_is_whole_prompts_chosen_by_seed_whatever_the_row_order():
    captions = [f"prompt {i // 3}" for i in range(60)]  # 20 prompts, 3 pairs each
    train, held = split_heldout(captions, 0.1, seed=0)
    assert len(held) == 6 and sorted(train + held) == list(range(60))
    held_prompts = {captions[i] for i in held}
    assert not held_prompts & {captions[i] for i in train}  # no held-out prompt leaks into training
    assert split_heldout(captions, 0.1, seed=0) == (train, held)
    assert {captions[i] for i in split_heldout(captions, 0.1, seed=1)[1]} != held_prompts
    reversed_captions = captions[::-1]
    assert {reversed_captions[i] for i in split_heldout(reversed_captions, 0.1, seed=0)[1]} == held_prompts
    assert split_heldout(captions, 0.0, seed=0) == (list(range(60)), [])
    assert split_heldout(captions, 4, seed=0)[1].__len__() == 6  # a count: two prompts reach 4 pairs
    many = [f"p{i}" for i in range(100_000)]
    assert len(split_heldout(many, 0.05, seed=0)[1]) == HELDOUT_CAP


def test_heldout_that_leaves_nothing_to_train_on_is_refused():
    with pytest.raises(BadInputError, match=r"--heldout-pairs 3 leaves no pair to train on: the data has 3 pairs "
                                            r"over 1 prompts"):
        split_heldout(["one prompt"] * 3, 3, seed=0)


@pytest.mark.parametrize("value, message", [
    (1.5, "--heldout-pairs 1.5; accepted: 0 (none), a fraction 0 < f < 1 of the pairs, or a whole number of pairs"),
    (-0.1, "--heldout-pairs -0.1; accepted"), (float("nan"), "--heldout-pairs nan; accepted"),
])
def test_bad_heldout_settings_are_named(tmp_path, value, message):
    with pytest.raises(BadInputError, match=re.escape(message)):
        build_config(None, None, {"data": "d", "output": str(tmp_path), "heldout_pairs": value})
    with pytest.raises(BadInputError, match=re.escape("--eval-every -1; accepted: an integer >= 0")):
        build_config(None, None, {"data": "d", "output": str(tmp_path), "eval_every": -1})


@pytest.mark.parametrize("method, lora_rank", [("dpo", 4), ("dpo", 0), ("sft", 0), ("rpo", 4)])
def test_before_training_the_heldout_pairs_tie_with_the_reference(preference_folder, tmp_path, method,  # noqa: F811
                                                                  lora_rank):
    """The reference is the base for every method (adapters off, the frozen copy, the UNet before training), so the
    untrained model measured against it ties on every held-out pair: D = 0 exactly, accuracy one half."""
    trainer = Trainer(_config(preference_folder, tmp_path, method=method, lora_rank=lora_rank, heldout_pairs=2.0),
                      show_progress=False)
    trainer.setup()
    trainer._prepare_heldout()
    measured = trainer.heldout.evaluate(trainer.accelerator.unwrap_model(trainer.unet))
    assert measured["heldout_pairs"] >= 2
    assert measured["heldout_acc"] == 0.5 and measured["heldout_d_w"] == 0.0 and measured["heldout_d_l"] == 0.0
    assert measured["heldout_margin"] == 0.0 and measured["heldout_err_w"] > 0


def test_heldout_pairs_are_never_trained_on_and_are_measured_logged_and_recorded(preference_folder, tmp_path,  # noqa: F811
                                                                                  capsys):
    config = _config(preference_folder, tmp_path, method="dpo", steps=3, heldout_pairs=2.0, eval_every=2,
                     pairs_per_device=2)
    trainer = Trainer(config, show_progress=True)
    result = trainer.train()
    held = set(trainer.heldout_indices)
    assert held and all(not held & set(trainer._micro_batch(step)[0]) for step in range(20))
    records = [r for r in _log(tmp_path / "out") if "heldout_acc" in r]
    assert [r["step"] for r in records] == [2, 3]  # every 2 steps, and at the end
    assert records == result.heldout
    assert all(0 <= r["heldout_acc"] <= 1 and r["heldout_pairs"] == len(held) for r in records)
    assert records[-1]["heldout_d_w"] != 0.0  # the model moved away from the reference
    out = capsys.readouterr().out
    assert format_heldout(records[0]) in out and "step 2 held-out (" in out
    record = json.loads((tmp_path / "out" / RECORD_FILE).read_text())
    assert sorted(record["heldout"]["sample_ids"]) == sorted(trainer.data.sample_ids[i] for i in held)
    assert record["heldout"]["captions"] == sorted({trainer.data.captions[i] for i in held})
    assert record["heldout"]["last"] == records[-1]
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"- Held out of training: {len(held)} pairs over {len(record['heldout']['captions'])} prompts" in card


def test_a_resumed_run_measures_the_heldout_pairs_as_an_uninterrupted_one(preference_folder, tmp_path):  # noqa: F811
    from safetensors.torch import load_file

    def run(folder, steps, resume=False):
        config = _config(preference_folder, folder, method="rpo", steps=steps, heldout_pairs=2.0, eval_every=1,
                         checkpoint_every=1, lr_scheduler="constant")
        Trainer(config, resume=resume, show_progress=False).train()
        return folder / "out"

    whole = run(tmp_path / "whole", 3)
    split = run(tmp_path / "split", 2)
    run(tmp_path / "split", 3, resume=True)

    def logged(output):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in _log(output)]

    assert logged(split) == logged(whole)
    assert [r["step"] for r in logged(whole) if "heldout_acc" in r] == [1, 2, 3]
    a, b = load_file(whole / "pytorch_lora_weights.safetensors"), load_file(split / "pytorch_lora_weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_from_before_heldout_pairs_resumes_with_none(preference_folder, tmp_path):  # noqa: F811
    """Runs made before --heldout-pairs existed trained on every pair: their checkpoints mean heldout_pairs 0."""
    from rpo_bench.training.config import resume_mismatch

    old = _config(preference_folder, tmp_path, method="dpo").to_dict()
    del old["heldout_pairs"], old["eval_every"]
    assert resume_mismatch(old, _config(preference_folder, tmp_path, method="dpo", heldout_pairs=0.0)) == []
    assert resume_mismatch(old, _config(preference_folder, tmp_path, method="dpo", heldout_pairs=2.0)) == [
        "heldout_pairs: 0.0 then, 2.0 now"]


# -- progress in a log file ------------------------------------------------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_writes_a_line_per_tenth_at_most_every_few_seconds_and_at_the_end():
    clock, lines = _Clock(), []
    plain = PlainProgress("train dpo", 600, "step", clock=clock, write=lines.append)
    for _ in range(600):
        clock.now += 0.75  # 1.33 steps/s: 60 steps (a tenth) take 45 s
        plain.advance(1, status="loss 0.61")
    plain.finish()
    assert lines[0] == "train dpo: step 40/600 (7%), 1.3 steps/s, eta 7m, loss 0.61"  # 30 s without a line
    assert lines[1] == "train dpo: step 60/600 (10%), 1.3 steps/s, eta 7m, loss 0.61"  # a tenth, 15 s later
    steps = [int(re.search(r"step (\d+)/", line).group(1)) for line in lines]
    assert steps[:6] == [40, 60, 100, 120, 160, 180]  # each tenth, and never 30 s without a line
    assert lines[-1] == "train dpo: step 600/600 (100%), 1.3 steps/s, done in 8m, loss 0.61"
    fast, quick = _Clock(), []
    plain = PlainProgress("score x", 1000, clock=fast, write=quick.append)
    for _ in range(1000):
        fast.now += 0.001
        plain.advance(1)
    plain.finish()
    assert quick == ["score x: 1000/1000 (100%), 1000 items/s, done in 1s"]  # a fast loop: its last line only


def test_progress_bar_prints_plain_lines_when_output_is_not_a_terminal(capsys):
    with progress_bar("generate tiny", 5, unit="image") as advance:
        for _ in range(5):
            advance(1)
    out = capsys.readouterr().out
    assert out.startswith("generate tiny: image 5/5 (100%),") and out.count("\n") == 1
    assert "━" not in out  # no bar characters in a log file


def test_train_progress_in_a_log_file_names_the_step_and_the_loss(preference_folder, tmp_path, capsys):  # noqa: F811
    Trainer(_config(preference_folder, tmp_path, method="dpo", steps=2, heldout_pairs=0.0), show_progress=True).train()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("train dpo:")]
    assert len(lines) == 1 and re.fullmatch(r"train dpo: step 2/2 \(100%\), .* done in \d+s, loss [0-9.]+", lines[0])


# -- small things -----------------------------------------------------------------------------------------------
def test_train_help_shows_every_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("TERMINAL_WIDTH", "250")
    assert main(["train", "--help"]) == 0
    # the panels' borders out: a help text that wraps inside a panel continues after the next line's "│"
    help_text = " ".join(re.sub("[│╭╮╰╯─]", " ", capsys.readouterr().out).split())
    for shown in ("[default: 5000.0]", "[default: 0.0001]", f"[default: {DEFAULT_METHOD}]", "[default: 0.05]",
                  "[default: 50]", "[default: no-data-stream]", "[default: micro-base]"):
        assert shown in help_text, shown
    assert "--overwrite-name" in help_text


def test_the_method_default_is_the_same_everywhere(tmp_path):
    built = build_config(None, None, {"data": "d", "output": str(tmp_path)})
    assert TrainConfig().method == built.method == DEFAULT_METHOD == "rpo"
    assert SFTConfig().method == "sft"


def _argv(data, output, *extra: str) -> list[str]:
    return ["train", "--model", "tiny-sd15", "--data", str(data), "--output", str(output), "--lora-rank", "4",
            "--lr", "1e-3", "--beta", "500", "--device", "cpu", "--method", "dpo", "--pairs-per-device", "2",
            "--steps", "1", "--heldout-pairs", "0", "--quiet", *extra]


def test_overwrite_name_replaces_a_user_entry_and_keeps_the_rest(preference_folder, tmp_path, monkeypatch,  # noqa: F811
                                                                 capsys):
    from rpo_bench.core.config import user_registry_file
    from rpo_bench.models.catalog import MODELS, resolve_model

    monkeypatch.setenv("RPO_BENCH_HOME", str(tmp_path / "home"))
    MODELS.reset_plugins()
    assert main(_argv(preference_folder, tmp_path / "first", "--name", "my-tune")) == 0
    registry = user_registry_file()
    registry.write_text("# my notes\n" + registry.read_text() + '\n[models."other"]\nfamily = "sd15"\ntiny = "sd15"\n')
    assert main(_argv(preference_folder, tmp_path / "second", "--name", "my-tune")) == 2
    assert "pass --overwrite-name to replace it" in _one_error_line(capsys)
    assert not (tmp_path / "second").exists()
    assert main(_argv(preference_folder, tmp_path / "second", "--name", "my-tune", "--overwrite-name")) == 0
    MODELS.reset_plugins()
    assert resolve_model("my-tune").lora_repo == str((tmp_path / "second").resolve())
    text = registry.read_text()
    assert text.startswith("# my notes\n") and text.count("my-tune") == 1 and resolve_model("other").tiny == "sd15"


@pytest.mark.parametrize("extra, message", [
    (("--name", "tiny-sd15", "--overwrite-name"), "--name 'tiny-sd15' is already a model (rpo-bench models lists "
                                                  "them); --overwrite-name replaces only entries of "),
    (("--overwrite-name",), "--overwrite-name replaces the registry entry named by --name; give --name too"),
])
def test_overwrite_name_never_takes_a_built_in_model(preference_folder, tmp_path, capsys, extra, message):  # noqa: F811
    assert main(_argv(preference_folder, tmp_path / "out", *extra)) == 2
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_models_lists_fine_tunes_apart_from_their_base(preference_folder, tmp_path, monkeypatch, capsys):  # noqa: F811
    from rpo_bench.models.catalog import MODELS

    monkeypatch.setenv("RPO_BENCH_HOME", str(tmp_path / "home"))
    MODELS.reset_plugins()
    shutil.copytree(preference_folder, tmp_path / "pairs")
    assert main(_argv(tmp_path / "pairs", tmp_path / "tuned", "--name", "listed-tune", "--heldout-pairs", "2")) == 0
    capsys.readouterr()
    monkeypatch.setenv("COLUMNS", "400")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    bases, _, tuned = out.partition("fine-tunes")
    assert "listed-tune" not in bases and "tiny-sd15" in bases
    row = next(line for line in tuned.splitlines() if "listed-tune" in line)
    assert "tiny-sd15" in row and f"LoRA {(tmp_path / 'tuned').resolve()}/pytorch_lora_weights" in row
    assert "dpo on" in row  # its summary
    assert "sdxl-base + VAE madebyollin/sdxl-vae-fp16-fix" in tuned  # a built-in fine-tune with a VAE of its own
    assert main(["models", "show", "listed-tune"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "fine-tune of │ tiny-sd15" in shown and "trained │ dpo, 1 steps on" in shown
    assert re.search(r"held-out │ acc [0-9.]+, margin -?[0-9.]+ \(\d+ pairs, step 1\)", shown)


def test_the_record_holds_absolute_paths(preference_folder, tmp_path, monkeypatch):  # noqa: F811
    shutil.copytree(preference_folder, tmp_path / "pairs")
    monkeypatch.chdir(tmp_path)
    assert main(_argv("pairs", "out")) == 0
    record = json.loads((tmp_path / "out" / RECORD_FILE).read_text())
    assert record["config"]["output"] == str((tmp_path / "out").resolve())
    assert record["config"]["data"] == str((tmp_path / "pairs").resolve())
    assert record["data"]["source"].startswith(str(tmp_path.resolve()))
    assert record["config"]["model"] == "tiny-sd15"  # a registry name stays a name


@pytest.mark.slow
@pytest.mark.skipif(shutil.which(TORCHRUN) is None, reason="needs torchrun")
def test_heldout_measures_on_two_processes_equal_one_process(preference_folder, tmp_path, session_home):  # noqa: F811
    """Each process measures its share of the held-out pairs and the sums are reduced: the numbers do not depend on
    the number of processes (up to the order of float sums)."""
    env = {**os.environ, "RPO_BENCH_HOME": str(session_home), "OMP_NUM_THREADS": "1"}
    common = ["--steps", "2", "--heldout-pairs", "2", "--eval-every", "1", "--max-grad-norm", "0"]
    single, double = tmp_path / "single", tmp_path / "double"
    subprocess.run([sys.executable, "-m", "rpo_bench", *_argv(preference_folder, single, *common,
                                                              "--pairs-per-device", "4")],
                   env=env, check=True, capture_output=True)
    result = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "rpo_bench",
                             *_argv(preference_folder, double, *common, "--pairs-per-device", "2")],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = ([r for r in _log(folder) if "heldout_acc" in r] for folder in (single, double))
    assert [r["step"] for r in one] == [r["step"] for r in two] == [1, 2]
    for a, b in zip(one, two, strict=True):
        assert a["heldout_pairs"] == b["heldout_pairs"] >= 2
        assert b["heldout_acc"] == a["heldout_acc"]
        for key in ("heldout_err_w", "heldout_err_l"):
            assert b[key] == pytest.approx(a[key], rel=1e-5)
        assert b["heldout_margin"] == pytest.approx(a["heldout_margin"], rel=1e-3, abs=1e-4)
