"""Wrong or broken weights: one line that names the file and what would be accepted, never a traceback, and
never a message that blames the wrong cause ("not on this machine" for a folder that is there but broken).

Every case breaks a copy of a tiny model (or tiny scorer) the way a user's files break: a truncated download, a
component of the other family, a JSON file cut short, a LoRA trained on another model.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rpo_bench.cli import main
from rpo_bench.core.errors import BadInputError
from rpo_bench.metrics import make_metric
from rpo_bench.metrics.tiny_scorers import ensure_tiny_scorer
from rpo_bench.models.catalog import MODELS
from rpo_bench.models.loader import load_pipeline, model_fingerprint
from rpo_bench.models.location import base_location
from rpo_bench.models.spec import ModelSpec


def _tiny(name: str) -> Path:
    return Path(base_location(MODELS.get(name)))


def _copy(source: Path, tmp_path: Path, name: str = "model") -> Path:
    target = tmp_path / name
    shutil.copytree(source, target)
    return target


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _one_line(exc: BaseException, *fragments: str) -> str:
    message = str(exc)
    assert "\n" not in message and "Traceback" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def _cli_fails(capsys, argv: list[str], *fragments: str) -> str:
    """The CLI exits with 2 and prints one `error:` line holding every fragment, and no traceback."""
    rc = main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert rc == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


# -- broken pipeline folders ---------------------------------------------------------------------------------------
def _swap_unet(other: str) -> Callable[[Path], None]:
    def swap(folder: Path) -> None:
        shutil.rmtree(folder / "unet")
        shutil.copytree(_tiny(other) / "unet", folder / "unet")

    return swap


def _write(relative: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / relative).write_text(text, encoding="utf-8")


def _edit_config(path: Path, **values) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


def _no_components(folder: Path) -> None:
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({k: v for k, v in index.items() if k.startswith("_")}))


BROKEN_FOLDERS = {
    # id: (family, break, fragments of the one line)
    "sd15-folder-with-an-sdxl-unet": ("sd15", _swap_unet("tiny-sdxl"),
                                      ("unet/config.json", "is an SDXL UNet", "accepted: an SD1.5-style UNet")),
    "sdxl-folder-with-an-sd15-unet": ("sdxl", _swap_unet("tiny-sd15"),
                                      ("unet/config.json", "SD1.x/2.x-style UNet", "accepted: an SDXL UNet")),
    "truncated-unet": ("sd15", lambda f: _truncate(f / "unet" / "diffusion_pytorch_model.safetensors"),
                       ("unet/diffusion_pytorch_model.safetensors", "truncated or corrupt")),
    "truncated-vae": ("sd15", lambda f: _truncate(f / "vae" / "diffusion_pytorch_model.safetensors"),
                      ("vae/diffusion_pytorch_model.safetensors", "truncated or corrupt")),
    "truncated-second-text-encoder": ("sdxl", lambda f: _truncate(f / "text_encoder_2" / "model.safetensors"),
                                      ("text_encoder_2/model.safetensors", "truncated or corrupt")),
    "empty-text-encoder": ("sd15", lambda f: (f / "text_encoder" / "model.safetensors").write_bytes(b""),
                           ("text_encoder/model.safetensors is empty",)),
    "garbage-unet": ("sd15", lambda f: (f / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(
        random.Random(4096).randbytes(4096)),
                     ("unet/diffusion_pytorch_model.safetensors", "not a readable safetensors file")),
    "model-index-without-components": ("sd15", _no_components, ("model_index.json lists no unet",)),
    "model-index-not-json": ("sd15", _write("model_index.json", '{"_class_name": "StableDiffusionPipeline",'),
                             ("model_index.json is not valid JSON",)),
    "model-index-a-list": ("sd15", _write("model_index.json", "[]"), ("model_index.json holds a JSON list",)),
    "component-folder-missing": ("sd15", lambda f: shutil.rmtree(f / "vae"), ("/vae is missing",)),
    "unet-config-missing": ("sd15", lambda f: (f / "unet" / "config.json").unlink(),
                            ("unet/config.json does not exist",)),
    "unet-config-not-json": ("sd15", _write("unet/config.json", "{"), ("unet/config.json is not valid JSON",)),
    "scheduler-config-not-json": ("sd15", _write("scheduler/scheduler_config.json", "nope"),
                                  ("scheduler/scheduler_config.json is not valid JSON",)),
    "unet-for-another-text-encoder": ("sd15", lambda f: _edit_config(f / "unet" / "config.json",
                                                                     cross_attention_dim=48),
                                      ("has cross_attention_dim 48, but its text encoder gives 32",)),
    "sdxl-unet-with-the-wrong-added-embedding": ("sdxl", lambda f: _edit_config(
        f / "unet" / "config.json", projection_class_embeddings_input_dim=99),
        ("projection_class_embeddings_input_dim 99", "= 80")),
    "inpainting-unet": ("sd15", lambda f: _edit_config(f / "unet" / "config.json", in_channels=9),
                        ("takes 9 input channels, but the VAE makes 4-channel latents",)),
    "pipeline-of-the-other-family": ("sd15", lambda f: shutil.copytree(_tiny("tiny-sdxl"), f, dirs_exist_ok=True),
                                     ("describes a StableDiffusionXLPipeline", "family is sd15")),
}


@pytest.mark.parametrize("case", sorted(BROKEN_FOLDERS))
def test_a_broken_pipeline_folder_is_one_line_naming_the_file(case, tmp_path):
    family, breaks, fragments = BROKEN_FOLDERS[case]
    folder = _copy(_tiny(f"tiny-{family}"), tmp_path)
    breaks(folder)
    spec = ModelSpec(name="mine", family=family, repo=str(folder))
    with pytest.raises(BadInputError) as loading:
        load_pipeline(spec)
    message = _one_line(loading.value, "model 'mine'", "accepted: ", *fragments)
    assert "not on this machine" not in message and "rpo-bench download" not in message
    # the fingerprint (the first thing evaluate and train compute) refuses the folder the same way, up front
    with pytest.raises(BadInputError) as fingerprinting:
        model_fingerprint(spec)
    assert str(fingerprinting.value) == message


def test_a_loaded_pipeline_is_checked_too():
    """Hub checkpoints have no config on disk before the load: the same check runs on the loaded pipeline."""
    from rpo_bench.models.model_files import check_unet_fits

    pipe = load_pipeline(MODELS.get("tiny-sd15"))
    check_unet_fits(pipe, MODELS.get("tiny-sd15"), "org/repo")
    with pytest.raises(BadInputError) as caught:
        check_unet_fits(pipe, ModelSpec(name="hub", family="sdxl", repo="org/repo"), "org/repo")
    _one_line(caught.value, "model 'hub': org/repo/unet/config.json is an SD1.x/2.x-style UNet")


def test_train_on_a_broken_folder_gives_the_same_line_and_writes_nothing(capsys, tmp_path):
    folder = _copy(_tiny("tiny-sd15"), tmp_path)
    _swap_unet("tiny-sdxl")(folder)
    out = tmp_path / "out"
    _cli_fails(capsys, ["train", "--model", str(folder), "--data", "d", "--output", str(out), "--quiet"],
               f"{folder}/unet/config.json is an SDXL UNet")
    assert not out.exists()


def test_evaluate_on_a_truncated_unet_names_the_file(capsys, tmp_path):
    folder = _copy(_tiny("tiny-sd15"), tmp_path)
    _truncate(folder / "unet" / "diffusion_pytorch_model.safetensors")
    _cli_fails(capsys, ["evaluate", "--models", str(folder), "--prompts", "smoke", "--metrics", "tiny-clip",
                        "--store", str(tmp_path / "r.sqlite"), "--image-cache", str(tmp_path / "images")],
               f"{folder}/unet/diffusion_pytorch_model.safetensors is not a readable safetensors file")


# -- UNet / VAE overrides -----------------------------------------------------------------------------------------
def _override(tmp_path: Path, prepare: Callable[[Path], Path]) -> ModelSpec:
    folder = prepare(tmp_path)
    return ModelSpec(name="mixed", family="sd15", tiny="tiny-sd15", unet_repo=str(folder), unet_subfolder="unet")


OVERRIDES = {
    "sdxl-unet-into-sd15": (lambda tmp: _tiny("tiny-sdxl"), ("is an SDXL UNet",)),
    "config-missing": (lambda tmp: _broken_unet(tmp, lambda u: (u / "config.json").unlink()),
                       ("unet override: ", "unet/config.json does not exist")),
    "config-not-json": (lambda tmp: _broken_unet(tmp, lambda u: (u / "config.json").write_text("{oops")),
                        ("unet override: ", "unet/config.json is not valid JSON")),
    "folder-absent": (lambda tmp: tmp / "nowhere", ("unet override", "nowhere is not a folder")),
}


def _broken_unet(tmp_path: Path, breaks: Callable[[Path], None]) -> Path:
    folder = tmp_path / "override"
    shutil.copytree(_tiny("tiny-sd15") / "unet", folder / "unet")
    breaks(folder / "unet")
    return folder


@pytest.mark.parametrize("case", sorted(OVERRIDES))
def test_a_bad_unet_override_is_one_line_naming_it(case, tmp_path):
    prepare, fragments = OVERRIDES[case]
    spec = _override(tmp_path, prepare)
    with pytest.raises(BadInputError) as caught:
        load_pipeline(spec)
    message = _one_line(caught.value, "model 'mixed'", *fragments)
    assert "not on this machine" not in message


def test_a_truncated_vae_override_names_the_file(tmp_path):
    folder = tmp_path / "vae-override"
    shutil.copytree(_tiny("tiny-sd15") / "vae", folder)
    _truncate(folder / "diffusion_pytorch_model.safetensors")
    spec = ModelSpec(name="mixed", family="sd15", tiny="tiny-sd15", vae_repo=str(folder))
    with pytest.raises(BadInputError) as caught:
        model_fingerprint(spec)
    _one_line(caught.value, "vae override", f"{folder}/diffusion_pytorch_model.safetensors", "truncated")


# -- LoRA ---------------------------------------------------------------------------------------------------------
def _lora(tmp_path: Path, family: str, diffusers_format: bool = False) -> Path:
    """A LoRA of `family`'s tiny UNet; `diffusers_format` writes lora.down/up names as `rpo-bench train` does."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = load_pipeline(MODELS.get(f"tiny-{family}"))
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = get_peft_model_state_dict(pipe.unet)
    if diffusers_format:
        layers = convert_state_dict_to_diffusers(layers)
    folder = tmp_path / f"lora-{family}{'-diffusers' if diffusers_format else ''}"
    type(pipe).save_lora_weights(folder, unet_lora_layers=layers)
    return folder


