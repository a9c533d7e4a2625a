"""Fault tests: SIGKILL at seeded points during evaluate, pairs, train, the embedding cache, score and download,
then resume, and the result equals an uninterrupted run; SIGINT during evaluate and train exits 130 with one line
and keeps the finished work.

Every command runs through its real entry point (`rpo_bench.cli.main`; `compute_embeddings` for the embedding
cache, which has no command of its own) in a child forked from this process (tests/fault_harness.py). Per
command, one uninterrupted reference run is made per module; then each seed kills the command KILLS times at
points drawn by random.Random from the reference's progress, runs it to the end, and compares what it left with
the reference's: len(SEEDS) x KILLS = 20 kill points per command. Each case runs in a private RPO_BENCH_HOME
(sharing the session's built tiny models), so image and embedding caches never leak between runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fault_harness import (
    Child,
    Timing,
    count_lines,
    count_rows,
    folder_bytes,
    kill_chain,
    measure,
    run_to_end,
)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the fault tests fork the test process")

SEEDS = (0, 1, 2, 3)
KILLS = 5  # per seed: len(SEEDS) * KILLS = 20 kill points per command
PROMPTS = ("a red cube on a wooden table", "a blue ball in the grass")
# Prompts the tiny CLIP scores above zero (its CLIPScore clips negative cosines to 0, and pairs drop ties).
PAIR_PROMPTS = ("a fox standing in a snowy forest", "an astronaut riding a horse on the moon",
                "a blue ball in the grass")
TRAIN_STEPS = 6


# -- shared set-up ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def one_thread(session_home):
    """Children fork from this process with one torch thread, so a result cannot depend on thread scheduling
    and no OpenMP pool is half-inherited. Loading the tiny models once here builds them (before any child can
    be killed while building one) and does the lazy imports of diffusers and transformers once, not in every
    child."""
    import accelerate  # noqa: F401
    import peft  # noqa: F401

    import rpo_bench.cli  # noqa: F401
    import rpo_bench.training.trainer  # noqa: F401
    import rpo_bench.workflows.download  # noqa: F401
    from rpo_bench.metrics import make_metric
    from rpo_bench.models.catalog import resolve_model
    from rpo_bench.models.loader import load_pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:  # module fixtures run before the per-test home is set
        patch.setenv("RPO_BENCH_HOME", str(session_home))
        load_pipeline(resolve_model("tiny-sd15"), device="cpu", dtype=torch.float32)
        for name in ("tiny-clip", "tiny-pickscore"):
            metric = make_metric(name)
            metric.load("cpu", torch.float32)
            metric.unload()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory, session_home) -> Path:
    """The module's folder, with its prompt files; the session's models folder, which private homes link to."""
    root = tmp_path_factory.mktemp("faults")
    (root / "prompts.txt").write_text("".join(p + "\n" for p in PROMPTS), encoding="utf-8")
    (root / "pair-prompts.txt").write_text("".join(p + "\n" for p in PAIR_PROMPTS), encoding="utf-8")
    (session_home / "models").mkdir(parents=True, exist_ok=True)
    return root


def private_home(world: Path, session_home: Path, name: str) -> Path:
    """A fresh RPO_BENCH_HOME whose tiny models are the session's (built by `one_thread`, before any kill)."""
    home = world / name / "home"
    home.mkdir(parents=True)
    (home / "models").symlink_to(session_home / "models", target_is_directory=True)
    return home


def cli(home: Path, argv: list[str]) -> Callable[[], int]:
    def call() -> int:
        os.environ["RPO_BENCH_HOME"] = str(home)
        from rpo_bench.cli import main

        return main(argv)

    return call


@dataclass(frozen=True)
class Reference:
    folder: Path
    home: Path
    timing: Timing


def kill_resume_and_check(world: Path, session_home: Path, name: str, seed: int,
                          make_call: Callable[[Path, Path, int], Callable[[], int]], progress: Callable[[Path], int],
                          timing: Timing, check: Callable[[Path, Path], None]) -> None:
    """Kill `make_call`'s command at KILLS seeded points, resuming it after each, and `check` (home, folder) of
    every run that reached its end. A run that ends before its next kill arrives (it ran faster than the
    reference) is checked too, and the remaining kills go to a fresh run."""
    rng = random.Random(f"{name}:{seed}")
    landed = []
    for run in range(4):
        case = f"{name}-seed{seed}-run{run}"
        home = private_home(world, session_home, case)
        folder = world / case / "run"
        folder.mkdir()
        chain = kill_chain(partial(make_call, home, folder), partial(progress, folder), timing, rng,
                           KILLS - len(landed), world / case)
        check(home, folder)
        landed += chain.kills
        with open(world / "kill-points.jsonl", "a", encoding="utf-8") as record:  # for whoever reads a failure
            record.write(json.dumps({"case": case, "kills": [vars(k) for k in chain.kills]}) + "\n")
        if len(landed) == KILLS:
            return
    raise AssertionError(f"only {len(landed)} of {KILLS} kills landed in 4 runs: {landed}")


