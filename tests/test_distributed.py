"""Sharded evaluation: 2 CPU processes under torchrun fill one store exactly as 1 process does."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from rpo_bench.evaluation.image_cache import ImageCache
from tests.test_generate import MAX_PIXEL_DIFFERENCE

ARGS = ["evaluate", "--models", "tiny-sd15,tiny-sdxl", "--prompts", "smoke", "--metrics", "tiny-clip",
        "--seeds", "0,1", "--device", "cpu", "--batch-size", "3", "--protocol", "tiny"]


def _content(path):
    db = sqlite3.connect(path)
    return (db.execute("SELECT i.image_key, m.model, i.prompt, i.seed, i.image_sha256 FROM images i "
                       "JOIN samples m USING (image_key) ORDER BY image_key").fetchall(),
            db.execute("SELECT image_key, metric, metric_version, value FROM scores ORDER BY image_key").fetchall())


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="needs torchrun")
def test_two_process_sharded_evaluate_equals_one_process(tmp_path, session_home):
    env = {**os.environ, "RPO_BENCH_HOME": str(session_home), "OMP_NUM_THREADS": "1"}
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    single.mkdir()
    subprocess.run([sys.executable, "-m", "rpo_bench", *ARGS, "--store", str(single / "r.sqlite"),
                    "--image-cache", str(single / "images")], env=env, check=True, capture_output=True,
                   cwd=tmp_path)
    sharded.mkdir()
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "rpo_bench", *ARGS,
                             "--store", str(sharded / "r.sqlite"), "--image-cache", str(sharded / "images")],
                            env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("tiny-sdxl") >= 1  # rank 0 printed the table; rank 1 stayed quiet
    assert result.stdout.count("generated") == 1
    single_images, single_scores = _content(single / "r.sqlite")
    sharded_images, sharded_scores = _content(sharded / "r.sqlite")
    assert len(single_images) == 32 and len(single_scores) == 32
    # Same rows; pixels equal up to the batch-composition tolerance of test_generate (shards batch differently).
    assert [row[:4] for row in sharded_images] == [row[:4] for row in single_images]
    for a, b in zip(sharded_images, single_images, strict=True):
        pixels_a = np.asarray(ImageCache(sharded / "images").open(a[4]), dtype=np.int16)
        pixels_b = np.asarray(ImageCache(single / "images").open(b[4]), dtype=np.int16)
        assert np.abs(pixels_a - pixels_b).max() <= MAX_PIXEL_DIFFERENCE
    assert [row[:3] for row in sharded_scores] == [row[:3] for row in single_scores]
    for a, b in zip(sharded_scores, single_scores, strict=True):
        assert a[3] == pytest.approx(b[3], abs=0.05)
