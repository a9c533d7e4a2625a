"""An unreachable Hub is one line, whatever the environment (issue E9, Deliver 8).

Each command runs in-process against a local port that refuses connections, with HF_HUB_OFFLINE unset and an
empty Hugging Face cache: what an air-gapped cluster or a firewall looks like. Before, these printed up to 109
lines ending in a ConnectError traceback, or 41 s of retry warnings, each twice.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.hub_server import refusing_endpoint


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """huggingface_hub reads its cache folder once at import: the constant is patched with the variable."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def unreachable_hub(monkeypatch, empty_hf_cache):
    """HF_ENDPOINT at a refusing port, online (tests/conftest.py sets HF_HUB_OFFLINE=1 for every other test)."""
    from huggingface_hub import constants

    from rpo_bench.hub import availability as hub_preflight
    endpoint = refusing_endpoint()
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_preflight, "_PROBED", {})  # the probe is once per process: once per test here
    return endpoint


def run_cli(capfd, *argv: str) -> tuple[int, list[str]]:
    """Exit code and the non-empty stderr lines (capfd: library handlers that write to the stream count too)."""
    from rpo_bench.cli import main

    code = main(list(argv))
    _, err = capfd.readouterr()
    return code, [line for line in err.splitlines() if line.strip()]


def assert_one_line(lines: list[str], *fragments: str) -> None:
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# -- the cases, with HF_HUB_OFFLINE unset -----------------------------------------------------------------
def test_evaluate_two_missing_models_with_an_unreachable_hub_is_one_line(unreachable_hub, tmp_path, capfd):
    store = tmp_path / "r.sqlite"
    code, lines = run_cli(capfd, "evaluate", "--models", "sd15-base,sd15-dpo", "--store", str(store))
    assert code == 2
    assert_one_line(lines, "model sd15-base (stable-diffusion-v1-5/stable-diffusion-v1-5)",
                    "model sd15-dpo (", "mhdang/dpo-sd1.5-text2image-v1", f"the Hub at {unreachable_hub} cannot "
                    "be reached", "`rpo-bench download sd15-base sd15-dpo`")
    assert not store.exists()  # refused before the store was opened


def test_evaluate_missing_scorer_with_an_unreachable_hub_is_one_line(unreachable_hub, tmp_path, capfd):
    code, lines = run_cli(capfd, "evaluate", "--metrics", "hpsv2", "--store", str(tmp_path / "r.sqlite"))
    assert code == 2
    assert_one_line(lines, "metric hpsv2 (xswu/HPSv2)", "cannot be reached", "`rpo-bench download hpsv2`")


def test_evaluate_hub_prompt_set_with_an_unreachable_hub_is_one_line(unreachable_hub, tmp_path, capfd):
    code, lines = run_cli(capfd, "evaluate", "--prompts", "pickapic-val", "--store", str(tmp_path / "r.sqlite"))
    assert code == 2
    assert_one_line(lines, "prompt set pickapic-val (hf:yuvalkirstain/pickapic_v2_no_images)", "cannot be reached",
                    "`rpo-bench download pickapic-val`")


def test_train_style_from_a_hub_dataset_with_an_unreachable_hub_is_one_line(unreachable_hub, tmp_path, capfd):
    output = tmp_path / "out"
    code, lines = run_cli(capfd, "train", "--style", "vangogh", "--output", str(output), "--quiet")
    assert code == 2
    assert_one_line(lines, "model sd15-base (", "style vangogh (references from hf:huggan/wikiart, "
                    "openai/clip-vit-large-patch14)", "cannot be reached", "`rpo-bench download sd15-base vangogh`")
    assert not output.exists()


def test_every_missing_model_scorer_and_prompt_set_is_named_at_once(unreachable_hub, tmp_path, capfd):
    code, lines = run_cli(capfd, "evaluate", "--models", "micro-base,sd15-base", "--metrics", "micro-oracle,hpsv2,clip",
                          "--prompts", "pickapic-val", "--store", str(tmp_path / "r.sqlite"))
    assert code == 2
    assert_one_line(lines, "`rpo-bench download sd15-base hpsv2 clip pickapic-val`")
    assert "micro-base" not in lines[0] and "micro-oracle" not in lines[0]  # built here: nothing to fetch


def test_download_with_an_unreachable_hub_is_one_line(unreachable_hub, capfd):
    for name in ("sd15-base", "vangogh", "pickapic-val"):
        code, lines = run_cli(capfd, "download", name)
        assert code == 2
        assert_one_line(lines, "rpo-bench download needs the Hub", f"{unreachable_hub} cannot be reached")


def test_library_warnings_are_printed_once(tmp_path):
    """huggingface_hub and datasets each have their own stderr handler: the CLI's root handler printed every one
    of their warnings (the retry storm's included) a second time."""
    script = ("import logging, datasets, huggingface_hub\n"
              "from rpo_bench.cli import main\n"
              "main(['protocols'])\n"
              "logging.getLogger('huggingface_hub.utils._http').warning('Retrying in 1s [Retry 1/5].')\n"
              "logging.getLogger('datasets.load').warning('Using the latest cached version of the dataset')\n")
    env = {**os.environ, "RPO_BENCH_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("Retrying in 1s [Retry 1/5].") == 1, done.stderr
    assert done.stderr.count("Using the latest cached version of the dataset") == 1, done.stderr


# -- offline (HF_HUB_OFFLINE=1, the test configuration's own) -------------------------------------------------------
def test_offline_error_names_every_missing_model_not_only_the_first(empty_hf_cache, tmp_path, capfd):
    code, lines = run_cli(capfd, "evaluate", "--models", "sd15-base,sd15-dpo", "--store", str(tmp_path / "r.sqlite"))
    assert code == 2
    assert_one_line(lines, "model sd15-base (", "model sd15-dpo (", "HF_HUB_OFFLINE is set",
                    "`rpo-bench download sd15-base sd15-dpo`")


def test_a_style_metric_names_its_style_whose_download_brings_the_clip(empty_hf_cache, tmp_path, capfd):
    code, lines = run_cli(capfd, "evaluate", "--models", "sd15-base", "--metrics", "style-prob:vangogh,clip",
                          "--store", str(tmp_path / "r.sqlite"))
    assert code == 2
    assert_one_line(lines, "style vangogh (references from hf:huggan/wikiart, openai/clip-vit-large-patch14)",
                    "`rpo-bench download sd15-base vangogh`")  # style-prob's and clip's CLIP come with the style


# -- download knows every kind ------------------------------------------------------------------------------------
def test_download_vangogh_is_a_style_and_did_you_mean_searches_every_kind(empty_hf_cache, capfd):
    code, lines = run_cli(capfd, "download", "--dry-run", "vangogh")
    assert code == 0 and lines == []
    code, lines = run_cli(capfd, "download", "--dry-run", "vangog")
    assert code == 2
    assert_one_line(lines, "unknown model, metric, prompt set or style 'vangog'", "did you mean vangogh (style)")


def test_download_dry_run_lists_a_style_clip_and_references(empty_hf_cache, capsys):
    from rpo_bench.cli import main

    assert main(["download", "--dry-run", "vangogh", "micro-sketch"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal's width
    assert "vangogh (style): openai/clip-vit-large-patch14" in out and "model.safetensors" in out
    assert "references of hf:huggan/wikiart" in out and "not fetched yet" in out
    assert "micro-sketch (style): references: micro world renders" in out and "nothing to download" in out
    assert main(["download", "--dry-run", "--kind", "styles", "vangogh"]) == 0