def _reference(world: Path, session_home: Path, name: str, make_call, progress) -> Reference:
    home = private_home(world, session_home, f"{name}-reference")
    folder = world / f"{name}-reference" / "run"
    folder.mkdir()
    timing = measure(make_call(home, folder, 0), lambda: progress(folder), world / f"{name}-reference" / "log")
    return Reference(folder, home, timing)


def _log_has_no_traceback(child: Child) -> str:
    text = child.output(20_000)
    assert "Traceback" not in text, text
    return text


# -- evaluate -----------------------------------------------------------------------------------------------------
def _evaluate_call(world: Path) -> Callable[[Path, Path, int], Callable[[], int]]:
    def make(home: Path, folder: Path, attempt: int) -> Callable[[], int]:
        # Batch size 1: a resumed run finds some images of a cut batch in the image cache and batches the rest
        # differently, and on the CPU a different batch layout can move a pixel by one level (test_generate).
        return cli(home, ["evaluate", "--models", "tiny-sd15", "--prompts", str(world / "prompts.txt"),
                          "--metrics", "tiny-clip", "--seeds", "0-2", "--batch-size", "1", "--protocol", "tiny",
                          "--device", "cpu", "--store", str(folder / "r.sqlite"),
                          "--image-cache", str(folder / "images")])

    return make


def _evaluate_progress(folder: Path) -> int:
    return count_rows(folder / "r.sqlite", "images", "scores")


def _store_rows(path: Path) -> tuple[list, list]:
    """Everything a result depends on; not the timestamps or run bookkeeping."""
    db = sqlite3.connect(path)
    try:
        images = db.execute("SELECT i.image_key, m.model, i.model_fingerprint, i.protocol_fingerprint, i.dtype, "
                            "i.prompt, i.seed, i.image_sha256 FROM images i JOIN samples m USING (image_key) "
                            "ORDER BY image_key").fetchall()
        scores = db.execute("SELECT image_key, metric, metric_version, value FROM scores "
                            "ORDER BY image_key, metric").fetchall()
    finally:
        db.close()
    return images, scores


def _cached_objects(folder: Path) -> set[str]:
    """The image cache's PNG objects, each checked to hold the bytes its name promises (no torn write)."""
    names = set()
    for path in folder.rglob("*.png"):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.stem, f"{path} does not hold its content"
        names.add(path.name)
    return names


@pytest.fixture(scope="module")
def evaluate_reference(world, session_home) -> Reference:
    return _reference(world, session_home, "evaluate", _evaluate_call(world), _evaluate_progress)


def _assert_evaluate_equal(folder: Path, reference: Reference) -> None:
    images, scores = _store_rows(folder / "r.sqlite")
    expected_images, expected_scores = _store_rows(reference.folder / "r.sqlite")
    assert len(expected_images) == len(expected_scores) == 3 * len(PROMPTS)
    assert images == expected_images
    assert scores == expected_scores
    assert _cached_objects(folder / "images") == _cached_objects(reference.folder / "images")


def test_a_child_killed_inside_a_progress_bar_lock_blocks_no_one(tmp_path):
    """tqdm guards its bars with a multiprocessing lock, a semaphore that fork shares. A child SIGKILLed while
    holding it (diffusers makes a bar per pipeline call) left it held for every later child and for the test
    process: the suite hung. Each child now starts with locks of its own, as a fresh process does."""
    import signal
    import time

    from tqdm import tqdm

    from tests.fault_harness import _fresh_progress_bar_locks

    tqdm.get_lock()  # created before the forks, as the suite's earlier tests create it
    holding = tmp_path / "holding"

    def hold():
        tqdm.get_lock().acquire()
        holding.write_text("held")  # atomic: a marker only this test reads, and only for its existence
        time.sleep(300)

    def one_bar():
        with tqdm(total=1) as bar:
            bar.update(1)

    killed = Child(hold, tmp_path / "hold.log")
    killed.wait_for_progress(lambda: int(holding.exists()), 1, timeout=60)
    killed.send(signal.SIGKILL)
    try:
        assert killed.wait(60) == -signal.SIGKILL
        assert Child(one_bar, tmp_path / "bar.log").wait(timeout=60) == 0
        shared = tqdm.get_lock().locks[0]
        assert shared.acquire(timeout=5)  # the test process's own lock is free too
        shared.release()
    finally:
        _fresh_progress_bar_locks()  # should this fail, the rest of the suite must not hang on the held lock


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_evaluate_killed_at_seeded_points_resumes_to_the_uninterrupted_result(world, session_home,
                                                                              evaluate_reference, seed):
    kill_resume_and_check(world, session_home, "evaluate", seed, _evaluate_call(world), _evaluate_progress,
                          evaluate_reference.timing, lambda home, folder: _assert_evaluate_equal(folder,
                                                                                                 evaluate_reference))


