"""The method registry and the methods that answer DPO's failure (KTO, MaPO, winner-preserving, the SFT / DPOP
regularisers, EMA weights): each trains a few steps on tiny-sd15 (LoRA and full) and on micro-base and resumes to
the same weights; a method in a package outside rpo-bench trains through the entry point; bad settings are refused
in one line that says why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from rpo_bench.cli.app import main
from rpo_bench.core.errors import BadInputError, RpoBenchError
from rpo_bench.training.config import build_config
from rpo_bench.training.methods import DEFAULT_SET, METHODS, get_method, method_names, readers, resolve_methods
from rpo_bench.training.trainer import Trainer
from rpo_bench.training.unpaired import SingleImages, class_layout
from tests.test_training import _config, preference_folder  # noqa: F401 - the session's tiny preference pairs

LORA = "pytorch_lora_weights.safetensors"
FULL = "unet/diffusion_pytorch_model.safetensors"
# Each new method or option, with what its log must show: the diagnostics that make its failure mode visible.
# beta=None: kto and mapo have their own strengths (kto_beta, mapo_beta), so DPO's beta is left unset.
CASES = {
    "kto": (dict(method="kto", beta=None), {"kto_z0", "kto_acc", "d_desirable", "d_undesirable"}),
    "kto-utility": (dict(method="kto", beta=None, kto_labels="utility", kto_threshold="median", positive_ratio=0.75),
                    {"kto_z0"}),
    "mapo": (dict(method="mapo", beta=None), {"acc", "model_err_w_mean"}),
    "dpo-winner-preserving": (dict(method="dpo", winner_preserving=True, mu=0.5), {"sdpo_scale", "d_w_mean"}),
    "rpo-winner-preserving-regularised": (dict(method="rpo", winner_preserving=True, sft_weight=0.5,
                                               winner_penalty=2.0), {"sdpo_scale", "weight_entropy"}),
    "dpo-ema": (dict(method="dpo", ema_decay=0.9), {"d_w_mean"}),
}


def _weights(output: Path, lora_rank: int) -> dict[str, torch.Tensor]:
    return load_file(output / (LORA if lora_rank else FULL))


def _log(output: Path) -> list[dict]:
    lines = (output / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


@pytest.mark.parametrize("lora_rank", [4, 0], ids=["lora", "full"])
@pytest.mark.parametrize("case", list(CASES))
def test_each_new_method_trains_and_a_resumed_run_ends_with_the_same_weights(preference_folder, tmp_path, case,  # noqa: F811
                                                                             lora_rank):
    values, logged = CASES[case]
    if values.get("kto_threshold") == "median":  # half the images desirable by the AI feedback's own scores
        rows = [json.loads(line) for line in (preference_folder / "pairs.jsonl").read_text().splitlines()]
        scores = sorted(row[column] for row in rows for column in ("score_0", "score_1"))
        values = {**values, "kto_threshold": scores[len(scores) // 2]}

    def run(folder: Path, steps: int, resume: bool = False) -> Path:
        config = _config(preference_folder, folder, steps=steps, lora_rank=lora_rank, checkpoint_every=1,
                         lr_scheduler="constant", **values)
        Trainer(config, resume=resume, show_progress=False).train()
        return folder / "out"

    whole = run(tmp_path / "whole", 3)
    split = run(tmp_path / "split", 2)
    run(tmp_path / "split", 3, resume=True)
    a, b = _weights(whole, lora_rank), _weights(split, lora_rank)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _log(whole) == _log(split)
    history = _log(whole)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in history)
    assert logged <= set(history[0]), f"{logged - set(history[0])} missing from the log"
    record = json.loads((whole / "rpo_bench.json").read_text())
    assert record["method"] == values["method"] and record["steps_done"] == 3
    assert record["method_title"] == get_method(values["method"]).title


def _starting_unet(preference_folder, tmp_path) -> dict[str, torch.Tensor]:  # noqa: F811
    trainer = Trainer(_config(preference_folder, tmp_path / "start", method="dpo", lora_rank=0), show_progress=False)
    trainer.setup()
    return {k: v.detach().clone() for k, v in trainer.accelerator.unwrap_model(trainer.unet).state_dict().items()}


def test_ema_weights_are_what_is_saved_and_differ_from_the_last_step(preference_folder, tmp_path):  # noqa: F811
    """With --ema-decay the output holds the average (here after 3 updates of decay min(0.999, (1+n)/(10+n))), not
    the last step's weights; the checkpoint keeps both, so resume continues both."""
    plain = _config(preference_folder, tmp_path / "plain", method="dpo", steps=3, lora_rank=0)
    averaged = _config(preference_folder, tmp_path / "ema", method="dpo", steps=3, lora_rank=0, ema_decay=0.999,
                       checkpoint_every=3)
    Trainer(plain, show_progress=False).train()
    Trainer(averaged, show_progress=False).train()
    last, ema = _weights(tmp_path / "plain" / "out", 0), _weights(tmp_path / "ema" / "out", 0)
    start = _starting_unet(preference_folder, tmp_path)
    moved = [k for k in last if not torch.equal(last[k], start[k])]
    assert moved
    # the average moved less than the last step: between the starting and the final weights
    for k in moved[:20]:
        assert (ema[k] - start[k]).abs().sum() < (last[k] - start[k]).abs().sum()
    checkpoint = tmp_path / "ema" / "out" / "checkpoints" / "step-3"
    assert (checkpoint / "ema.safetensors").is_file()
    assert json.loads((checkpoint / "trainer_state.json").read_text())["ema_updates"] == 3


