"""`rpo-bench leaderboard update NAME`: regenerates a leaderboard folder from what its leaderboard.toml records,
with the same numbers from a fresh run (CPU, same seeds, whatever the thread count), no machine path in what is
written, and an index that keeps published numbers apart."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from rpo_bench.cli import main
from rpo_bench.leaderboard import load_spec, work_dir

SPEC = """
title = "tiny check"
description = "A few steps of DPO and RPO on the quick demo's data."
next = "Nothing: this is a test."

[demo]
quick = true
methods = "dpo,rpo"
train_seeds = "0"
eval_seeds = "0"
set = ["steps=6"]
"""
WRITTEN = ("README.md", "results.json", "results.csv", "comparison.json", "grid.png", "differences.png")


@pytest.mark.slow
def test_update_twice_from_scratch_gives_identical_numbers(tmp_path, session_home):
    root = tmp_path / "leaderboards"
    (root / "tiny").mkdir(parents=True)
    (root / "tiny" / "leaderboard.toml").write_text(SPEC, encoding="utf-8")
    project_readme = tmp_path / "README.md"
    project_readme.write_text("intro\n<!-- leaderboard:tiny -->\nold table\n<!-- /leaderboard:tiny -->\nrest\n",
                              encoding="utf-8")
    threads = torch.get_num_threads()
    try:
        # a machine with more cores must regenerate the same bytes: the first update is asked for two threads
        torch.set_num_threads(2)
        assert main(["leaderboard", "update", "tiny", "--root", str(root)]) == 0
        assert torch.get_num_threads() == 2  # given back after the update
        first = {name: (root / "tiny" / name).read_bytes() for name in WRITTEN}
        shutil.rmtree(work_dir("tiny"))  # retrain, regenerate and rescore everything
        torch.set_num_threads(1)
        assert main(["leaderboard", "update", "tiny", "--root", str(root)]) == 0
        second = {name: (root / "tiny" / name).read_bytes() for name in WRITTEN}
    finally:
        torch.set_num_threads(threads)
    for name in ("results.json", "results.csv", "comparison.json", "grid.png"):
        assert first[name] == second[name], name
    readme = second["README.md"].decode()
    assert "Reproduce: `rpo-bench leaderboard update tiny`" in readme
    assert "`rpo-bench demo --quick --methods dpo,rpo --train-seeds 0 --eval-seeds 0 --set steps=6 --out " \
           "$RPO_BENCH_HOME/leaderboards/tiny/work`" in readme
    assert "- rpo vs dpo on micro-oracle:" in readme and "## What would be tried next" in readme
    for name in ("README.md", "results.json", "results.csv", "comparison.json"):
        text = second[name].decode()
        assert str(session_home) not in text and str(tmp_path) not in text, name
    index = (root / "README.md").read_text(encoding="utf-8")
    assert "[tiny check](tiny/README.md)" in index
    measured, reported = index.split("## Reported (published numbers, not measured here)")
    assert "SD1.5 Diffusion-DPO" in reported and "SD1.5" not in measured
    assert json.loads(second["results.json"])["config"]["command"] == "rpo-bench leaderboard update tiny"
    block = project_readme.read_text(encoding="utf-8")
    assert block.startswith("intro\n<!-- leaderboard:tiny -->\n| model | micro-oracle mean [95% CI] |")
    assert "| rpo | " in block and "old table" not in block and block.endswith("<!-- /leaderboard:tiny -->\nrest\n")


def test_the_committed_leaderboards_parse():
    for name in ("micro", "micro-style"):
        spec = load_spec(name)
        assert spec.demo["train_seeds"] == "0-2"  # at least three training seeds
        assert spec.description and spec.next