@pytest.mark.slow
def test_evaluate_sigint_exits_130_keeps_finished_batches_and_a_rerun_completes(world, session_home,
                                                                                evaluate_reference):
    home = private_home(world, session_home, "evaluate-sigint")
    folder = world / "evaluate-sigint" / "run"
    folder.mkdir()
    make = _evaluate_call(world)
    child = Child(make(home, folder, 0), world / "evaluate-sigint" / "interrupted.log")
    child.wait_for_progress(lambda: count_rows(folder / "r.sqlite", "images"), 3)
    kept_before = count_rows(folder / "r.sqlite", "images")
    child.send(signal.SIGINT)
    assert child.wait(120) == 130, child.output()
    text = _log_has_no_traceback(child)
    assert re.search(r"^interrupted: .*run the same command again", text, re.MULTILINE), text
    kept = count_rows(folder / "r.sqlite", "images")
    assert 3 <= kept_before <= kept < 3 * len(PROMPTS), "the interrupt came too late to test anything"
    rerun = run_to_end(make(home, folder, 1), world / "evaluate-sigint" / "rerun.log")
    generated, reused = map(int, re.search(r"generated (\d+) images, reused (\d+)", rerun.output()).groups())
    assert generated + reused == 3 * len(PROMPTS) - kept  # the finished images were not made again
    _assert_evaluate_equal(folder, evaluate_reference)


# -- pairs --------------------------------------------------------------------------------------------------------
def _pairs_call(world: Path) -> Callable[[Path, Path, int], Callable[[], int]]:
    def make(home: Path, folder: Path, attempt: int) -> Callable[[], int]:
        return cli(home, ["pairs", "--model", "tiny-sd15", "--prompts", str(world / "pair-prompts.txt"), "--metric",
                          "tiny-clip", "--output", str(folder / "pairs"), "--k", "3", "--mode", "all",
                          "--batch-size", "1", "--protocol", "tiny", "--device", "cpu"])

    return make


def _pairs_progress(folder: Path) -> int:
    out = folder / "pairs"
    return count_rows(out / "generation.sqlite", "images", "scores") + (out / "pairs.jsonl").is_file()


def _preference_set(folder: Path) -> tuple[str, dict[str, bytes]]:
    images = {p.name: p.read_bytes() for p in (folder / "images").iterdir()}
    return (folder / "pairs.jsonl").read_text(encoding="utf-8"), images


@pytest.fixture(scope="module")
def pairs_reference(world, session_home) -> Reference:
    return _reference(world, session_home, "pairs", _pairs_call(world), _pairs_progress)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_pairs_killed_at_seeded_points_resumes_to_the_same_preference_set(world, session_home, pairs_reference, seed):
    expected_rows, expected_images = _preference_set(pairs_reference.folder / "pairs")
    assert len(expected_rows.splitlines()) >= 6

    def check(home: Path, folder: Path) -> None:
        rows, images = _preference_set(folder / "pairs")
        assert rows == expected_rows
        assert images == expected_images  # only the images the pairs name: no leftover temporary files

    kill_resume_and_check(world, session_home, "pairs", seed, _pairs_call(world), _pairs_progress,
                          pairs_reference.timing, check)


# -- train ----------------------------------------------------------------------------------------------------------
def _train_call(data: Path, checkpoint_every: int = 1) -> Callable[[Path, Path, int], Callable[[], int]]:
    def make(home: Path, folder: Path, attempt: int) -> Callable[[], int]:
        # RPO with LoRA: the run also fills the embedding cache in its home, so kills land there as well. With an
        # EMA of the weights: the saved weights are the average, so they come out bit-identical only when resume
        # restores both the training weights and the average exactly.
        argv = ["train", "--model", "tiny-sd15", "--data", str(data), "--output", str(folder / "out"), "--method",
                "rpo", "--steps", str(TRAIN_STEPS), "--pairs-per-device", "3", "--lr", "1e-3", "--lora-rank", "4",
                "--beta", "500", "--ema-decay", "0.9", "--device", "cpu", "--checkpoint-every", str(checkpoint_every),
                "--log-every", "0", "--quiet"]
        return cli(home, argv + (["--resume"] if attempt else []))

    return make


