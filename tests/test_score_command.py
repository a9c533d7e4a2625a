"""`rpo-bench score`: image files in, scores out; bad files and prompts are one line; reruns resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from rpo_bench.cli import main


def _write_images(folder, n: int) -> list:
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:02d}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (48 + 8 * i, 64, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_scores_a_folder_with_several_metrics(tmp_path, capsys):
    _write_images(tmp_path / "images", 3)
    code, out, _ = _run(capsys, "score", str(tmp_path / "images"), "--metrics", "tiny-hpsv2,tiny-aesthetic",
                        "--prompt", "a red cat", "--out", str(tmp_path / "scores.jsonl"))
    assert code == 0 and "02.png" in out and "tiny-aesthetic" in out
    rows = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["metric"] for r in rows} == {"tiny-hpsv2", "tiny-aesthetic"}


def test_rerun_scores_only_what_the_output_file_lacks(tmp_path, capsys):
    paths = _write_images(tmp_path / "images", 3)
    out_file = tmp_path / "scores.jsonl"
    assert _run(capsys, "score", str(paths[0]), str(paths[1]), "--metrics", "tiny-pickscore", "--prompt", "a cat",
                "--out", str(out_file))[0] == 0
    first = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert _run(capsys, "score", *map(str, paths), "--metrics", "tiny-pickscore", "--prompt", "a cat",
                "--out", str(out_file))[0] == 0
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert rows[:2] == first and len(rows) == 3 and rows[2]["image"] == str(paths[2])


@pytest.mark.parametrize("setup, expected", [
    ("undecodable", "does not decode"),
    ("empty_prompt", "is empty"),
    ("prompt_count", "2 lines for 3 images"),
    ("unknown_metric", "did you mean"),
    ("unknown_version", "unknown metric 'hpsv2.3'; did you mean hpsv2.1, hpsv2"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, setup, expected):
    paths = _write_images(tmp_path / "images", 3)
    args = ["score", *map(str, paths), "--metrics", "tiny-hpsv2", "--prompt", "a cat"]
    if setup == "undecodable":
        (tmp_path / "images" / "03.png").write_bytes(b"not a png at all")
        args[1:4] = [str(tmp_path / "images")]
    elif setup == "empty_prompt":
        args[-1] = " "
    elif setup == "prompt_count":
        (tmp_path / "prompts.txt").write_text("a cat\na dog\n")
        args[-2:] = ["--prompts", str(tmp_path / "prompts.txt")]
    elif setup == "unknown_metric":
        args[5] = "hpsv3"
    else:
        args[5] = "hpsv2.3"
    code, _, err = _run(capsys, *args)
    assert code == 2 and expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
