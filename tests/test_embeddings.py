"""The RPO embedding cache on real tiny CLIP features: computed once, resumable, model-keyed, and the pair modes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rpo_bench.core.errors import BadInputError
from rpo_bench.metrics.clip_score import HFClipBackbone
from rpo_bench.training import embeddings as embeddings_module
from rpo_bench.training.data import load_preference_data
from rpo_bench.training.embeddings import (
    EMBED_MODES,
    EmbeddingCache,
    compute_embeddings,
    embedding_model_identity,
    embedding_model_source,
    pair_embeddings,
)
from rpo_bench.training.pairs import make_pairs


@pytest.fixture(scope="module")
def data(session_home, tmp_path_factory):
    """Twelve tiny-sd15 pairs (every pair of 3 images for 8 prompts, minus score ties)."""
    with pytest.MonkeyPatch.context() as patch:  # module fixtures run before the per-test home is set
        patch.setenv("RPO_BENCH_HOME", str(session_home))
        out = tmp_path_factory.mktemp("embedding-pairs")
        make_pairs("tiny-sd15", "smoke", "tiny-clip", out, k=3, mode="all", show_progress=False)
        return load_preference_data(str(out))


@pytest.fixture(scope="module")
def baseline(data, session_home, tmp_path_factory):
    """One uninterrupted computation in batches of 4, and its cache folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RPO_BENCH_HOME", str(session_home))
        cache_dir = tmp_path_factory.mktemp("embeddings")
        return compute_embeddings(data, "tiny-clip", batch_size=4, show_progress=False, cache_dir=cache_dir), cache_dir


def test_first_call_computes_every_pair_and_the_second_reads_them_all(data, baseline):
    table, cache_dir = baseline
    assert (table.computed, table.from_cache, len(table)) == (12, 0, 12)
    assert table.text.shape == table.image_w.shape == table.image_l.shape == (12, 32)
    assert table.text.dtype == torch.float32 and table.sample_ids == tuple(data.sample_ids)
    again = compute_embeddings(data, "tiny-clip", show_progress=False, cache_dir=cache_dir)
    assert (again.computed, again.from_cache) == (0, 12)
    for name in ("text", "image_w", "image_l"):
        assert torch.equal(getattr(again, name), getattr(table, name))


