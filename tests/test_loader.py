"""The loader on local folders: paths as model names, component overrides, LoRA, fingerprints, bad folders."""

from __future__ import annotations

import shutil

import pytest
import torch

from rpo_bench.core.errors import BadInputError, MissingWeightsError
from rpo_bench.models.catalog import MODELS, resolve_model
from rpo_bench.models.loader import load_pipeline, model_fingerprint
from rpo_bench.models.location import base_location
from rpo_bench.models.spec import ModelSpec


@pytest.fixture
def tiny_folders():
    return {name: base_location(MODELS.get(name)) for name in ("tiny-sd15", "tiny-sd15-alt", "tiny-sdxl")}


def _unet_weights(pipe):
    return pipe.unet.conv_in.weight.detach().clone()


def test_a_local_folder_is_accepted_wherever_a_model_name_is(tiny_folders, tmp_path):
    copy = tmp_path / "my-model"
    shutil.copytree(tiny_folders["tiny-sdxl"], copy)
    spec = resolve_model(str(copy))
    assert spec.family == "sdxl" and spec.repo == str(copy.resolve())
    assert type(load_pipeline(spec)).__name__ == "StableDiffusionXLPipeline"
    # the fingerprint follows the bytes, not the name: same files, same fingerprint as the registry entry
    assert model_fingerprint(spec) == model_fingerprint(MODELS.get("tiny-sdxl"))


def test_fingerprint_changes_when_a_weight_file_changes(tiny_folders, tmp_path):
    copy = tmp_path / "retrained"
    shutil.copytree(tiny_folders["tiny-sd15"], copy)
    before = model_fingerprint(resolve_model(str(copy)))
    (copy / "unet" / "config.json").write_text((copy / "unet" / "config.json").read_text() + " ")
    assert model_fingerprint(resolve_model(str(copy))) != before


def test_unet_and_vae_overrides_replace_only_those_components(tiny_folders):
    base = load_pipeline(MODELS.get("tiny-sd15"))
    alt = load_pipeline(MODELS.get("tiny-sd15-alt"))
    spec = ModelSpec(name="mixed", family="sd15", repo=tiny_folders["tiny-sd15"],
                     unet_repo=tiny_folders["tiny-sd15-alt"], unet_subfolder="unet",
                     vae_repo=tiny_folders["tiny-sd15-alt"], vae_subfolder="vae")
    mixed = load_pipeline(spec)
    assert torch.equal(_unet_weights(mixed), _unet_weights(alt))
    assert torch.equal(mixed.vae.encoder.conv_in.weight, alt.vae.encoder.conv_in.weight)
    assert torch.equal(mixed.text_encoder.get_input_embeddings().weight,
                       base.text_encoder.get_input_embeddings().weight)
    assert model_fingerprint(spec) not in {model_fingerprint(MODELS.get("tiny-sd15")),
                                           model_fingerprint(MODELS.get("tiny-sd15-alt"))}


def test_lora_from_a_local_folder_changes_the_unet_output(tiny_folders, tmp_path):
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = load_pipeline(MODELS.get("tiny-sd15"))
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():  # a fresh LoRA is a no-op (B = 0); give it weights as training would
        for name, parameter in pipe.unet.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
    StableDiffusionPipeline.save_lora_weights(tmp_path / "lora", unet_lora_layers=get_peft_model_state_dict(pipe.unet))
    spec = ModelSpec(name="with-lora", family="sd15", tiny="tiny-sd15", lora_repo=str(tmp_path / "lora"),
                     lora_weight_name="pytorch_lora_weights.safetensors")
    with_lora = load_pipeline(spec)
    plain = load_pipeline(MODELS.get("tiny-sd15"))
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    out_lora = with_lora.unet(sample, 10, encoder_hidden_states=context).sample
    out_plain = plain.unet(sample, 10, encoder_hidden_states=context).sample
    assert not torch.allclose(out_lora, out_plain)
    assert model_fingerprint(spec) != model_fingerprint(MODELS.get("tiny-sd15"))


def test_a_folder_without_model_index_is_refused(tmp_path):
    with pytest.raises(BadInputError, match="not a diffusers pipeline folder"):
        resolve_model(str(tmp_path))


def test_hub_weights_missing_offline_fail_with_one_line():
    with pytest.raises(MissingWeightsError) as info:
        model_fingerprint(MODELS.get("sdxl-dpo"))
    message = str(info.value)
    assert "stabilityai/stable-diffusion-xl-base-1.0/model_index.json" in message
    assert "`rpo-bench download sdxl-dpo`" in message
    assert "\n" not in message