def _lora_spec(family: str, lora: Path, weight_name: str = "pytorch_lora_weights.safetensors") -> ModelSpec:
    return ModelSpec(name="with-lora", family=family, tiny=f"tiny-{family}", lora_repo=str(lora),
                     lora_weight_name=weight_name)


@pytest.mark.parametrize("family,other", [("sd15", "sdxl"), ("sdxl", "sd15")])
def test_a_lora_of_the_other_family_is_one_line(family, other, tmp_path):
    lora = _lora(tmp_path, other)
    with pytest.raises(BadInputError) as caught:
        load_pipeline(_lora_spec(family, lora))
    _one_line(caught.value, f"LoRA {lora}/pytorch_lora_weights.safetensors does not fit the {family} UNet",
              "has shape", "accepted: ")


@pytest.mark.parametrize("diffusers_format", [False, True], ids=["peft-names", "diffusers-names"])
def test_a_lora_of_the_right_family_still_loads(diffusers_format, tmp_path):
    pipe = load_pipeline(_lora_spec("sd15", _lora(tmp_path, "sd15", diffusers_format)))
    assert any("lora" in name for name, _ in pipe.unet.named_parameters())


@pytest.mark.parametrize("tensors,fragment", [
    ({"encoder.weight": (3, 3), "head.bias": (3,)}, "is not a LoRA: 2 of its 2 tensor names lack 'lora' "
                                                    "(e.g. encoder.weight, head.bias)"),
    ({"foo.bar.weight": (4, 4), "unet.x.lora_A.weight": (2, 8)}, "is not a LoRA: 1 of its 2 tensor names lack"),
    ({"down_blocks.1.attentions.0.proj_in.lora_A.weight": (4, 64)}, "holds no LoRA weights for the UNet"),
])
def test_a_safetensors_file_that_is_not_a_usable_lora_is_named(tensors, fragment, tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "not-lora"
    folder.mkdir()
    save_file({name: torch.zeros(shape) for name, shape in tensors.items()},
              str(folder / "pytorch_lora_weights.safetensors"))
    with pytest.raises(BadInputError) as caught:
        model_fingerprint(_lora_spec("sd15", folder))
    _one_line(caught.value, f"LoRA {folder}/pytorch_lora_weights.safetensors {fragment}")


def test_a_truncated_or_absent_lora_file_is_named_not_called_missing_weights(tmp_path):
    lora = _lora(tmp_path, "sd15")
    _truncate(lora / "pytorch_lora_weights.safetensors")
    with pytest.raises(BadInputError) as caught:
        load_pipeline(_lora_spec("sd15", lora))
    _one_line(caught.value, f"{lora}/pytorch_lora_weights.safetensors is not a readable safetensors file")
    with pytest.raises(BadInputError) as absent:
        load_pipeline(_lora_spec("sd15", lora, weight_name="other.safetensors"))
    message = _one_line(absent.value, f"{lora}/other.safetensors does not exist")
    assert "not on this machine" not in message


# -- scorer checkpoints -------------------------------------------------------------------------------------------
def _scorer_copy(tmp_path: Path, scorer: str) -> Path:
    return _copy(ensure_tiny_scorer(f"tiny-{scorer}", 0), tmp_path, "weights")


CHECKPOINT_FILES = {"hpsv2": "HPS_v2_compressed.pt", "imagereward": "ImageReward.pt",
                    "aesthetic": "sac+logos+ava1-l14-linearMSE.pth"}


def _pth_arg(scorer: str, folder: Path) -> str:
    return f"{scorer}:{folder / CHECKPOINT_FILES[scorer] if scorer == 'hpsv2' else folder}"


def _corrupt(kind: str, path: Path) -> None:
    if kind == "random-bytes":
        # seeded: os.urandom started with pickle's protocol byte 0x80 once in 256 runs, a different failure
        path.write_bytes(random.Random(2048).randbytes(2048))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        _truncate(path)
    else:  # a directory where the file should be
        path.unlink()
        path.mkdir()


CORRUPTIONS = {"random-bytes": "is not a PyTorch checkpoint (cannot be read: neither a zip archive nor a pickle",
               "empty": "is empty", "truncated": "(cannot be read, truncated or corrupt",
               "directory": "is a directory, not a file"}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
@pytest.mark.parametrize("scorer", sorted(CHECKPOINT_FILES))
def test_an_unreadable_scorer_checkpoint_is_not_called_a_pickle_that_runs_code(scorer, kind, tmp_path):
    folder = _scorer_copy(tmp_path, scorer)
    _corrupt(kind, folder / CHECKPOINT_FILES[scorer])
    # hpsv2 takes the file or its folder; a directory in the file's place is only reachable through the folder
    argument = f"{scorer}:{folder}" if kind == "directory" else _pth_arg(scorer, folder)
    with pytest.raises(BadInputError) as caught:
        make_metric(argument).load("cpu", torch.float32)
    message = _one_line(caught.value, CHECKPOINT_FILES[scorer], CORRUPTIONS[kind], "accepted: ")
    assert "would run code" not in message and "refused" not in message


def test_a_legacy_format_checkpoint_still_loads(tmp_path):
    """torch.save's pre-1.6 format is a bare pickle, not a zip: the format sniffing must let it through."""
    folder = _scorer_copy(tmp_path, "aesthetic")
    head = folder / CHECKPOINT_FILES["aesthetic"]
    torch.save(torch.load(head, weights_only=True), head, _use_new_zipfile_serialization=False)
    assert not head.read_bytes().startswith(b"PK")
    legacy, reference = make_metric(f"aesthetic:{folder}"), make_metric("tiny-aesthetic")
    for metric in (legacy, reference):
        metric.load("cpu", torch.float32)
    from PIL import Image

    images = [Image.new("RGB", (40, 30), color) for color in ("red", "navy")]
    assert legacy.score(images, ["", ""]) == reference.score(images, ["", ""])


def test_garbage_that_starts_like_a_pickle_is_unreadable_not_refused(tmp_path):
    folder = _scorer_copy(tmp_path, "aesthetic")
    (folder / CHECKPOINT_FILES["aesthetic"]).write_bytes(b"\x80\x02" + bytes(range(200, 256)) * 4)
    with pytest.raises(BadInputError) as caught:
        make_metric(f"aesthetic:{folder}").load("cpu", torch.float32)
    message = _one_line(caught.value, "is not a PyTorch checkpoint (cannot be read: ")
    assert "would run code" not in message


def test_score_with_a_garbage_scorer_checkpoint_says_what_it_is(capsys, tmp_path):
    from PIL import Image

    folder = _scorer_copy(tmp_path, "hpsv2")
    checkpoint = folder / CHECKPOINT_FILES["hpsv2"]
    _corrupt("random-bytes", checkpoint)
    Image.new("RGB", (32, 32), "red").save(tmp_path / "red.png")
    line = _cli_fails(capsys, ["score", str(tmp_path / "red.png"), "--prompt", "a red square", "--metrics",
                               f"hpsv2:{checkpoint}", "--device", "cpu", "--out", str(tmp_path / "s.jsonl")],
                      f"{checkpoint} is not a PyTorch checkpoint (cannot be read")
    assert "would run code" not in line


def test_pickscore_truncated_weights_and_a_file_argument_are_named(tmp_path):
    folder = _scorer_copy(tmp_path, "pickscore")
    _truncate(folder / "model.safetensors")
    with pytest.raises(BadInputError) as caught:
        make_metric(f"pickscore:{folder}").load("cpu", torch.float32)
    _one_line(caught.value, f"{folder}/model.safetensors is not a readable safetensors file")
    with pytest.raises(BadInputError) as file_arg:
        make_metric(f"pickscore:{folder / 'config.json'}").load("cpu", torch.float32)
    _one_line(file_arg.value, "config.json is a file", "accepted: a transformers CLIPModel folder")


def test_pickscore_folder_of_another_model_type_is_named(tmp_path):
    folder = _scorer_copy(tmp_path, "pickscore")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(BadInputError) as caught:
        make_metric(f"pickscore:{folder}").load("cpu", torch.float32)
    _one_line(caught.value, "is not a CLIP model folder: its config.json has model_type 'bert'")


def test_aesthetic_truncated_clip_is_named(tmp_path):
    from rpo_bench.metrics.aesthetic import CLIP_SUBFOLDER

    folder = _scorer_copy(tmp_path, "aesthetic")
    clip = folder / CLIP_SUBFOLDER
    if not clip.is_dir():
        pytest.skip("the tiny aesthetic variant keeps its CLIP elsewhere")
    _truncate(clip / "model.safetensors")
    with pytest.raises(BadInputError) as caught:
        make_metric(f"aesthetic:{folder}").load("cpu", torch.float32)
    _one_line(caught.value, f"{clip}/model.safetensors is not a readable safetensors file")


def test_hps_architecture_config_that_is_not_json_is_named(tmp_path):
    from rpo_bench.metrics.hps import ARCH_CONFIG_FILE

    folder = _scorer_copy(tmp_path, "hpsv2")
    if not (folder / ARCH_CONFIG_FILE).is_file():
        pytest.skip("the tiny HPS variant has no architecture config beside it")
    (folder / ARCH_CONFIG_FILE).write_text("{")
    with pytest.raises(BadInputError) as caught:
        make_metric(_pth_arg("hpsv2", folder)).load("cpu", torch.float32)
    _one_line(caught.value, f"{ARCH_CONFIG_FILE} is not valid JSON")
    (folder / ARCH_CONFIG_FILE).write_text('{"model_cfg": {"embed_dim": 8}}')
    with pytest.raises(BadInputError) as incomplete:
        make_metric(_pth_arg("hpsv2", folder)).load("cpu", torch.float32)
    _one_line(incomplete.value, "has no model_cfg with vision_cfg and text_cfg")


def test_imagereward_med_config_without_a_field_is_named(tmp_path):
    folder = _scorer_copy(tmp_path, "imagereward")
    med = json.loads((folder / "med_config.json").read_text())
    del med["hidden_size"]
    (folder / "med_config.json").write_text(json.dumps(med))
    with pytest.raises(BadInputError) as caught:
        make_metric(f"imagereward:{folder}").load("cpu", torch.float32)
    _one_line(caught.value, "med_config.json lacks or mistypes 'hidden_size'")
    (folder / "med_config.json").unlink()
    (folder / "med_config.json").mkdir()
    with pytest.raises(BadInputError) as directory:
        make_metric(f"imagereward:{folder}").load("cpu", torch.float32)
    _one_line(directory.value, "med_config.json is a directory")


# -- CLIP backbones -----------------------------------------------------------------------------------------------
def _tiny_clip_copy(tmp_path: Path) -> Path:
    return _copy(Path(make_metric("tiny-clip").backbone_source()), tmp_path, "clip")


def _drop_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        (folder / name).unlink(missing_ok=True)


CLIP_FOLDERS = {
    "no-config": (lambda f: (f / "config.json").unlink(), "is not a CLIP model folder: no config.json"),
    "another-model-type": (lambda f: (f / "config.json").write_text(json.dumps(
        {**json.loads((f / "config.json").read_text()), "model_type": "bert"})),
        "is not a CLIP model folder: its config.json has model_type 'bert'"),
    "truncated-weights": (lambda f: _truncate(f / "model.safetensors"),
                          "model.safetensors is not a readable safetensors file"),
    "no-tokenizer": (_drop_tokenizer, "has no tokenizer files"),
}


@pytest.mark.parametrize("case", sorted(CLIP_FOLDERS))
def test_a_local_folder_that_is_not_a_clip_is_not_called_missing(case, tmp_path):
    folder = _tiny_clip_copy(tmp_path)
    breaks, fragment = CLIP_FOLDERS[case]
    breaks(folder)
    metric = make_metric(f"clip:{folder}")
    for step in (lambda: metric.version, lambda: metric.load("cpu", torch.float32)):
        with pytest.raises(BadInputError) as caught:
            step()
        message = _one_line(caught.value, str(folder), fragment, "accepted: ")
        assert "not on this machine" not in message and "download" not in message


def test_clip_path_that_does_not_exist_says_so(capsys, tmp_path):
    _cli_fails(capsys, ["evaluate", "--models", "tiny-sd15", "--prompts", "smoke", "--metrics",
                        f"clip:{tmp_path / 'nowhere'}", "--store", str(tmp_path / "r.sqlite"),
                        "--image-cache", str(tmp_path / "images")],
               f"{tmp_path / 'nowhere'} does not exist")


@pytest.mark.parametrize("source,fragment", [
    ("ViT-Q-32/laion2b_s34b_b79k", "unknown open_clip architecture 'ViT-Q-32'; did you mean"),
    ("ViT-B-32/laion2c", "'laion2c' is not a pretrained tag of ViT-B-32"),
    ("ViT-B-32//nowhere/weights.pt", "/nowhere/weights.pt does not exist"),
])
def test_open_clip_names_are_checked_before_anything_loads(source, fragment):
    with pytest.raises(BadInputError) as caught:
        make_metric(f"clip:open_clip:{source}").version  # noqa: B018 - the version resolves the weights
    _one_line(caught.value, fragment)


@pytest.mark.slow
def test_open_clip_garbage_checkpoint_file_is_unreadable_not_missing(tmp_path):
    garbage = tmp_path / "weights.pt"
    garbage.write_bytes(random.Random(1024).randbytes(1024))  # seeded: the same bytes on every run
    with pytest.raises(BadInputError) as caught:
        make_metric(f"clip:open_clip:ViT-S-32/{garbage}").load("cpu", torch.float32)
    message = _one_line(caught.value, f"{garbage} is not a PyTorch checkpoint (cannot be read")
    assert "not on this machine" not in message


# -- fingerprints -------------------------------------------------------------------------------------------------
def _old_fingerprint(folder: Path) -> str:
    """The fingerprint as rpo-bench computed it before the walk was rewritten: cache keys must not move."""
    folder = folder.resolve()
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n"
                      .encode())
    return digest.hexdigest()


