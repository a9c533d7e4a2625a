"""Tiny real-architecture models: the offline stand-ins that exercise the real loading and sampling code."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before any Hugging Face import: a hub call must fail fast

import hashlib
import warnings
from pathlib import Path

import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer

from rpo_bench.core.errors import UnknownNameError
from rpo_bench.models.tiny import TINY_BUILDERS, ensure_tiny_model
from rpo_bench.models.tokenizer import clip_tokenizer, write_clip_tokenizer_files

PROMPTS = [
    "a photo of a cat",
    "An astronaut riding a horse on Mars, 4k, trending on artstation!!",
    "it's   a café's naïve 3.14 东京 😀 <tag> don't",
    "",
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def open_clip_tokenizer() -> SimpleTokenizer:
    return SimpleTokenizer()


@pytest.mark.parametrize("prompt", PROMPTS)
def test_tokenizer_matches_open_clip(prompt, open_clip_tokenizer):
    ref = open_clip_tokenizer
    assert clip_tokenizer()(prompt).input_ids == [ref.sot_token_id, *ref.encode(prompt), ref.eot_token_id]


def test_tokenizer_known_ids_and_vocabulary():
    tok = clip_tokenizer()
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tok) == 49408
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (49406, 49407, 49407)
    assert tok.model_max_length == 77
    assert clip_tokenizer("!").pad_token_id == 0  # SDXL's tokenizer_2


def test_tokenizer_truncates_to_77_like_open_clip(open_clip_tokenizer):
    prompt = "a very long prompt about a cat " * 30
    ids = clip_tokenizer()(prompt, truncation=True, padding="max_length").input_ids
    assert len(ids) == 77 and ids[-1] == 49407
    assert ids == open_clip_tokenizer(prompt)[0].tolist()
    padded = clip_tokenizer("!")("a cat", padding="max_length").input_ids
    assert len(padded) == 77 and padded[:4] == [49406, 320, 2368, 49407] and set(padded[4:]) == {0}


def test_tokenizer_files_load_with_from_pretrained(tmp_path):
    from transformers import CLIPTokenizer

    write_clip_tokenizer_files(tmp_path, pad_token="!")
    assert (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()[0] == "#version: 0.2"
    tok = CLIPTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert len(tok) == 49408 and tok.pad_token == "!" and tok.model_max_length == 77


def _weights_digest(path: Path) -> dict[str, str]:
    files = sorted(path.rglob("*.safetensors"))
    assert files, f"no safetensors under {path}"
    return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {kind: build(root / kind, 0) for kind, build in TINY_BUILDERS.items()}


@pytest.mark.parametrize("kind", list(TINY_BUILDERS))
def test_builder_is_deterministic_in_its_seed(kind, built, tmp_path):
    again = TINY_BUILDERS[kind](tmp_path / "again", 0)
    other = TINY_BUILDERS[kind](tmp_path / "other", 1)
    reference = _weights_digest(built[kind])
    assert _weights_digest(again) == reference
    other_digest = _weights_digest(other)
    assert other_digest.keys() == reference.keys()
    assert all(other_digest[name] != reference[name] for name in reference)


def test_builder_leaves_callers_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    TINY_BUILDERS["tiny-clip"](tmp_path / "clip", 7)
    assert torch.equal(torch.rand(3), expected)
    assert [p.name for p in tmp_path.iterdir()] == ["clip"]  # no temp directory left behind


def test_builder_keeps_a_finished_model_already_in_place(built, tmp_path):
    first = TINY_BUILDERS["tiny-clip"](tmp_path / "clip", 0)
    before = (first / "model.safetensors").stat().st_mtime_ns
    TINY_BUILDERS["tiny-clip"](tmp_path / "clip", 0)  # as if a racing process finished second
    assert (first / "model.safetensors").stat().st_mtime_ns == before
    assert [p.name for p in tmp_path.iterdir()] == ["clip"]


def _generate(pipe):
    generator = torch.Generator().manual_seed(0)
    return pipe("a photo of a cat", num_inference_steps=2, generator=generator).images[0]


def _assert_quiet(caught, stderr: str) -> None:
    """Loading must not print deprecation or safety-checker warnings (e.g. a missing steps_offset)."""
    ours = [w for w in caught if issubclass(w.category, (FutureWarning, UserWarning))]
    assert not ours, [str(w.message) for w in ours]
    lowered = stderr.lower()
    assert "deprecat" not in lowered and "safety" not in lowered and "steps_offset" not in lowered


def test_sd15_loads_and_generates_64px(built, capfd):
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = StableDiffusionPipeline.from_pretrained(built["tiny-sd15"], local_files_only=True)
    _assert_quiet(caught, capfd.readouterr().err)
    assert isinstance(pipe.scheduler, PNDMScheduler) and pipe.scheduler.config.steps_offset == 1
    assert pipe.safety_checker is None and pipe.vae.config.scaling_factor == 0.18215
    assert _generate(pipe).size == (64, 64)


def test_sdxl_loads_and_generates_64px(built, capfd):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = StableDiffusionXLPipeline.from_pretrained(
            built["tiny-sdxl"], local_files_only=True, add_watermarker=False
        )
    _assert_quiet(caught, capfd.readouterr().err)
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler)
    assert pipe.scheduler.config.timestep_spacing == "leading"
    assert pipe.tokenizer.pad_token_id == 49407 and pipe.tokenizer_2.pad_token_id == 0
    assert pipe.config.force_zeros_for_empty_prompt and pipe.vae.config.scaling_factor == 0.13025
    assert _generate(pipe).size == (64, 64)


def test_clip_loads_with_processor(built):
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    path = built["tiny-clip"]
    model = CLIPModel.from_pretrained(path, local_files_only=True)
    processor = CLIPProcessor.from_pretrained(path, local_files_only=True)
    assert CLIPTokenizer.from_pretrained(path, local_files_only=True)("a cat").input_ids[-1] == 49407
    image_processor = CLIPImageProcessor.from_pretrained(path, local_files_only=True)
    assert image_processor.crop_size == {"height": 32, "width": 32}
    image = Image.new("RGB", (48, 40))
    inputs = processor(
        text=["a cat", "a dog"], images=[image], padding=True, truncation=True, return_tensors="pt"
    )
    assert inputs["pixel_values"].shape == (1, 3, 32, 32)
    with torch.no_grad():
        assert model(**inputs).logits_per_image.shape == (1, 2)


def test_ensure_tiny_model_builds_once(tmp_path):
    path = ensure_tiny_model("tiny-clip", 3, tmp_path)
    assert path == tmp_path / "tiny-clip-seed3" and (path / "config.json").is_file()
    before = (path / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_model("tiny-clip", 3, tmp_path) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == before
    with pytest.raises(UnknownNameError, match="tiny-sd15"):
        ensure_tiny_model("tiny-sd99", 0, tmp_path)