def test_mapo_never_builds_a_reference_and_kto_trains_on_single_images(preference_folder, tmp_path):  # noqa: F811
    mapo = Trainer(_config(preference_folder, tmp_path / "m", method="mapo", beta=None, lora_rank=0),
                   show_progress=False)
    mapo.setup()
    assert mapo.reference is None and not mapo.needs_reference
    kto = Trainer(_config(preference_folder, tmp_path / "k", method="kto", beta=None, pairs_per_device=2),
                  show_progress=False)
    kto.setup()
    batch = kto.method.draw(kto, 0, [0, 1, 2, 3], 4)  # two images per pair of the budget
    assert len(batch.items) == 4 and [item.desirable for item in batch.items].count(True) == 2


@pytest.mark.parametrize("case", ["kto", "mapo", "dpo-winner-preserving", "dpo-ema"])
def test_new_methods_train_on_the_micro_world_and_resume_exactly(preference_folder, tmp_path, case):  # noqa: F811
    """micro-base (full UNet, the micro world's VAE and CLIP) through the same trainer as SD."""
    values = CASES[case][0]

    def run(folder: Path, steps: int, resume: bool = False):
        config = _config(preference_folder, folder, model="micro-base", lora_rank=0, steps=steps, pairs_per_device=2,
                         heldout_pairs=1.0, eval_every=1, checkpoint_every=1, lr_scheduler="constant", **values)
        return Trainer(config, resume=resume, show_progress=False).train()

    result = run(tmp_path / "whole", 2)
    run(tmp_path / "split", 1)
    run(tmp_path / "split", 2, resume=True)
    assert len(result.history) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in result.history)
    # every method gets D^w and D^l on the held-out pairs, measured against the starting weights (METHOD.md)
    assert {"heldout_d_w", "heldout_d_l", "heldout_acc"} <= set(result.heldout[-1])
    a, b = _weights(tmp_path / "whole" / "out", 0), _weights(tmp_path / "split" / "out", 0)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _log(tmp_path / "whole" / "out") == _log(tmp_path / "split" / "out")


# -- the unpaired view of the pairs ----------------------------------------------------------------------------------
def _data(image_ids, scores=None):
    n = len(image_ids)
    return SimpleNamespace(image_ids=image_ids, scores=scores or [(None, None)] * n, captions=["c"] * n,
                           sample_ids=[f"{i:064x}" for i in range(n)], source="prefs.jsonl",
                           image=lambda pair, side: None)


def test_pairs_label_an_image_that_wins_any_pair_desirable_and_count_each_image_once():
    # a beats b, b beats c, a beats c: a and b win something, c only loses
    images = SingleImages(_data([("a", "b"), ("b", "c"), ("a", "c")]), [0, 1, 2], "pairs", 0.5)
    assert sorted((i.pair, i.side) for i in images.desirable) == [(0, 0), (0, 1)]
    assert [(i.pair, i.side) for i in images.undesirable] == [(1, 1)]


def test_utility_labels_use_the_threshold_and_only_the_given_pairs():
    data = _data([("a", "b"), ("c", "d"), ("e", "f")], [(0.9, 0.2), (0.6, 0.4), (1.0, 0.0)])
    images = SingleImages(data, [0, 1], "utility", 0.5)  # pair 2 is held out: its images are never read
    assert {data.image_ids[i.pair][i.side] for i in images.desirable} == {"a", "c"}
    assert {data.image_ids[i.pair][i.side] for i in images.undesirable} == {"b", "d"}


