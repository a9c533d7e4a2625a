"""Training across processes: SIGKILL then --resume equals an uninterrupted run; --contrast global on 2 CPU
processes equals 1 process on the concatenated batch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.test_training import preference_folder  # noqa: F401 - the shared session fixture

TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")


def _train_args(data, output, *extra: str) -> list[str]:
    return ["train", "--model", "tiny-sd15", "--data", str(data), "--output", str(output), "--lora-rank", "4",
            "--lr", "1e-3", "--beta", "500", "--device", "cpu", "--quiet", *extra]


def _env(session_home) -> dict[str, str]:
    return {**os.environ, "RPO_BENCH_HOME": str(session_home), "OMP_NUM_THREADS": "1"}


def _lora(output) -> dict[str, torch.Tensor]:
    return load_file(output / "pytorch_lora_weights.safetensors")


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_weights_of_an_uninterrupted_run(preference_folder, tmp_path, session_home):  # noqa: F811
    args = ("--method", "rpo", "--steps", "6", "--checkpoint-every", "2", "--pairs-per-device", "3")
    env = _env(session_home)
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "rpo_bench", *_train_args(preference_folder, killed, *args)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if (killed / "checkpoints" / "step-2").is_dir():
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "training ended before it could be killed mid-way"
    assert not (killed / "pytorch_lora_weights.safetensors").exists()
    resumed = subprocess.run([sys.executable, "-m", "rpo_bench",
                              *_train_args(preference_folder, killed, *args, "--resume")],
                             env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed at step" in resumed.stdout
    clean = tmp_path / "clean"
    subprocess.run([sys.executable, "-m", "rpo_bench", *_train_args(preference_folder, clean, *args)],
                   env=env, check=True, capture_output=True)
    killed_weights, clean_weights = _lora(killed), _lora(clean)
    assert killed_weights.keys() == clean_weights.keys()
    assert all(torch.equal(killed_weights[k], clean_weights[k]) for k in clean_weights)
    steps = [json.loads(line)["step"] for line in (killed / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which(TORCHRUN) is None, reason="needs torchrun")
def test_global_contrast_on_two_processes_equals_one_process(preference_folder, tmp_path, session_home):  # noqa: F811
    env = _env(session_home)
    common = ("--method", "rpo", "--steps", "2", "--tau", "0.5", "--contrast", "global", "--max-grad-norm", "0")
    single, double, local = tmp_path / "single", tmp_path / "double", tmp_path / "local"
    subprocess.run([sys.executable, "-m", "rpo_bench", *_train_args(preference_folder, single, *common,
                                                                    "--pairs-per-device", "4")],
                   env=env, check=True, capture_output=True)
    for output, contrast in ((double, "global"), (local, "local")):
        result = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "rpo_bench",
                                 *_train_args(preference_folder, output, *common, "--pairs-per-device", "2",
                                              "--contrast", contrast)],
                                env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
    logs = {name: [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
            for name, folder in (("single", single), ("double", double), ("local", local))}
    for one, two in zip(logs["single"], logs["double"], strict=True):
        assert two["loss"] == pytest.approx(one["loss"], rel=1e-4)
        assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-3)
        assert two["acc_offdiag"] == pytest.approx(one["acc_offdiag"])
    a, b = _lora(single), _lora(double)
    # Float sums in another order. Adam moves a weight by about lr whatever its gradient's size, so a coordinate
    # whose true gradient is zero (float noise of either sign) may move +lr in one run and -lr in the other: those
    # differ by at most 2 * lr per step; every other weight agrees to float precision.
    bound = 2 * 1e-3 * 2
    assert all(float((a[k] - b[k]).abs().max()) <= bound for k in a)
    close = sum(int(torch.isclose(a[k], b[k], atol=1e-5, rtol=1e-4).sum()) for k in a)
    assert close >= 0.999 * sum(a[k].numel() for k in a)
    # the local contrast on 2 processes is a different objective (two 2x2 matrices, not one 4x4)
    # (step 1 is log 2 for both: LoRA starts as the identity, so D = 0)
    assert logs["local"][-1]["loss"] != pytest.approx(logs["single"][-1]["loss"], rel=1e-4)
