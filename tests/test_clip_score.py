"""CLIP score: the math against a direct transformers computation, batch independence, versioning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rpo_bench.metrics import make_metric
from rpo_bench.metrics.clip_score import clip_score_from_features


def _images(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)) for _ in range(count)]


PROMPTS = ["a red apple", "a cat on a sofa", "an astronaut", "a sketch of a house",
           "blue sky", "a fox in the snow", "a bowl of ramen", "three cubes"]


def test_formula_is_100_times_clamped_cosine():
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 4.0]])
    text = torch.tensor([[2.0, 0.0], [-1.0, 0.0], [4.0, 3.0]])
    assert clip_score_from_features(image, text).tolist() == pytest.approx([100.0, 0.0, 96.0])


def test_tiny_clip_matches_a_direct_transformers_computation():
    from transformers import CLIPModel, CLIPProcessor

    metric = make_metric("tiny-clip")
    metric.load("cpu", torch.float32)
    ours = metric.score(_images(3), PROMPTS[:3])
    folder = metric.backbone_source()
    model, processor = CLIPModel.from_pretrained(folder), CLIPProcessor.from_pretrained(folder)
    inputs = processor(text=PROMPTS[:3], images=_images(3), return_tensors="pt", padding=True, truncation=True)
    with torch.no_grad():
        out = model(**inputs)
    cosine = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds)
    expected = (100 * cosine.clamp(min=0)).tolist()
    assert ours == pytest.approx(expected, abs=1e-4)


def test_scores_do_not_depend_on_batch_size():
    metric = make_metric("tiny-clip")
    metric.load("cpu", torch.float32)
    batched = metric.score(_images(8), PROMPTS)
    single = [metric.score([image], [prompt])[0] for image, prompt in zip(_images(8), PROMPTS, strict=True)]
    assert batched == pytest.approx(single, abs=1e-4)
    assert len(set(round(v, 3) for v in batched)) > 1


def test_version_names_the_weights_and_differs_by_backbone():
    zero, one = make_metric("tiny-clip"), make_metric("tiny-clip:1")
    assert zero.version.startswith("1+tiny-clip-seed0@") and one.version.startswith("1+tiny-clip-seed1@")
    assert zero.key == "tiny-clip" and one.key == "tiny-clip:1"


def test_long_prompts_are_truncated_and_said_once(caplog):
    metric = make_metric("tiny-clip")
    metric.load("cpu", torch.float32)
    long_prompt = "a very " * 100 + "long prompt"
    with caplog.at_level("WARNING"):
        metric.score(_images(2), [long_prompt, long_prompt])
        metric.score(_images(1), [long_prompt])
    assert sum("truncated" in record.message for record in caplog.records) == 1


def test_open_clip_backbone_from_a_local_checkpoint(tmp_path):
    import open_clip
    from safetensors.torch import save_file

    config = {"embed_dim": 16,
              "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "TinyTestCLIP.json").write_text(__import__("json").dumps(config))
    open_clip.add_model_config(tmp_path / "TinyTestCLIP.json")
    torch.manual_seed(0)
    model = open_clip.create_model("TinyTestCLIP", pretrained=None)
    save_file(model.state_dict(), tmp_path / "weights.safetensors")

    metric = make_metric(f"clip:open_clip:TinyTestCLIP/{tmp_path / 'weights.safetensors'}")
    assert metric.version.startswith("1+open_clip:TinyTestCLIP/weights.safetensors@")
    metric.load("cpu", torch.float32)
    ours = metric.score(_images(2), PROMPTS[:2])
    model.eval()
    _, _, preprocess = open_clip.create_model_and_transforms("TinyTestCLIP", pretrained=None)
    with torch.no_grad():
        image_features = model.encode_image(torch.stack([preprocess(image) for image in _images(2)]))
        text_features = model.encode_text(open_clip.get_tokenizer("TinyTestCLIP")(PROMPTS[:2]))
    cosine = torch.nn.functional.cosine_similarity(image_features, text_features)
    assert ours == pytest.approx((100 * cosine.clamp(min=0)).tolist(), abs=1e-4)


def test_open_clip_without_pretrained_weights_is_refused():
    from rpo_bench.core.errors import BadInputError

    with pytest.raises(BadInputError, match="ARCH/PRETRAINED"):
        _ = make_metric("clip:open_clip:ViT-B-32").version
