"""Training end to end on tiny models: every method, LoRA and full, SD1.5 and SDXL; outputs load and evaluate;
configs, presets and bad input."""

from __future__ import annotations

import gc
import json
import logging

import pytest
import torch

from rpo_bench.core.errors import BadInputError, RpoBenchError
from rpo_bench.training.config import build_config, read_config_file
from rpo_bench.training.methods.rpo import RPOConfig
from rpo_bench.training.trainer import Trainer


@pytest.fixture(scope="session")
def preference_folder(tmp_path_factory, session_home):
    """AI-feedback pairs from tiny-sd15 judged by tiny-clip: the same `pairs` path users take."""
    import os

    os.environ["RPO_BENCH_HOME"] = str(session_home)
    from rpo_bench.training.pairs import make_pairs

    out = tmp_path_factory.mktemp("prefs") / "pairs"
    make_pairs(model="tiny-sd15", prompts="smoke", metric="tiny-clip", out_dir=out, k=2, mode="best-worst",
               show_progress=False)
    return out


def _config(preference_folder, tmp_path, **values):
    defaults = dict(model="tiny-sd15", data=str(preference_folder), output=str(tmp_path / "out"), steps=2,
                    pairs_per_device=3, lr=1e-3, lora_rank=4, device="cpu", log_every=0, beta=500.0)
    defaults.update(values)
    if defaults.get("method") == "sft":
        defaults.pop("beta")
    return build_config(None, None, defaults)


def _unet_count() -> int:
    from diffusers import UNet2DConditionModel

    gc.collect()
    return sum(type(o) is UNet2DConditionModel for o in gc.get_objects())