def test_fingerprints_are_unchanged_and_odd_entries_do_not_crash(tmp_path, rpo_home):
    from rpo_bench.models.fingerprint import folder_fingerprint

    folder = _copy(_tiny("tiny-sd15"), tmp_path)
    (folder / ".hidden").write_text("ignored")
    (folder / "sub" / ".cache").mkdir(parents=True)
    (folder / "sub" / ".cache" / "kept.txt").write_text("a file inside a hidden folder counts, as it always did")
    (folder / "dangling").symlink_to(tmp_path / "gone")
    (folder / "loop").symlink_to(folder / "loop")
    (folder / "parent-link").symlink_to(folder)  # a directory link is not followed, or the walk would not end
    (folder / "linked-file").symlink_to(folder / "model_index.json")  # Hub snapshots are file links
    os.mkfifo(folder / "pipe")  # a reader would block forever on it: not a file, skipped
    assert folder_fingerprint(folder) == _old_fingerprint(folder)
    (rpo_home / "file-hashes.json").write_text("[1, 2, 3]")  # a damaged memo is only a cache: rebuilt
    assert folder_fingerprint(folder) == _old_fingerprint(folder)


def test_an_unreadable_file_in_a_folder_is_one_line_naming_it(tmp_path):
    from rpo_bench.models.fingerprint import folder_fingerprint

    if not Path("/proc/self/mem").is_file():
        pytest.skip("needs /proc/self/mem, a regular file whose reads fail (unreadable even for root)")
    folder = _copy(_tiny("tiny-sd15"), tmp_path)
    (folder / "unreadable.bin").symlink_to("/proc/self/mem")
    with pytest.raises(BadInputError) as caught:
        folder_fingerprint(folder)
    _one_line(caught.value, f"{folder}/unreadable.bin", "cannot be read")