def _train_progress(folder: Path) -> int:
    return count_lines(folder / "out" / "train_log.jsonl")


def _train_log(folder: Path) -> list[dict]:
    """The per-step diagnostics, without the wall-clock time."""
    lines = (folder / "out" / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def _checkpoint_steps(folder: Path) -> list[int]:
    found = (folder / "out" / "checkpoints").glob("step-*")
    return sorted(int(p.name.split("-")[1]) for p in found if (p / "trainer_state.json").is_file())


def _assert_train_equal(folder: Path, reference: Reference) -> None:
    from safetensors.torch import load_file

    weights = load_file(folder / "out" / "pytorch_lora_weights.safetensors")
    expected = load_file(reference.folder / "out" / "pytorch_lora_weights.safetensors")
    assert weights.keys() == expected.keys() and weights
    different = [name for name in expected if not torch.equal(weights[name], expected[name])]
    assert not different, f"{len(different)} of {len(expected)} LoRA tensors differ, e.g. {different[0]}"
    assert _train_log(folder) == _train_log(reference.folder)
    assert _checkpoint_steps(folder)[-1] == TRAIN_STEPS
    last = Path("out") / "checkpoints" / f"step-{TRAIN_STEPS}" / "ema.safetensors"
    average, expected_average = load_file(folder / last), load_file(reference.folder / last)
    assert average.keys() == expected_average.keys() and average
    assert all(torch.equal(average[name], expected_average[name]) for name in average)


@pytest.fixture(scope="module")
def train_reference(world, session_home, pairs_reference) -> Reference:
    return _reference(world, session_home, "train", _train_call(pairs_reference.folder / "pairs"), _train_progress)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_train_killed_at_seeded_points_resumes_to_bit_identical_weights(world, session_home, pairs_reference,
                                                                        train_reference, seed):
    kill_resume_and_check(world, session_home, "train", seed, _train_call(pairs_reference.folder / "pairs"),
                          _train_progress, train_reference.timing,
                          lambda home, folder: _assert_train_equal(folder, train_reference))


@pytest.mark.slow
def test_train_sigint_exits_130_saves_the_last_finished_step_and_resumes_to_the_same_weights(
        world, session_home, pairs_reference, train_reference):
    home = private_home(world, session_home, "train-sigint")
    folder = world / "train-sigint" / "run"
    folder.mkdir()
    make = _train_call(pairs_reference.folder / "pairs", checkpoint_every=0)  # no checkpoint but the interrupt's
    child = Child(make(home, folder, 0), world / "train-sigint" / "interrupted.log")
    child.wait_for_progress(lambda: _train_progress(folder), 2)
    finished_before = _train_progress(folder)
    child.send(signal.SIGINT)
    assert child.wait(120) == 130, child.output()
    text = _log_has_no_traceback(child)
    assert re.search(r"^interrupted: .*--resume", text, re.MULTILINE), text
    finished = _train_progress(folder)
    assert 2 <= finished_before <= finished < TRAIN_STEPS, "the interrupt came too late to test anything"
    assert _checkpoint_steps(folder) == [finished], "no checkpoint at the last finished step"
    rerun = run_to_end(make(home, folder, 1), world / "train-sigint" / "rerun.log")
    assert f"resumed at step {finished}" in rerun.output()
    _assert_train_equal(folder, train_reference)


@pytest.mark.slow
def test_train_killed_before_its_first_checkpoint_resumes_without_duplicate_log_lines(world, session_home,
                                                                                      pairs_reference,
                                                                                      train_reference):
    """Steps logged, no checkpoint yet (checkpoints only at the end): --resume starts from step 0, and the log
    of the lost steps must be replaced, not appended to."""
    home = private_home(world, session_home, "train-early-kill")
    folder = world / "train-early-kill" / "run"
    folder.mkdir()
    make = _train_call(pairs_reference.folder / "pairs", checkpoint_every=0)
    child = Child(make(home, folder, 0), world / "train-early-kill" / "killed.log")
    child.wait_for_progress(lambda: _train_progress(folder), 1)
    child.send(signal.SIGKILL)
    assert child.wait(120) == -signal.SIGKILL, "the run ended before it could be killed"
    assert 1 <= _train_progress(folder) < TRAIN_STEPS and _checkpoint_steps(folder) == []
    run_to_end(make(home, folder, 1), world / "train-early-kill" / "resumed.log")
    assert [record["step"] for record in _train_log(folder)] == list(range(1, TRAIN_STEPS + 1))
    _assert_train_equal(folder, train_reference)


# -- train: one writer at a time, and a write that fails (a full disk) is one line that loses nothing (E9) -----------
def _dpo_argv(data: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return ["train", "--model", "tiny-sd15", "--data", str(data), "--output", str(out), "--method", "dpo", "--steps",
            str(steps), "--pairs-per-device", "3", "--lr", "1e-3", "--lora-rank", "4", "--beta", "500", "--device",
            "cpu", "--checkpoint-every", "1", "--log-every", "0", "--quiet", *extra]


def _with_file_size_limit(limit: int, call: Callable[[], int]) -> Callable[[], int]:
    """The child's writes beyond `limit` bytes fail with EFBIG, as writes on a full disk fail with ENOSPC (Python
    ignores SIGXFSZ): a real failed write, as root too, with no file system to fill."""
    def limited() -> int:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        return call()

    return limited


def _one_error(child: Child) -> str:
    text = _log_has_no_traceback(child)
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    return lines[0]


def _run_files(out: Path) -> dict[str, bytes]:
    """Every file of a training output but its lock (which holds the pid of the last run)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != ".rpo-bench.lock"}


def test_two_trains_into_one_output_at_once_one_finishes_and_the_other_is_refused_in_one_line(world, session_home,
                                                                                           pairs_reference):
    home = private_home(world, session_home, "train-twice")
    out = world / "train-twice" / "out"
    argv = _dpo_argv(pairs_reference.folder / "pairs", out, TRAIN_STEPS)
    children = [Child(cli(home, argv), world / "train-twice" / f"run{i}.log") for i in range(2)]
    codes = [child.wait(300) for child in children]
    assert sorted(codes) == [0, 2], [child.output() for child in children]
    winner, loser = children[codes.index(0)], children[codes.index(2)]
    _log_has_no_traceback(winner)
    line = _one_error(loser)
    # Refused by the lock while the winner trains; or, had the winner finished before the loser got that far, by
    # the finished run it left.
    assert (f"the training output {out} is in use by process {winner.pid}, which is writing into it" in line
            or f"--output {out} already holds a run; pass --resume" in line), line
    assert [record["step"] for record in _train_log(out.parent)] == list(range(1, TRAIN_STEPS + 1))
    assert json.loads((out / "rpo_bench.json").read_text(encoding="utf-8"))["steps_done"] == TRAIN_STEPS
    assert _checkpoint_steps(out.parent) == [TRAIN_STEPS - 1, TRAIN_STEPS]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".rpo-bench.lock"]


def test_train_whose_optimizer_write_fails_names_the_folder_and_the_last_good_checkpoint_and_resumes(
        world, session_home, pairs_reference):
    case = world / "train-optimizer-write-fails"
    home = private_home(world, session_home, case.name)
    out, data = case / "out", pairs_reference.folder / "pairs"
    run_to_end(cli(home, _dpo_argv(data, out, 2)), case / "first.log")
    step_2 = out / "checkpoints" / "step-2"
    weights, optimizer = ((step_2 / name).stat().st_size for name in ("trainable.safetensors", "optimizer.pt"))
    assert weights < optimizer
    kept = _run_files(out / "checkpoints")
    failed = Child(_with_file_size_limit((weights + optimizer) // 2, cli(home, _dpo_argv(data, out, 4, "--resume"))),
                   case / "failed.log")
    assert failed.wait(120) == 2, failed.output()
    assert _one_error(failed) == (f"error: cannot write checkpoint {out / 'checkpoints' / 'step-3'} (optimizer.pt): "
                                  f"File too large; the last good checkpoint is {step_2}. Free space (or make the "
                                  "folder writable), then run the same command with --resume")
    assert _run_files(out / "checkpoints") == kept  # no half of step-3, no temp folder, step-1 and step-2 untouched
    assert sorted(os.listdir(out / "checkpoints")) == ["step-1", "step-2"]
    resumed = run_to_end(cli(home, _dpo_argv(data, out, 4, "--resume")), case / "resumed.log")
    assert "resumed at step 2" in resumed.output()
    clean = world / "train-optimizer-write-clean"
    run_to_end(cli(home, _dpo_argv(data, clean / "out", 4)), world / "train-optimizer-write-clean.log")
    assert _train_log(case) == _train_log(clean)  # the same steps, each logged once
    from safetensors.torch import load_file

    found, expected = (load_file(folder / "out" / "pytorch_lora_weights.safetensors") for folder in (case, clean))
    assert found.keys() == expected.keys() and all(torch.equal(found[k], expected[k]) for k in expected)


def test_a_failed_write_of_the_final_weights_leaves_the_previous_weights_whole(world, session_home, pairs_reference):
    case = world / "train-final-write-fails"
    home = private_home(world, session_home, case.name)
    out = case / "out"
    argv = _dpo_argv(pairs_reference.folder / "pairs", out, 2)
    run_to_end(cli(home, argv), case / "first.log")
    before = _run_files(out)
    limit = (out / "pytorch_lora_weights.safetensors").stat().st_size // 2
    # --resume of a finished run writes nothing but the final output again: its weights are the first write to fail
    failed = Child(_with_file_size_limit(limit, cli(home, [*argv, "--resume"])), case / "failed.log")
    assert failed.wait(120) == 2, failed.output()
    line = _one_error(failed)
    assert line.startswith(f"error: cannot write {out}: File too large; the last good checkpoint is "
                           f"{out / 'checkpoints' / 'step-2'}"), line
    assert _run_files(out) == before  # every file whole: the old weights, record and card, no staged leftovers
def _embeddings_call(data) -> Callable[[Path, Path, int], Callable[[], int]]:
    def make(home: Path, folder: Path, attempt: int) -> Callable[[], int]:
        def call() -> int:
            os.environ["RPO_BENCH_HOME"] = str(home)
            from rpo_bench.training.embeddings import compute_embeddings

            compute_embeddings(data, "tiny-clip", batch_size=1, show_progress=False, cache_dir=folder)
            return 0

        return call

    return make


def _embeddings_progress(folder: Path) -> int:
    return count_rows(folder / "embeddings.sqlite", "embeddings")


def _embedding_rows(folder: Path) -> list[tuple]:
    db = sqlite3.connect(folder / "embeddings.sqlite")
    try:
        return db.execute("SELECT model, sample_id, dim, text, image_w, image_l FROM embeddings "
                          "ORDER BY model, sample_id").fetchall()
    finally:
        db.close()


@pytest.fixture(scope="module")
def preference_data(pairs_reference):
    from rpo_bench.training.data import load_preference_data

    return load_preference_data(str(pairs_reference.folder / "pairs"))


@pytest.fixture(scope="module")
def embeddings_reference(world, session_home, preference_data) -> Reference:
    return _reference(world, session_home, "embeddings", _embeddings_call(preference_data), _embeddings_progress)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_embedding_cache_killed_at_seeded_points_resumes_to_the_same_embeddings(world, session_home, preference_data,
                                                                                embeddings_reference, seed,
                                                                                monkeypatch):
    from rpo_bench.training.embeddings import compute_embeddings

    expected = _embedding_rows(embeddings_reference.folder)
    assert len(expected) == len(preference_data)
    monkeypatch.setenv("RPO_BENCH_HOME", str(embeddings_reference.home))
    reference = compute_embeddings(preference_data, "tiny-clip", show_progress=False,
                                   cache_dir=embeddings_reference.folder)

    def check(home: Path, folder: Path) -> None:
        assert _embedding_rows(folder) == expected
        table = compute_embeddings(preference_data, "tiny-clip", show_progress=False, cache_dir=folder)
        assert (table.computed, table.from_cache) == (0, len(preference_data))
        for name in ("text", "image_w", "image_l"):
            assert torch.equal(getattr(table, name), getattr(reference, name))

    kill_resume_and_check(world, session_home, "embeddings", seed, _embeddings_call(preference_data),
                          _embeddings_progress, embeddings_reference.timing, check)


# -- score ------------------------------------------------------------------------------------------------------------
SCORE_IMAGES = 12


@pytest.fixture(scope="module")
def score_images(world) -> Path:
    folder = world / "score-images"
    folder.mkdir()
    for i in range(SCORE_IMAGES):
        pixels = np.random.default_rng(i).integers(0, 255, (40 + 4 * i, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return folder


def _score_call(images: Path) -> Callable[[Path, Path, int], Callable[[], int]]:
    def make(home: Path, folder: Path, attempt: int) -> Callable[[], int]:
        return cli(home, _score_argv(images, folder / "scores.jsonl", 2))

    return make


def _score_progress(folder: Path) -> int:
    return count_lines(folder / "scores.jsonl")


def _score_rows(folder: Path) -> set[tuple]:
    """Every line must be a complete row; rows compare as a set (a resumed run writes them in another order)."""
    rows = set()
    for number, line in enumerate((folder / "scores.jsonl").read_text(encoding="utf-8").splitlines(), 1):
        try:
            rows.add(tuple(sorted(json.loads(line).items())))
        except ValueError as exc:
            raise AssertionError(f"scores.jsonl line {number} is not a row: {line!r}") from exc
    return rows


@pytest.fixture(scope="module")
def score_reference(world, session_home, score_images) -> Reference:
    return _reference(world, session_home, "score", _score_call(score_images), _score_progress)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_score_killed_at_seeded_points_resumes_to_the_same_rows(world, session_home, score_images, score_reference,
                                                                seed):
    expected = _score_rows(score_reference.folder)
    assert len(expected) == 2 * SCORE_IMAGES
    kill_resume_and_check(world, session_home, "score", seed, _score_call(score_images), _score_progress,
                          score_reference.timing, lambda home, folder: _check_equal(_score_rows(folder), expected))


def _score_argv(images: Path, out: Path, batch_size: int) -> list[str]:
    return ["score", str(images), "--metrics", "tiny-clip,tiny-pickscore", "--prompt", "a red cube",
            "--batch-size", str(batch_size), "--device", "cpu", "--out", str(out)]


def test_score_rerun_after_a_kill_that_tore_the_last_line_keeps_every_row(world, session_home, score_images,
                                                                          score_reference):
    """A batch whose rows pass the 8 kB write buffer is written in several write() calls, and a kill between
    two leaves the last line cut. Made here directly: the reference's rows, the last one cut in half."""
    home = private_home(world, session_home, "score-torn")
    out = world / "score-torn" / "scores.jsonl"
    lines = (score_reference.folder / "scores.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[:5]) + lines[5][:len(lines[5]) // 2], encoding="utf-8")
    run_to_end(cli(home, _score_argv(score_images, out, 2)), world / "score-torn" / "rerun.log")
    # the cut fragment is gone (every line parses, so any JSONL reader reads the file) and no row is lost
    assert _score_rows(world / "score-torn") == _score_rows(score_reference.folder)


def _check_equal(found, expected) -> None:
    assert found == expected


# -- download ---------------------------------------------------------------------------------------------------------
def _blob(seed: int, size: int = 160_000) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (size // 32)


HUB_FILES = {  # the files an SD1.5 pipeline is read from (what `download` asks for), three of them big
    "model_index.json": b'{"_class_name": "StableDiffusionPipeline"}',
    "unet/config.json": b'{"sample_size": 8}',
    "unet/diffusion_pytorch_model.safetensors": _blob(1),
    "vae/config.json": b'{"latent_channels": 4}',
    "vae/diffusion_pytorch_model.safetensors": _blob(2),
    "text_encoder/config.json": b'{"hidden_size": 8}',
    "text_encoder/model.safetensors": _blob(3),
    "tokenizer/vocab.json": b'{"a": 0}',
    "tokenizer/merges.txt": b"#version: 0.2\n",
    "scheduler/scheduler_config.json": b'{"steps_offset": 1}',
    "feature_extractor/preprocessor_config.json": b'{"crop_size": 8}',
}
HUB_REPO = "me/fault-sd"
HUB_FOLDER = "models--me--fault-sd"


@pytest.fixture(scope="module")
def slow_hub():
    from tests.fault_hub import SlowHub
    from tests.hub_server import FakeRepo

    hub = SlowHub().start()
    hub.add(FakeRepo(HUB_REPO, dict(HUB_FILES)))
    yield hub
    hub.stop()


def _download_call(hub) -> Callable[[Path, Path, int], Callable[[], int]]:
    def make(home: Path, folder: Path, attempt: int) -> Callable[[], int]:
        def call() -> int:
            # Online against the local hub, in this child only; huggingface_hub read these at import time.
            from huggingface_hub import constants

            from rpo_bench.cli import main
            from rpo_bench.evaluation.prompts import PROMPT_SETS
            from rpo_bench.metrics import METRICS
            from rpo_bench.models.catalog import MODELS

            (home / "registry.toml").write_text(f'[models.fault-sd]\nfamily = "sd15"\nrepo = "{HUB_REPO}"\n')
            os.environ.update(RPO_BENCH_HOME=str(home), HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(folder / "hf"))
            os.environ.pop("HF_HUB_OFFLINE", None)
            constants.ENDPOINT = hub.url
            constants.HUGGINGFACE_CO_URL_TEMPLATE = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
            constants.HF_HUB_CACHE = str(folder / "hf")
            constants.HF_HUB_OFFLINE = False
            # huggingface_hub writes a download in 10 MB pieces; scaled down with the files, so that kills land
            # between pieces of a file as they do in a multi-GB checkpoint.
            constants.DOWNLOAD_CHUNK_SIZE = 16_384
            for registry in (MODELS, METRICS, PROMPT_SETS):
                registry.reset_plugins()
            return main(["download", "fault-sd"])

        return call

    return make


def _download_progress(folder: Path) -> int:
    return folder_bytes(folder / "hf" / HUB_FOLDER / "blobs")


def _download_record(home: Path) -> dict:
    record = json.loads((home / "downloads" / "fault-sd.json").read_text(encoding="utf-8"))
    record.pop("fetched_at")
    return record


@pytest.fixture(scope="module")
def download_reference(world, session_home, slow_hub) -> Reference:
    return _reference(world, session_home, "download", _download_call(slow_hub), _download_progress)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_download_killed_at_seeded_points_continues_to_the_same_files(world, session_home, slow_hub,
                                                                      download_reference, seed):
    expected_blobs = sorted(p.name for p in (download_reference.folder / "hf" / HUB_FOLDER / "blobs").iterdir())
    requests_before = len(slow_hub.requests)
    expected_record = _download_record(download_reference.home)

    def check(home: Path, folder: Path) -> None:
        repo = folder / "hf" / HUB_FOLDER
        (snapshot,) = (repo / "snapshots").iterdir()
        files = {p.relative_to(snapshot).as_posix(): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()}
        assert files == HUB_FILES
        assert sorted(p.name for p in (repo / "blobs").iterdir()) == expected_blobs  # no partial file left
        assert _download_record(home) == expected_record
        # Kills land mid-file (the files arrive in 16 kB pieces): what was on disk is continued, not fetched again.
        assert any(r.range for r in slow_hub.requests[requests_before:]), "no download was continued"

    kill_resume_and_check(world, session_home, "download", seed, _download_call(slow_hub), _download_progress,
                          download_reference.timing, check)


# -- E9: a kill or a full disk at any write leaves the old file or the new one, never a torn or empty one --------
def _die_writing(call: Callable[[], int | None], name: str, log: Path) -> int:
    from tests.fault_harness import die_while_writing

    return die_while_writing(call, name, log, timeout=300)


def test_a_kill_while_rewriting_the_project_readme_leaves_it_whole_and_a_rerun_updates_it(tmp_path):
    from rpo_bench.workflows.leaderboard import update_readme_block

    readme = tmp_path / "README.md"
    original = "# project\n\nprose before\n<!-- leaderboard:micro -->\n| old |\n<!-- /leaderboard:micro -->\nafter\n"
    readme.write_text(original, encoding="utf-8")
    code = _die_writing(lambda: update_readme_block(readme, "micro", ["| new |"]) and None, "README.md",
                        tmp_path / "child.log")
    assert code == -signal.SIGXFSZ  # it did die mid-write
    assert readme.read_text(encoding="utf-8") == original  # not 0 bytes: prose and markers intact
    assert update_readme_block(readme, "micro", ["| new |"])  # so the rerun finds its markers
    assert readme.read_text(encoding="utf-8") == original.replace("| old |", "| new |")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "child.log"]  # the killed temp file is gone


@pytest.fixture
def small_store(tmp_path):
    from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate

    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    evaluate(EvaluateConfig(models=("tiny-sd15", "tiny-sd15-alt"), prompts=str(prompts), metrics=("tiny-clip",),
                            seeds=(0,), protocol="tiny", store=tmp_path / "r.sqlite", image_cache=tmp_path / "images",
                            show_progress=False))
    return tmp_path / "r.sqlite"


def test_a_kill_while_writing_report_out_leaves_the_old_report(small_store, tmp_path):
    from rpo_bench.cli import main

    out = tmp_path / "report.md"
    assert main(["report", "--store", str(small_store), "--out", str(out)]) == 0
    before = out.read_bytes()
    code = _die_writing(lambda: main(["report", "--store", str(small_store), "--out", str(out), "--baseline",
                                      "tiny-sd15-alt"]), "report.md", tmp_path / "child.log")
    assert code == -signal.SIGXFSZ
    assert out.read_bytes() == before


def test_report_out_on_a_full_disk_is_one_line_and_keeps_the_old_report(small_store, tmp_path):
    """The disk fills up as the report is written: one line naming the file, and the old report stays whole."""
    from rpo_bench.cli import main
    from tests.fault_harness import die_while_writing

    out = tmp_path / "report.md"
    assert main(["report", "--store", str(small_store), "--out", str(out)]) == 0
    assert out.stat().st_size > 1024  # more than the disk will take
    out.write_text("the old report\n", encoding="utf-8")
    log = tmp_path / "child.log"
    code = die_while_writing(lambda: main(["report", "--store", str(small_store), "--out", str(out)]), "report.md",
                             log, kill=False)
    assert code == 2
    lines = [line for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write the report {out}: File too large")
    assert out.read_text(encoding="utf-8") == "the old report\n"
