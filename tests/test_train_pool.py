"""`micro compare --jobs 2` and `leaderboard update` train runs two at a time: the runs must be the bytes that
one-thread runs in one process give (a leaderboard's numbers cannot depend on how many cores made them), and a
run that fails must fail the comparison with its own one-line error."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from rpo_bench.core.errors import BadInputError
from rpo_bench.workflows.compare import BASE, CompareConfig, train_all
from tests.test_training import preference_folder  # noqa: F401 - the session's tiny preference pairs


def _config(out: Path, data: Path, jobs: int) -> CompareConfig:
    return CompareConfig(out=out, methods=("sft", "dpo"), train_seeds=(0, 1), preset=None, jobs=jobs,
                         overrides=dict(model=BASE, data=str(data), steps=2, pairs_per_device=2, lr=1e-3, beta=500.0,
                                        heldout_pairs=0, log_every=0), show_progress=False)


def _weights(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*.safetensors"))}


@pytest.mark.slow
def test_runs_trained_two_at_a_time_are_the_bytes_of_one_thread_runs(preference_folder, tmp_path):  # noqa: F811
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one_by_one = train_all(_config(tmp_path / "one", preference_folder, jobs=1))
    finally:
        torch.set_num_threads(threads)
    two_at_a_time = train_all(_config(tmp_path / "two", preference_folder, jobs=2))
    assert set(one_by_one) == set(two_at_a_time) == {"sft-seed0", "sft-seed1", "dpo-seed0", "dpo-seed1"}
    for run, folder in two_at_a_time.items():
        assert (folder / "rpo_bench.json").is_file()
        assert _weights(folder) and _weights(folder) == _weights(one_by_one[run]), run
    assert _weights(two_at_a_time["sft-seed0"]) != _weights(two_at_a_time["dpo-seed0"])  # each run trained its own
    # a lone run left to train (the others finished) still trains on one thread, whatever the caller's count
    shutil.rmtree(two_at_a_time["dpo-seed1"])
    torch.set_num_threads(2)
    try:
        train_all(_config(tmp_path / "two", preference_folder, jobs=2))
    finally:
        torch.set_num_threads(threads)
    assert _weights(two_at_a_time["dpo-seed1"]) == _weights(one_by_one["dpo-seed1"])


def test_a_run_that_fails_in_its_process_fails_the_comparison_with_its_own_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(BadInputError, match="no usable preference pairs"):
        train_all(_config(tmp_path / "runs", empty, jobs=2))
    assert not list((tmp_path / "runs").rglob("rpo_bench.json"))