def test_fingerprinting_a_file_as_a_folder_is_refused(tmp_path):
    from rpo_bench.models.fingerprint import file_fingerprint, folder_fingerprint

    (tmp_path / "weights.pt").write_bytes(b"x")
    with pytest.raises(BadInputError, match="is not a folder"):
        folder_fingerprint(tmp_path / "weights.pt")
    with pytest.raises(BadInputError, match="is not a file"):
        file_fingerprint(tmp_path)


# -- LoRA targets for training ------------------------------------------------------------------------------------
def test_lora_targets_that_name_no_layer_are_refused_before_peft_runs():
    from rpo_bench.training.unet_setup import lora_target_modules

    unet = load_pipeline(MODELS.get("tiny-sd15")).unet
    assert lora_target_modules(unet, "to_q, to_k,attn1.to_v") == ["to_q", "to_k", "attn1.to_v"]
    for targets, bad in (("to_q,to_qq", "to_qq"), ("time_embedding", "time_embedding")):
        with pytest.raises(BadInputError) as caught:
            lora_target_modules(unet, targets)
        _one_line(caught.value, f"--lora-targets {targets!r}: {bad!r} names no Linear or Conv2d layer",
                  "such as to_q, to_k, to_v, to_out.0")
    assert not hasattr(unet, "peft_config")  # nothing was added: the UNet is still usable
