"""`python -m benchmarks`: the list, bad options, the JSON result of one tiny benchmark, and the full-size
architectures the GPU run builds (checked on the meta device and at mini scale on the CPU). No timing asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.__main__ import BENCHMARKS, latest_results
from benchmarks.__main__ import main as bench_main
from benchmarks.common import build_on, parameters, row, sd15_pipeline, sd15_unet, sdxl_pipeline

ROOT = Path(__file__).resolve().parents[1]
ROW_KEYS = {"what", "value", "unit", "ratio", "target", "holds", "details"}


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def test_list_names_every_benchmark_with_its_target(capsys):
    assert bench_main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("evaluate-cache", "batched-generation", "train-step", "scorers", "micro"):
        assert name in out
    assert "RPO / DPO <= 1.05" in out and "warm / cold <= 0.05" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--only", "evaluate-cache,nope"], "error: --only 'evaluate-cache,nope': unknown benchmark nope; accepted: "
                                        "evaluate-cache, batched-generation, train-step, methods, scorers, micro, "
                                        "micro-world, train-pool, style, demo, report, integrity, startup"),
    (["--device", "gpu"], "error: --device 'gpu' is not a benchmark device; accepted: cpu, cuda"),
    (["--budget", "-5"], "error: --budget -5: must be a number of seconds > 0 (0 or absent: no budget)"),
])
def test_bad_option_is_one_line_exit_2_and_writes_nothing(argv, message, capsys, tmp_path):
    assert bench_main([*argv, "--results-dir", str(tmp_path / "results")]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == message
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "results").exists()


def test_results_dir_that_is_a_file_is_refused_before_anything_runs(capsys, tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    assert bench_main(["--only", "scorers", "--results-dir", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --results-dir {blocker / 'sub'}: cannot create it (Not a directory); "
                   "give a writable folder")
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_cuda_without_a_gpu_is_refused_before_anything_runs(capsys, tmp_path):
    assert bench_main(["--device", "cuda", "--results-dir", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --device cuda: no CUDA GPU is visible to torch here; accepted on this machine: cpu"
    assert not (tmp_path / "results").exists()


def test_every_profile_has_options_and_a_timeout():
    for bench in BENCHMARKS:
        assert (ROOT / "benchmarks" / bench.script).is_file()
        for profile in ("cpu", "cpu-quick", "cuda", "cuda-quick"):
            assert profile in bench.options and bench.timeout_s[profile] > 0


def _report(date: str, cpu: str, **benchmarks: str) -> dict:
    return {"date": date, "command": f"python -m benchmarks ({date})", "profile": "cpu", "complete": True,
            "machine": {"cpu": cpu, "gpu": None},
            "benchmarks": {name: {"status": status, "rows": [], **({"measured_by": {"date": date}} if status == "ok"
                                                                  else {})}
                           for name, status in benchmarks.items()}}


def test_an_only_run_updates_its_benchmark_in_the_latest_results_and_keeps_the_others():
    full = _report("monday", "cpu A", **{"evaluate-cache": "ok", "train-step": "ok", "style": "ok"})
    only = _report("tuesday", "cpu A", **{"train-step": "ok"})
    latest = latest_results(full, only)
    assert list(latest["benchmarks"]) == ["evaluate-cache", "train-step", "style"]  # the benchmarks' own order
    assert {n: r["measured_by"]["date"] for n, r in latest["benchmarks"].items()} == {
        "evaluate-cache": "monday", "train-step": "tuesday", "style": "monday"}
    assert latest["date"] == "tuesday"


def test_a_skipped_benchmark_keeps_its_last_measurement_and_a_failed_one_replaces_it():
    full = _report("monday", "cpu A", **{"evaluate-cache": "ok", "train-step": "ok"})
    later = _report("tuesday", "cpu A", **{"evaluate-cache": "skipped: --budget spent", "train-step": "crashed"})
    latest = latest_results(full, later)["benchmarks"]
    assert latest["evaluate-cache"]["status"] == "ok" and latest["evaluate-cache"]["measured_by"]["date"] == "monday"
    assert latest["train-step"]["status"] == "crashed"


def test_results_of_another_machine_are_replaced_not_merged():
    full = _report("monday", "cpu A", **{"evaluate-cache": "ok", "train-step": "ok"})
    only = _report("tuesday", "cpu B", **{"train-step": "ok"})
    assert latest_results(full, only) == only
    assert latest_results(None, only) == only


def test_row_judges_a_ratio_against_its_target_and_leaves_information_unjudged():
    assert row("a", 0.04, "ratio", 0.04, "<= 0.05")["holds"] is True
    assert row("a", 0.06, "ratio", 0.06, "<= 0.05")["holds"] is False
    assert row("b", 1.9, "ratio", 1.9, ">= 2.0")["holds"] is False
    info = row("c", 12.5, "images/s", device="cpu")
    assert set(info) == ROW_KEYS and info["holds"] is None and info["details"] == {"device": "cpu"}


def test_full_size_architectures_have_the_published_parameter_counts():
    # The meta device builds the exact shapes without allocating weights: the GPU run's models, checked here.
    with torch.device("meta"):
        sd15, sdxl, half = sd15_pipeline("full"), sdxl_pipeline("full"), sd15_unet("half")
    assert parameters(sd15.unet) == 859_520_964  # runwayml/stable-diffusion-v1-5
    assert parameters(sd15.text_encoder) == 123_060_480  # CLIP ViT-L/14 text
    assert parameters(sd15.vae) == parameters(sdxl.vae) == 83_653_863
    assert parameters(sdxl.unet) == 2_567_463_684  # stabilityai/stable-diffusion-xl-base-1.0
    assert parameters(sdxl.text_encoder_2) == 694_659_840  # OpenCLIP bigG text with projection
    assert parameters(half) == 219_789_284  # the CPU memory check's fallback when full DPO does not fit
    assert sd15.scheduler.alphas_cumprod.device.type == "cpu"


@pytest.mark.parametrize("builder", [sd15_pipeline, sdxl_pipeline])
def test_mini_architecture_generates_through_the_same_build_path(builder):
    pipe = build_on("cpu", torch.float32, lambda: builder("mini"))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(prompt=["a red fox"], num_inference_steps=2, height=64, width=64, output_type="np").images
    assert images.shape == (1, 64, 64, 3)


def test_script_rejects_a_bad_value_in_one_line():
    done = subprocess.run([sys.executable, "benchmarks/bench_scorers.py", "--only", "hpsv2,nope", "--skip-full"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == ("error: --only 'hpsv2,nope': unknown scorer nope; accepted: "
                                                    "hpsv2, pickscore, imagereward, aesthetic")
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_quick_run_of_one_benchmark_writes_the_result_json(tmp_path):
    results = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "batched_generation",
                           "--results-dir", str(results)], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "holds" in done.stdout and "generation tiny-sd15: batch 8 / batch 1 images/s" in done.stdout
    files = sorted(p.name for p in results.iterdir())
    assert len(files) == 2 and "cpu-quick-latest.json" in files, files
    report = json.loads((results / "cpu-quick-latest.json").read_text())
    stamped = next(p for p in results.iterdir() if p.name != "cpu-quick-latest.json")
    assert json.loads(stamped.read_text()) == report
    umask = os.umask(0)
    os.umask(umask)
    assert stamped.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any file the user writes, not 0600
    assert report["complete"] is True
    assert report["device"] == "cpu" and report["profile"] == "cpu-quick"
    assert "--only batched_generation" in report["command"]
    machine = report["machine"]
    assert machine["cores"] >= 1 and machine["cpu"] and machine["memory_gib"] > 0 and machine["gpu"] is None
    assert machine["versions"]["torch"] and machine["versions"]["diffusers"] and machine["versions"]["transformers"]
    assert len(machine["git_commit"]) == 40
    assert list(report["benchmarks"]) == ["batched-generation"]
    result = report["benchmarks"]["batched-generation"]
    assert result["status"] == "ok" and result["seconds"] > 0
    rows = result["rows"]
    assert rows and all(set(r) == ROW_KEYS for r in rows)
    judged = [r for r in rows if r["target"] is not None]
    assert [r["target"] for r in judged] == [">= 2.0", ">= 2.0"]
    assert all(isinstance(r["holds"], bool) and r["ratio"] > 0 for r in judged)
    assert all(r["value"] > 0 for r in rows)


def _temporary_folders() -> set[Path]:
    root = Path(os.environ.get("TMPDIR", "/tmp"))
    return {*root.glob("rpo-bench-rows-*"), *root.glob("rpo-bench-bench-*")}


@pytest.mark.slow
def test_a_benchmark_out_of_budget_is_stopped_reported_and_leaves_nothing_behind(tmp_path):
    before = _temporary_folders()
    results = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "train-step", "--budget", "12",
                           "--results-dir", str(results)], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "train-step: timed out after" in done.stdout and "error" in done.stdout
    report = json.loads((results / "cpu-quick-latest.json").read_text())
    assert report["complete"] is True and report["benchmarks"]["train-step"]["status"].startswith("timed out")
    assert _temporary_folders() - before == set()  # the killed benchmark's temporary home went with it
