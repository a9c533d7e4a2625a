"""The CLI: registry listings, and bad input -> one clear line, non-zero exit, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rpo_bench.cli import main


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("registry, expected", [("models", "tiny-sdxl"), ("metrics", "tiny-clip"),
                                                ("prompts", "pickapic-val"), ("protocols", "spo-ddim20")])
def test_list_every_registry(capsys, registry, expected):
    code, out, _ = _run(capsys, registry)
    assert code == 0 and expected in out


@pytest.mark.parametrize("registry, name, expected", [
    ("models", "sd15-dpo", "mhdang/dpo-sd1.5-text2image-v1"), ("metrics", "clip", "higher is better"),
    ("prompts", "smoke", "red apple"), ("protocols", "dpo-default", "fingerprint")])
def test_show_one_entry(capsys, registry, name, expected):
    code, out, _ = _run(capsys, registry, "show", name)
    assert code == 0 and expected in out


@pytest.fixture
def files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    return {"empty": empty, "latin": latin, "not_a_model": not_a_model, "under_file": a_file / "r.sqlite",
            "store": tmp_path / "r.sqlite"}


BAD_INPUTS = [
    (["--models", "tiny-sd16"], "did you mean tiny-sd15"),
    (["--metrics", "tiny-clp"], "did you mean tiny-clip"),
    (["--prompts", "smok"], "did you mean smoke"),
    (["--protocol", "spo-ddim2"], "did you mean spo-ddim20"),
    (["--prompts", "{empty}"], "holds no prompts"),
    (["--prompts", "{latin}"], "not UTF-8"),
    (["--seeds", "0,x"], "'x'"),
    (["--models", "{not_a_model}"], "not a diffusers pipeline folder"),
    (["--models", "sd15-base"], "HF_HUB_OFFLINE"),
    (["--store", "{under_file}"], "cannot write the results store"),
    (["--batch-size", "0"], "--batch-size 0"),
    (["--dtype", "float8"], "float8"),
    (["--metrics", "tiny-clip:abc"], "tiny-clip:abc"),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_gets_one_line_and_exit_2(capsys, files, args, message):
    args = [a.format(**files) for a in args]
    if "--store" not in args:
        args += ["--store", str(files["store"])]
    code, out, err = _run(capsys, "evaluate", *args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err + out
    assert "generated" not in out  # failed before doing any work


def test_unknown_command_option_is_a_usage_error(capsys):
    code, _, err = _run(capsys, "evaluate", "--no-such-flag")
    assert code == 2 and "no-such-flag" in err


def test_installed_command_reports_errors_without_traceback():
    result = subprocess.run([sys.executable, "-m", "rpo_bench", "models", "show", "sdxl-bse"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "did you mean sdxl-base" in result.stderr and "Traceback" not in result.stderr