def test_labels_kto_cannot_derive_are_refused_naming_what_is_accepted():
    with pytest.raises(BadInputError, match="has none for its winner; accepted: data with score_0 and score_1"):
        SingleImages(_data([("a", "b")]), [0], "utility", 0.5)
    with pytest.raises(BadInputError, match="2 desirable and 0 undesirable; kto needs both"):
        SingleImages(_data([("a", "b")], [(0.9, 0.8)]), [0], "utility", 0.5)
    with pytest.raises(BadInputError, match="kto-labels 'votes'; accepted: pairs, utility"):
        SingleImages(_data([("a", "b")]), [0], "votes", 0.5)


def test_kto_on_pairs_without_scores_by_utility_is_one_line(preference_folder, tmp_path, capsys):  # noqa: F811
    rows = [json.loads(line) for line in (preference_folder / "pairs.jsonl").read_text().splitlines()]
    data = tmp_path / "unscored.jsonl"
    data.write_text("".join(json.dumps({k: v for k, v in row.items() if not k.startswith("score_")}) + "\n"
                            for row in rows))
    for name in {row["jpg_0"] for row in rows} | {row["jpg_1"] for row in rows}:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes((preference_folder / name).read_bytes())
    code = main(["train", "--model", "tiny-sd15", "--data", str(data), "--output", str(tmp_path / "out"),
                 "--method", "kto", "--kto-labels", "utility", "--steps", "1", "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert "--kto-labels utility labels each image by its utility" in err and "or --kto-labels pairs" in err


def test_resume_on_data_whose_scores_would_relabel_kto_is_refused(preference_folder, tmp_path):  # noqa: F811
    """The pairs' fingerprint does not cover the score columns; KTO's labels by utility do depend on them."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(preference_folder, data)
    rows = [json.loads(line) for line in (data / "pairs.jsonl").read_text().splitlines()]
    scores = sorted(row[c] for row in rows for c in ("score_0", "score_1"))
    values = dict(method="kto", beta=None, kto_labels="utility", kto_threshold=scores[len(scores) // 2],
                  checkpoint_every=1)
    Trainer(_config(data, tmp_path, steps=1, **values), show_progress=False).train()
    low, high = scores[0], scores[-1]  # the same pairs, each score mirrored in the range: the labels flip
    flipped = [{**row, "score_0": low + high - row["score_0"], "score_1": low + high - row["score_1"]} for row in rows]
    (data / "pairs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in flipped))
    with pytest.raises(BadInputError, match="what kto derives from the data beyond the pairs"):
        Trainer(_config(data, tmp_path, steps=2, **values), resume=True, show_progress=False).train()


@pytest.mark.parametrize("batch, ratio", [(2, 0.5), (4, 0.5), (8, 0.8), (6, 0.9), (16, 0.5), (3, 0.1)])
def test_class_layout_holds_the_ratio_both_classes_and_balanced_slices(batch, ratio):
    layout = class_layout(batch, ratio)
    wanted = min(max(round(ratio * batch), 1), batch - 1)
    assert len(layout) == batch and sum(layout) == wanted
    if batch % 2 == 0:  # two processes: each half holds half the desirable places, give or take one
        assert abs(sum(layout[: batch // 2]) - sum(layout[batch // 2:])) <= 1


def test_kto_draws_replay_by_micro_step_and_cover_each_class():
    data = _data([(f"w{i}", f"l{i}") for i in range(10)])
    images = SingleImages(data, list(range(10)), "pairs", 0.5)

    def drawn(step):
        return [(i.pair, i.side) for i in images.batch(0, step, range(4), 4, 0.5, (4, 8, 8), 1000, 0.0).items]

    assert drawn(3) == drawn(3)
    seen = {item for step in range(5) for item in drawn(step)}  # 5 steps x 2 per class = one pass over each class
    assert seen == {(i, s) for i in range(10) for s in (0, 1)}


# -- the registry ---------------------------------------------------------------------------------------------------
def test_every_registered_method_declares_what_the_trainer_needs():
    assert set(DEFAULT_SET) <= set(method_names()) and {"kto", "mapo"} <= set(method_names())
    for name in method_names():
        method = get_method(name)
        assert method.name == name and method.title and method.summary and method.source
        assert method.config.__dataclass_fields__["method"].default == name
    assert resolve_methods("all") == tuple(method_names())
    assert readers("mu") == ["dpo", "rpo"] and readers("kto_beta") == ["kto"]


def test_methods_command_lists_conventions_and_sources(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in method_names():
        assert name in out
    assert "Diffusion-KTO" in out and "dpo-half" in out
    assert main(["methods", "show", "kto"]) == 0
    shown = capsys.readouterr().out
    assert "kto_beta" in shown and "jacklishufan/diffusion-kto" in shown


PLUGIN = '''
from dataclasses import dataclass

from rpo_bench.training.config import TrainConfig, method_field, setting
from rpo_bench.training.methods.base import Method


@dataclass
class HingeConfig(TrainConfig):
    method: str = method_field("hinge")
    hinge_margin: float = setting(0.0, "Margin of the hinge on the implicit reward difference.")


class Hinge(Method):
    name, title = "hinge", "Hinge preference"
    summary, source = "a hinge on the DPO margin", "a test"
    config = HingeConfig

    def loss(self, trainer, errors, indices):
        import torch

        margin = (errors["ref_err_w"] - errors["model_err_w"]) - (errors["ref_err_l"] - errors["model_err_l"])
        loss = torch.relu(trainer.config.hinge_margin - margin).mean()
        return loss, {"loss": loss.item()}


METHOD = Hinge()
'''


def test_a_method_from_a_package_outside_rpo_bench_trains_through_the_entry_point(preference_folder, tmp_path,  # noqa: F811
                                                                                  session_home):
    site = tmp_path / "site"
    (site / "my_methods").mkdir(parents=True)
    (site / "my_methods" / "__init__.py").write_text(PLUGIN)
    dist = site / "my_methods-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-methods\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[rpo_bench.methods]\nhinge = my_methods:METHOD\n")
    env = {**os.environ, "PYTHONPATH": str(site), "RPO_BENCH_HOME": str(session_home), "COLUMNS": "250"}
    command = [sys.executable, "-m", "rpo_bench", "train", "--model", "tiny-sd15", "--data", str(preference_folder),
               "--output", str(tmp_path / "out"), "--method", "hinge", "--hinge-margin", "0.5", "--steps", "2",
               "--pairs-per-device", "2", "--lora-rank", "4", "--device", "cpu", "--log-every", "0", "--quiet"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "out" / "rpo_bench.json").read_text())
    assert record["method"] == "hinge" and record["config"]["hinge_margin"] == 0.5
    assert record["method_title"] == "Hinge preference"
    listed = subprocess.run([sys.executable, "-m", "rpo_bench", "methods"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert "hinge" in listed.stdout and "my-methods" in listed.stdout
    assert "hinge" not in METHODS.names() or METHODS.entry("hinge").source.startswith("entry point")


# -- bad input ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("values, message", [
    (dict(method="kot"), "unknown method 'kot'; did you mean kto?"),
    (dict(method="dpo", kto_beta=10.0), "setting(s) kto_beta do not apply to method dpo (kto_beta is read by kto)"),
    (dict(method="sft", mu=0.5), "mu is read by dpo, rpo"),
    (dict(method="dpo", mu=1.0), "--mu 1.0"), (dict(method="rpo", mu=-0.1), "--mu -0.1"),
    (dict(ema_decay=1.0), "--ema-decay 1.0"), (dict(ema_decay=-0.5), "--ema-decay -0.5"),
    (dict(method="sft", winner_preserving=True), "winner_preserving is read by dpo, rpo: "),
    (dict(method="mapo", winner_preserving=True), "winner_preserving is read by dpo, rpo: "),
    (dict(method="kto", winner_preserving=True), "kto trains on single images, not pairs"),
    (dict(method="kto", positive_ratio=1.0), "--positive-ratio 1.0"),
    (dict(method="kto", kto_labels="votes"), "--kto-labels 'votes'"),
    (dict(method="mapo", mapo_beta=0.0), "--mapo-beta 0.0"),
    (dict(method="dpo", sft_weight=-1.0), "--sft-weight -1.0"),
])
def test_bad_method_settings_are_named_with_what_is_accepted(tmp_path, values, message):
    with pytest.raises(RpoBenchError) as caught:
        build_config(None, None, {"data": "d", "output": str(tmp_path), **values})
    assert message in str(caught.value)


@pytest.mark.parametrize("method", ["sft", "mapo"])
def test_winner_preserving_without_a_pair_reference_says_why(tmp_path, method):
    with pytest.raises(RpoBenchError) as caught:
        build_config(None, None, {"data": "d", "output": str(tmp_path), "method": method, "winner_preserving": True})
    why = get_method(method).refuses["winner_preserving"]
    assert why and why in str(caught.value)


def test_a_bad_method_flag_is_one_line_and_makes_no_folder(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["train", "--data", "d", "--output", str(out), "--method", "sft", "--winner-preserving"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "winner_preserving is read by dpo, rpo" in err and not out.exists()
