"""Hardening of what rpo-bench keeps on disk: verified image cache, damaged SQLite files, names that become paths,
typed registry values, bounded seeds, no run row for a run that never started, an unwritable cache home."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rpo_bench.cli import main
from rpo_bench.core.config import safe_child, writable_dir
from rpo_bench.core.errors import BadInputError
from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate
from rpo_bench.evaluation.image_cache import ImageCache
from rpo_bench.evaluation.seeds import MAX_SEED, parse_seeds
from rpo_bench.evaluation.store import ResultsStore
from rpo_bench.models.tiny import ensure_tiny_model
from rpo_bench.training.embeddings import EmbeddingCache
from tests.test_evaluate import _store_content


def _one_error_line(capsys) -> str:
    """What the CLI printed on stderr: exactly one `error:` line and no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _evaluate_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["evaluate", "--models", "tiny-sd15", "--prompts", "smoke", "--metrics", "tiny-clip", "--seeds", "0",
            "--protocol", "tiny", "--batch-size", "1", "--store", str(tmp_path / "r.sqlite"),
            "--image-cache", str(tmp_path / "images"), *extra]


# -- 1. the image cache verifies what it reads -----------------------------------------------------------------
def _png(value: int) -> Image.Image:
    return Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8))


def test_truncated_or_swapped_cache_files_are_not_read(tmp_path):
    cache = ImageCache(tmp_path)
    sha_a, sha_b, sha_c = (cache.put(key, _png(v)) for key, v in (("a", 10), ("b", 20), ("c", 30)))
    data = cache.object_path(sha_a).read_bytes()
    cache.object_path(sha_a).write_bytes(data[: len(data) // 2])  # truncated
    cache.object_path(sha_b).write_bytes(cache.object_path(sha_c).read_bytes())  # another valid PNG
    assert cache.read(sha_a) is None and cache.read(sha_b) is None
    assert np.asarray(cache.read(sha_c))[0, 0].tolist() == [30, 30, 30]
    # The damaged objects and their index rows are gone, so nothing points at them any more.
    assert not cache.object_path(sha_a).exists() and not cache.object_path(sha_b).exists()
    assert cache.lookup(["a", "b", "c"]) == {"c": sha_c}
    with pytest.raises(BadInputError, match="missing or damaged"):
        cache.open(sha_a)
    cache.close()


def test_evaluate_rebuilds_damaged_cached_images_and_replaces_their_scores(tmp_path, capsys, caplog):
    config = EvaluateConfig(models=("tiny-sd15",), prompts="smoke", metrics=("tiny-clip",), seeds=(0,),
                            protocol="tiny", store=tmp_path / "r.sqlite", image_cache=tmp_path / "images",
                            batch_size=1, show_progress=False)
    evaluate(config)
    clean = _store_content(tmp_path / "r.sqlite")
    shas = sorted({row[-1] for row in clean[0]})
    assert len(shas) == 8
    cache = ImageCache(tmp_path / "images")
    truncated, swapped, deleted, other = (cache.object_path(sha) for sha in shas[:4])
    cache.close()
    truncated.write_bytes(truncated.read_bytes()[:100])
    swapped.write_bytes(other.read_bytes())
    deleted.unlink()
    # A score taken from the swapped file (as an unverified read would have made) must not survive.
    swapped_key = next(row[0] for row in clean[0] if row[-1] == shas[1])
    db = sqlite3.connect(tmp_path / "r.sqlite")
    db.execute("UPDATE scores SET value = -1 WHERE image_key = ?", (swapped_key,))
    db.commit()
    db.close()

    with caplog.at_level(logging.WARNING, logger="rpo_bench.evaluation.evaluate"):
        assert main(_evaluate_args(tmp_path)) == 0
    assert "Traceback" not in capsys.readouterr().err
    rebuilt = [r.getMessage() for r in caplog.records if "no longer matched their sha256" in r.getMessage()]
    assert len(rebuilt) == 1 and rebuilt[0].startswith("3 cached image(s)")
    for path, sha in zip((truncated, swapped, deleted, other), shas[:4], strict=True):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert _store_content(tmp_path / "r.sqlite") == clean


# -- 3. damaged SQLite files: one line naming the file and the way out ------------------------------------------
def _make_store(path: Path) -> None:
    store = ResultsStore(path)
    store.record_run("run", {"x": "y" * 20000}, {}, None)
    store.close()


@pytest.mark.parametrize("damage, reason", [
    ("garbage", "file is not a database"),
    ("truncated", "malformed"),
    ("foreign", "without rpo-bench tables"),
    ("schema", "table images has columns (image_key, value)"),
])
def test_damaged_results_store_is_one_line_with_the_recovery_command(tmp_path, capsys, damage, reason):
    store = tmp_path / "r.sqlite"
    if damage == "garbage":
        store.write_bytes(b"this is not sqlite" * 100)
    elif damage == "truncated":
        _make_store(store)
        store.write_bytes(store.read_bytes()[:4096 + 100])
    else:
        db = sqlite3.connect(store)
        db.execute("CREATE TABLE other (a)" if damage == "foreign" else "CREATE TABLE images (image_key, value)")
        db.commit()
        db.close()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert main(_evaluate_args(tmp_path)) == 2
    line = _one_error_line(capsys)
    assert f"results store {store} is damaged" in line and reason in line
    assert f"sqlite3 {store} .recover | sqlite3 " in line
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # the file is left as it was


def test_damaged_image_cache_index_says_to_delete_it(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "index.sqlite").write_bytes(b"garbage" * 100)
    assert main(_evaluate_args(tmp_path)) == 2
    line = _one_error_line(capsys)
    assert f"image cache index {tmp_path / 'images' / 'index.sqlite'} is damaged" in line
    assert "delete it" in line and "images in" in line


def test_damaged_embedding_rows_are_dropped_and_a_damaged_file_named(tmp_path):
    cache = EmbeddingCache(tmp_path)
    features = torch.randn(5, 32)
    ids = [f"s{i}" for i in range(5)]
    cache.add("m", ids, features, features + 1, features + 2)
    db = sqlite3.connect(cache.path)
    db.execute("UPDATE embeddings SET text = ? WHERE sample_id = 's0'", (b"\0" * 12,))  # wrong length
    nan = features[1].numpy().copy()
    nan[3] = np.nan
    db.execute("UPDATE embeddings SET image_w = ? WHERE sample_id = 's1'", (nan.tobytes(),))  # not finite
    db.execute("UPDATE embeddings SET dim = 16 WHERE sample_id = 's2'")  # wrong dimension
    db.commit()
    db.close()
    found = cache.read("m", ids)
    assert sorted(found) == ["s3", "s4"]
    np.testing.assert_array_equal(found["s4"][1], (features[4] + 1).numpy())
    assert cache.existing("m", ids) == {"s3", "s4"}  # the damaged rows are gone: they get recomputed
    cache.close()
    (tmp_path / "embeddings.sqlite").write_bytes(b"garbage" * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"embeddings.sqlite{suffix}").unlink(missing_ok=True)
    with pytest.raises(BadInputError, match=r"embedding cache .*embeddings.sqlite is damaged .*delete it"):
        EmbeddingCache(tmp_path)


# -- 4. names that become paths --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../x", "..", ".", "", "a/b", "a\\b", "/etc/passwd", "nul\0byte"])
def test_safe_child_refuses_names_that_leave_the_folder(tmp_path, name):
    with pytest.raises(BadInputError, match="cannot be used as a file name") as info:
        safe_child(tmp_path, name, what="prompt set name")
    assert repr(name) in str(info.value) and "\n" not in str(info.value)


def test_safe_child_refuses_a_symlink_out_and_accepts_plain_names(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(BadInputError, match="leads outside"):
        safe_child(tmp_path / "root", "link")
    assert safe_child(tmp_path / "root", "a..b.jsonl") == tmp_path / "root" / "a..b.jsonl"


@pytest.fixture
def user_registry(rpo_home):
    path = rpo_home / "registry.toml"

    def write(text: str) -> Path:
        path.write_text(text, encoding="utf-8")
        return path

    yield write
    path.unlink(missing_ok=True)


def test_prompt_set_name_with_dots_does_not_read_outside_the_home(user_registry, capsys, rpo_home):
    user_registry('[prompts."../../evil"]\nhf_dataset = "a/b"\n')
    assert main(["prompts", "show", "../../evil"]) == 2
    line = _one_error_line(capsys)
    assert "prompt set name '../../evil' cannot be used as a file name" in line


def test_tiny_model_seed_that_is_a_path_is_refused_and_creates_nothing(user_registry, capsys, rpo_home, tmp_path):
    path = user_registry('[models.evil]\nfamily = "sd15"\ntiny = "tiny-sd15"\nseed = "../../x"\n')
    before = sorted(p.name for p in rpo_home.parent.iterdir())
    assert main(_evaluate_args(tmp_path, "--models", "evil")) == 2
    line = _one_error_line(capsys)
    assert line == f"error: {path}: [models.evil] seed = '../../x': accepted: an integer >= 0"
    assert sorted(p.name for p in rpo_home.parent.iterdir()) == before
    with pytest.raises(BadInputError, match="seed '../../x'"):
        ensure_tiny_model("tiny-sd15", "../../x", tmp_path)


# -- 5. registry values are type-checked -----------------------------------------------------------------------
@pytest.mark.parametrize("toml, command, message", [
    ('models = 3\n', ["models"], "models = 3: accepted: tables [models.NAME]"),
    ('[models]\nm = "x"\n', ["models"], "[models] m = 'x': accepted: a table [models.m] of settings"),
    ('[models.m]\nfamily = 3\nrepo = "a/b"\n', ["models"], "[models.m] family = 3: accepted: one of sd15, sdxl"),
    ('[models.m]\nfamily = "sd15"\ntiny = "tiny-sd15"\nseed = 1.5\n', ["models"],
     "[models.m] seed = 1.5: accepted: an integer >= 0"),
    ('[models.m]\nfamily = "sd15"\nrepo = "a/b"\nlora_scale = "x"\n', ["models"],
     "[models.m] lora_scale = 'x': accepted: a number"),
    ('[protocols.p]\nsteps = 10\nresolution = -64\n', ["protocols"],
     "[protocols.p] resolution = -64: accepted: an integer >= 0 that is a multiple of 8 (0: native), or a table"),
    ('[protocols.p]\nsteps = 10\nresolution = { sd15 = 60, sdxl = 64 }\n', ["protocols"],
     "[protocols.p] resolution = a table {'sd15': 60, 'sdxl': 64}: accepted: an integer >= 0 that is a multiple"),
    ('[protocols.p]\nsteps = 10\nversion = "2"\n', ["protocols"], "[protocols.p] version = '2': accepted: an "
     "integer >= 1"),
    ('[protocols.p]\nsteps = 0\n', ["protocols"], "[protocols.p] steps = 0: accepted: an integer >= 1"),
    ('[protocols.p]\nsteps = 10\nguidance = -1\n', ["protocols"], "[protocols.p] guidance = -1: accepted: a "
     "number >= 0"),
    ('[prompts.s]\nhf_dataset = "a/b"\nsize = "big"\n', ["prompts"], "[prompts.s] size = 'big': accepted: an "
     "integer >= 1"),
    ('[prompts.s]\nhf_dataset = "a/b"\nhf_files = "x.json"\n', ["prompts"], "[prompts.s] hf_files = 'x.json': "
     "accepted: a list of strings"),
    ('[metrics.k]\ntarget = 3\n', ["metrics"], "[metrics.k] target = 3: accepted: a string module:Class"),
])
def test_registry_values_of_the_wrong_type_or_range_are_one_line(user_registry, capsys, toml, command, message):
    path = user_registry(toml)
    assert main(command) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: {path}: ") and message in line


# -- 6. evaluate: bounded seeds, no run row for a run that never started ----------------------------------------
@pytest.mark.parametrize("seeds, fragment", [
    ("0-9999999999", "seed range '0-9999999999'"),
    (f"{MAX_SEED + 1}", f"seed range '{MAX_SEED + 1}'"),
    ("0-50000,60000-110000", "names more than 100,000 seeds"),
])
def test_seed_lists_are_bounded_before_they_are_built(seeds, fragment, capsys, tmp_path):
    assert main(_evaluate_args(tmp_path, "--seeds", seeds)) == 2
    line = _one_error_line(capsys)
    assert fragment in line and f"integers 0..{MAX_SEED}" in line and "at most 100,000 seeds" in line
    assert not (tmp_path / "r.sqlite").exists()


def test_an_empty_model_list_is_refused(capsys, tmp_path):
    assert main(_evaluate_args(tmp_path, "--models", ",")) == 2
    line = _one_error_line(capsys)
    assert "--models ','" in line or "no models given" in line  # the command line or the library refuses it
    assert not (tmp_path / "r.sqlite").exists()


def test_largest_accepted_seed_lists():
    assert len(parse_seeds("0-99999")) == 100_000
    assert parse_seeds(f"{MAX_SEED}") == [MAX_SEED]
    with pytest.raises(BadInputError, match="seed -1"):
        evaluate(EvaluateConfig(seeds=(-1,)))
    with pytest.raises(BadInputError, match="no models given"):
        evaluate(EvaluateConfig(models=()))


def _run_rows(store: Path) -> int:
    if not store.exists():
        return 0
    db = sqlite3.connect(store)
    try:
        return db.execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        db.close()


def test_a_broken_model_folder_leaves_no_run_row(tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}', encoding="utf-8")
    assert main(_evaluate_args(tmp_path, "--models", str(broken))) == 2
    _one_error_line(capsys)
    assert _run_rows(tmp_path / "r.sqlite") == 0


def test_a_load_that_fails_after_the_store_is_open_leaves_no_run_row(tmp_path, capsys, monkeypatch):
    import rpo_bench.evaluation.evaluate as evaluate_module

    def fail_to_load(spec, **kwargs):  # what a load that runs out of memory looks like to evaluate
        raise BadInputError(f"model {spec.name!r} cannot be loaded")

    monkeypatch.setattr(evaluate_module, "load_pipeline", fail_to_load)
    assert main(_evaluate_args(tmp_path, "--models", "tiny-sd15-alt")) == 2
    assert _one_error_line(capsys) == "error: model 'tiny-sd15-alt' cannot be loaded"
    assert (tmp_path / "r.sqlite").exists() and _run_rows(tmp_path / "r.sqlite") == 0


# -- 7. an unwritable cache home ---------------------------------------------------------------------------------
def test_unwritable_home_names_the_folder_and_what_needs_it(tmp_path, capsys, monkeypatch):
    # Tests run as root, which ignores permission bits; a home below a regular file fails for root too.
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")
    home = tmp_path / "file" / "home"
    monkeypatch.setenv("RPO_BENCH_HOME", str(home))
    assert main(_evaluate_args(tmp_path, "--models", "tiny-sd15-alt")) == 2
    line = _one_error_line(capsys)
    assert f"cannot write the folder {home / 'models'} (Not a directory)" in line
    # the first tiny model the run needs (the metric's weights are checked before the model's since E9's preflight)
    assert re.search(r"needed for building the tiny model tiny-(sd15-seed1|clip-seed0)", line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no store or cache for a run that cannot start


def test_writable_dir_reports_a_permission_error_in_one_line(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):  # root cannot be refused by chmod, so the OS answer is simulated
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(BadInputError) as info:
        writable_dir(tmp_path / "images", "the image cache")
    assert str(info.value).startswith(f"cannot write the folder {tmp_path / 'images'} (Permission denied), "
                                      "needed for the image cache")


def test_micro_model_evaluates_with_an_unwritable_home(tmp_path, monkeypatch):
    """Nothing a shipped model needs is written into the home, so --store and --image-cache elsewhere suffice."""
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("RPO_BENCH_HOME", str(tmp_path / "file" / "home"))
    args = ["evaluate", "--models", "micro-base", "--prompts", "smoke", "--metrics", "micro-clip", "--seeds", "0",
            "--protocol", "micro-fast", "--store", str(tmp_path / "r.sqlite"),
            "--image-cache", str(tmp_path / "images")]
    assert main(args) == 0
    assert os.path.getsize(tmp_path / "r.sqlite") > 0