@pytest.mark.parametrize("family_model", ["tiny-sd15", "tiny-sdxl"])
@pytest.mark.parametrize("lora_rank", [4, 0], ids=["lora", "full"])
@pytest.mark.parametrize("method", ["sft", "dpo", "rpo"])
def test_each_method_trains(preference_folder, tmp_path, method, lora_rank, family_model):
    config = _config(preference_folder, tmp_path, method=method, lora_rank=lora_rank, model=family_model)
    trainer = Trainer(config, show_progress=False)
    trainer.setup()
    unet = trainer.accelerator.unwrap_model(trainer.unet)
    trained_before = {n: p.detach().clone() for n, p in unet.named_parameters() if p.requires_grad}
    base_before = {n: p.detach().clone() for n, p in unet.named_parameters() if not p.requires_grad}
    reference_before = ({n: p.detach().clone() for n, p in trainer.reference.named_parameters()}
                        if trainer.reference is not None else None)
    trainer.setup = lambda: None  # already set up: train() runs the loop on this very object
    result = trainer.train()
    assert len(result.history) == 2
    assert all(torch.isfinite(torch.tensor(record["loss"])) for record in result.history)
    changed = [n for n, p in unet.named_parameters() if p.requires_grad and not torch.equal(p, trained_before[n])]
    assert changed, "no trained parameter changed"
    assert all(torch.equal(p, base_before[n]) for n, p in unet.named_parameters() if not p.requires_grad)
    if lora_rank:
        assert all("lora" in n for n in trained_before)
        assert trainer.reference is None
        assert _unet_count() == 1, "a LoRA run must not hold a second UNet"
        assert (tmp_path / "out" / "pytorch_lora_weights.safetensors").is_file()
    else:
        assert (tmp_path / "out" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
        if method == "sft":
            assert trainer.reference is None
        else:
            assert all(torch.equal(p, reference_before[n]) for n, p in trainer.reference.named_parameters())
    record = json.loads((tmp_path / "out" / "rpo_bench.json").read_text())
    assert record["method"] == method and record["steps_done"] == 2
    assert record["beta_convention"] == (None if method == "sft" else "dpo-half")
    if method != "sft":
        assert {"acc_diag", "reward_margin", "d_w_mean", "d_l_mean"} <= set(result.history[0])
    if method == "rpo":
        assert {"weight_entropy", "acc_offdiag", "weight_diag_mean"} <= set(result.history[0])


@pytest.mark.parametrize("lora_rank", [4, 0], ids=["lora", "full"])
def test_trained_outputs_load_and_evaluate(preference_folder, tmp_path, lora_rank):
    from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate
    from rpo_bench.models.catalog import resolve_model

    config = _config(preference_folder, tmp_path, method="dpo", lora_rank=lora_rank, name=f"my-dpo-{lora_rank}")
    Trainer(config, show_progress=False).train()
    output = tmp_path / "out"
    spec = resolve_model(str(output))
    assert (spec.lora_repo if lora_rank else spec.unet_repo) == str(output.resolve())
    result = evaluate(EvaluateConfig(models=(str(output), f"my-dpo-{lora_rank}", "tiny-sd15"), prompts="smoke",
                                     metrics=("tiny-clip",), seeds=(0,), store=tmp_path / "r.sqlite",
                                     image_cache=tmp_path / "images", show_progress=False))
    by_model = {row.model: row.mean for row in result.summary}
    assert by_model[str(output.resolve())] == pytest.approx(by_model[f"my-dpo-{lora_rank}"])  # same weights
    assert by_model[str(output.resolve())] != by_model["tiny-sd15"]  # trained weights make other images
    assert result.generated == 16  # the registered name shares the folder's images: same fingerprint


def test_resume_refuses_another_config(preference_folder, tmp_path):
    Trainer(_config(preference_folder, tmp_path, method="dpo"), show_progress=False).train()
    with pytest.raises(BadInputError, match="already holds a run"):
        Trainer(_config(preference_folder, tmp_path, method="dpo"), show_progress=False)
    other = _config(preference_folder, tmp_path, method="dpo", lr=5e-4, steps=3)
    with pytest.raises(BadInputError, match=r"another config \(lr: 0.001 then, 0.0005 now"):
        Trainer(other, resume=True, show_progress=False).train()


def test_rpo_with_one_pair_per_device_warns_that_it_is_dpo(preference_folder, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        Trainer(_config(preference_folder, tmp_path, pairs_per_device=1), show_progress=False)
    assert "equals DPO" in caplog.text


@pytest.mark.parametrize("values, message", [
    (dict(beta=0.0), "--beta 0.0"), (dict(beta=-1.0), "--beta -1.0"), (dict(tau=0.0), "--tau 0.0"),
    (dict(method="ppo"), "unknown method 'ppo'"), (dict(embed_mode="audio"), "--embed-mode 'audio'"),
    (dict(method="dpo", tau=0.5), "tau do not apply to method dpo"), (dict(optimizer="sgd"), "--optimizer 'sgd'"),
    (dict(pairs_per_device=0), "--pairs-per-device 0"), (dict(data=""), "--data is required"),
])
def test_bad_settings_are_named(tmp_path, values, message):
    base = dict(data="d", output=str(tmp_path))
    with pytest.raises(RpoBenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_config(None, None, {**base, **values})


def test_config_file_preset_and_flags_precedence(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[train]\nmethod = "rpo"\ntau = 0.25\nlr = 3e-5\ndata = "d"\noutput = "o"\n')
    yaml = tmp_path / "c.yaml"
    yaml.write_text("method: rpo\ntau: 0.25\nlr: 3.0e-5\ndata: d\noutput: o\n")
    assert read_config_file(toml) == read_config_file(yaml)
    config = build_config("dpo-sd15-official", read_config_file(toml), {"lr": 1e-6, "tau": None})
    assert isinstance(config, RPOConfig)
    assert (config.tau, config.lr, config.beta, config.grad_accum, config.caption_dropout) == (0.25, 1e-6, 5000.0,
                                                                                              128, 0.2)
    with pytest.raises(BadInputError, match="unknown preset 'dpo-sd15'; did you mean dpo-sd15-official"):
        build_config("dpo-sd15", None, {"data": "d", "output": "o"})


def test_snapshots_are_evaluable_models_of_the_steps_so_far(preference_folder, tmp_path):
    from safetensors.torch import load_file

    from rpo_bench.models.catalog import resolve_model

    config = _config(preference_folder, tmp_path, method="dpo", lora_rank=4, steps=4, snapshot_every=2)
    Trainer(config, show_progress=False).train()
    output = tmp_path / "out"
    snapshots = sorted(p.name for p in (output / "snapshots").iterdir())
    assert snapshots == ["step-2"]  # the final step is the output itself
    snapshot = output / "snapshots" / "step-2"
    assert json.loads((snapshot / "rpo_bench.json").read_text())["steps_done"] == 2
    assert resolve_model(str(snapshot)).lora_repo == str(snapshot.resolve())
    early, final = (load_file(p / "pytorch_lora_weights.safetensors") for p in (snapshot, output))
    assert any(not torch.equal(early[k], final[k]) for k in final)  # two more steps moved the weights
    # the same run without snapshots ends with the same weights: a snapshot changes nothing
    plain = _config(preference_folder, tmp_path / "plain", method="dpo", lora_rank=4, steps=4)
    Trainer(plain, show_progress=False).train()
    again = load_file(tmp_path / "plain" / "out" / "pytorch_lora_weights.safetensors")
    assert all(torch.equal(again[k], final[k]) for k in final)