def test_features_equal_a_direct_computation_with_the_clip_backbone(data, baseline):
    table, _ = baseline
    backbone = HFClipBackbone(embedding_model_source("tiny-clip"), "cpu", torch.float32)
    pairs = [data[i] for i in range(len(data))]
    images, text = backbone.features([p.winner for p in pairs] + [p.loser for p in pairs], [p.caption for p in pairs])
    torch.testing.assert_close(table.text, text, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(table.image_w, images[:12], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(table.image_l, images[12:], rtol=1e-5, atol=1e-6)
    assert not torch.equal(table.image_w, table.image_l)


def test_an_interrupted_computation_resumes_and_ends_equal(data, baseline, tmp_path, monkeypatch):
    table, _ = baseline
    real_features = HFClipBackbone.features
    calls = []

    def features_then_interrupt(self, images, prompts):  # the real model; only the interruption is simulated
        calls.append(len(prompts))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_features(self, images, prompts)

    monkeypatch.setattr(embeddings_module.HFClipBackbone, "features", features_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        compute_embeddings(data, "tiny-clip", batch_size=4, show_progress=False, cache_dir=tmp_path)
    cache = EmbeddingCache(tmp_path)
    assert len(cache.existing(table.model_identity, data.sample_ids)) == 4  # the first batch was committed
    cache.close()
    monkeypatch.setattr(embeddings_module.HFClipBackbone, "features", real_features)
    resumed = compute_embeddings(data, "tiny-clip", batch_size=4, show_progress=False, cache_dir=tmp_path)
    assert (resumed.computed, resumed.from_cache) == (8, 4)
    for name in ("text", "image_w", "image_l"):
        assert torch.equal(getattr(resumed, name), getattr(table, name))


def test_different_embedding_models_never_mix(data, baseline):
    table, cache_dir = baseline
    other = compute_embeddings(data, "tiny-clip:1", batch_size=8, show_progress=False, cache_dir=cache_dir)
    assert (other.computed, other.from_cache) == (12, 0)
    assert other.model_identity != table.model_identity and not torch.allclose(other.text, table.text)
    assert embedding_model_identity("tiny-clip") == table.model_identity
    assert embedding_model_identity("tiny-clip", torch.float16) != table.model_identity
    assert compute_embeddings(data, "tiny-clip", show_progress=False, cache_dir=cache_dir).computed == 0


def test_pair_embeddings_follow_the_method_for_every_mode(baseline):
    table, _ = baseline
    indices = [3, 0, 7]
    n = torch.nn.functional.normalize
    text, image_w, image_l = (n(getattr(table, k)[indices], dim=-1) for k in ("text", "image_w", "image_l"))
    expected = {"text": (text, text), "image": (image_w, image_l),
                "joint": (n(text + image_w, dim=-1), n(text + image_l, dim=-1))}
    for mode in EMBED_MODES:
        u, v = pair_embeddings(table, torch.tensor(indices), mode)
        assert u.shape == v.shape == (3, 32)
        torch.testing.assert_close(u.norm(dim=-1), torch.ones(3))
        torch.testing.assert_close(v.norm(dim=-1), torch.ones(3))
        torch.testing.assert_close(u, expected[mode][0])
        torch.testing.assert_close(v, expected[mode][1])
    u, _ = pair_embeddings(table, indices)  # joint is the default
    torch.testing.assert_close(u, expected["joint"][0])
    with pytest.raises(ValueError, match="unknown embedding mode 'both'; accepted: text, image, joint"):
        pair_embeddings(table, indices, "both")


def test_embedding_model_names_resolve_like_the_clip_metric():
    assert embedding_model_source("tiny-clip:1") != embedding_model_source("tiny-clip")
    assert (Path(embedding_model_source("tiny-clip")) / "config.json").is_file()
    assert embedding_model_source("openai/clip-vit-base-patch32") == "openai/clip-vit-base-patch32"
    assert embedding_model_source("clip:openai/clip-vit-base-patch32") == "openai/clip-vit-base-patch32"
    assert embedding_model_source("clip") == "openai/clip-vit-large-patch14"
    with pytest.raises(BadInputError, match="accepted: tiny-clip"):
        embedding_model_source("open_clip:ViT-B-32/laion2b_s34b_b79k")
    with pytest.raises(BadInputError, match="tiny-clip:x"):
        embedding_model_source("tiny-clip:x")
    with pytest.raises(BadInputError, match="batch size 0"):
        compute_embeddings(None, batch_size=0)


def test_a_damaged_cached_embedding_is_recomputed(data, baseline, tmp_path):
    import shutil
    import sqlite3

    table, cache_dir = baseline
    shutil.copy(cache_dir / "embeddings.sqlite", tmp_path / "embeddings.sqlite")
    for suffix in ("-wal", "-shm"):
        if (cache_dir / f"embeddings.sqlite{suffix}").exists():
            shutil.copy(cache_dir / f"embeddings.sqlite{suffix}", tmp_path / f"embeddings.sqlite{suffix}")
    db = sqlite3.connect(tmp_path / "embeddings.sqlite")
    db.execute("UPDATE embeddings SET text = ? WHERE sample_id = ? AND model = ?",
               (b"\x00\x00\xc0\x7f" * 32, data.sample_ids[5], table.model_identity))  # float32 NaNs
    db.commit()
    db.close()
    again = compute_embeddings(data, "tiny-clip", batch_size=4, show_progress=False, cache_dir=tmp_path)
    assert (again.computed, again.from_cache) == (1, 11)
    for name in ("text", "image_w", "image_l"):
        torch.testing.assert_close(getattr(again, name), getattr(table, name), rtol=1e-5, atol=1e-6)
