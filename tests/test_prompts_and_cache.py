"""Prompt files and hub-set caching; the image cache's content addressing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from rpo_bench.core.errors import BadInputError, MissingWeightsError
from rpo_bench.evaluation.image_cache import ImageCache, generation_key
from rpo_bench.evaluation.prompts import cached_prompts_path, load_prompt_set


def test_txt_and_jsonl_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("a cat\n\n  a dog  \n", encoding="utf-8")
    assert [p.text for p in load_prompt_set(str(txt)).prompts] == ["a cat", "a dog"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a cat", "category": "animal"}\n{"prompt": "a car"}\n', encoding="utf-8")
    prompts = load_prompt_set(str(jsonl)).prompts
    assert [(p.index, p.text, p.category) for p in prompts] == [(0, "a cat", "animal"), (1, "a car", "")]


@pytest.mark.parametrize("content, message", [
    ('{"prompt": "ok"}\n{"prompt": 3}\n', ":2: expected an object"),
    ('{"prompt": "ok"}\nnot json\n', ":2: not valid JSON"),
    ('{"prompt": "  "}\n', ":1: expected an object with a non-empty"),
])
def test_bad_jsonl_lines_are_named(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(BadInputError, match=message):
        load_prompt_set(str(path))


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(BadInputError, match="accepted: .txt, .jsonl"):
        (tmp_path / "p.csv").write_text("a")
        load_prompt_set(str(tmp_path / "p.csv"))
    with pytest.raises(BadInputError, match="does not exist"):
        load_prompt_set(str(tmp_path / "nope.txt"))


def test_hub_sets_are_read_from_the_cache_once_fetched():
    cached = cached_prompts_path("drawbench")
    with pytest.raises(MissingWeightsError, match="HF_HUB_OFFLINE"):
        load_prompt_set("drawbench")
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps({"prompt": "a red cube", "category": "Colors"}) + "\n", encoding="utf-8")
    try:
        prompts = load_prompt_set("drawbench").prompts
        assert [(p.text, p.category) for p in prompts] == [("a red cube", "Colors")]
    finally:
        cached.unlink()


def _image(value: int) -> Image.Image:
    return Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8))


def test_image_cache_is_content_addressed_and_ignores_dangling_keys(tmp_path):
    cache = ImageCache(tmp_path)
    sha_a = cache.put("key-a", _image(10))
    sha_b = cache.put("key-b", _image(10))  # same pixels, other key: one object
    assert sha_a == sha_b and len(list((tmp_path / "objects").rglob("*.png"))) == 1
    cache.put("key-c", _image(20))
    assert set(cache.lookup(["key-a", "key-c", "key-x"])) == {"key-a", "key-c"}
    cache.object_path(cache.lookup(["key-c"])["key-c"]).unlink()  # a deleted file is not a cached image
    assert set(cache.lookup(["key-a", "key-c"])) == {"key-a"}
    assert np.asarray(cache.open(sha_a))[0, 0].tolist() == [10, 10, 10]


def test_generation_key_depends_on_every_input():
    base = ("m", "p", "float32", "a cat", 0)
    keys = {generation_key(*base)}
    for index, other in enumerate(("m2", "p2", "float16", "a dog", 1)):
        changed = list(base)
        changed[index] = other
        keys.add(generation_key(*changed))
    assert len(keys) == 6
