"""`rpo-bench score`: image files in, scores out; bad files and prompts are one line; reruns resume."""

from __future__ import annotations

import json
import struct
import zlib

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


# -- hostile and unusual image files (E5) ----------------------------------------------------------------------
def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height (1-bit grey) with almost no data: what a decompression bomb looks like
    to Image.open, which reads only the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def _one_line(code: int, out: str, err: str) -> str:
    assert code == 2 and "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("side", [10_000, 20_000], ids=["over-the-limit", "over-twice-the-limit"])
def test_decompression_bomb_is_one_line_naming_the_file_and_the_limit(tmp_path, capsys, side):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(side, side))
    line = _one_line(*_run(capsys, "score", str(bomb), "--metrics", "tiny-hpsv2", "--prompt", "a cat"))
    assert str(bomb) in line and f"{side * side} pixels" in line and str(Image.MAX_IMAGE_PIXELS) in line


def test_extreme_aspect_ratio_is_refused_naming_the_accepted_sizes(tmp_path, capsys):
    path = tmp_path / "strip.png"
    Image.fromarray(np.zeros((3, 4000, 3), dtype=np.uint8)).save(path)
    line = _one_line(*_run(capsys, "score", str(path), "--metrics", "tiny-hpsv2", "--prompt", "a cat"))
    assert str(path) in line and "4000x3" in line and "at most 100 times the shorter" in line


def test_the_most_elongated_accepted_image_scores(tmp_path, capsys):
    path = tmp_path / "banner.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (10, 1000, 3), dtype=np.uint8)).save(path)
    code, out, err = _run(capsys, "score", str(path), "--metrics", "tiny-hpsv2,tiny-aesthetic", "--prompt", "a cat")
    assert code == 0 and "banner.png" in out, err


@pytest.mark.parametrize("where, expected", [("folder", "is a folder"), ("no_parent", "does not exist")])
def test_bad_out_is_refused_before_any_model_loads(tmp_path, capsys, rpo_home, where, expected):
    paths = _write_images(tmp_path / "images", 2)
    out = tmp_path / "images" if where == "folder" else tmp_path / "missing" / "scores.jsonl"
    line = _one_line(*_run(capsys, "score", *map(str, paths), "--metrics", "tiny-hpsv2:7", "--prompt", "a cat",
                           "--out", str(out)))
    assert f"--out {out}" in line and expected in line
    assert not (rpo_home / "models" / "tiny-hpsv2-seed7").exists()  # the scorer was not even built
    assert not (tmp_path / "missing").exists()


def test_out_file_that_is_not_text_is_refused_and_kept(tmp_path, capsys):
    paths = _write_images(tmp_path / "images", 1)
    out = tmp_path / "scores.jsonl"
    out.write_bytes(b"\xff\xfe\x00binary")
    line = _one_line(*_run(capsys, "score", str(paths[0]), "--metrics", "tiny-hpsv2", "--prompt", "a cat",
                           "--out", str(out)))
    assert f"--out {out}" in line and "UTF-8" in line
    assert out.read_bytes() == b"\xff\xfe\x00binary"


def test_a_row_cut_by_a_kill_is_removed_and_the_file_stays_jsonl(tmp_path, capsys):
    paths = _write_images(tmp_path / "images", 2)
    out = tmp_path / "scores.jsonl"
    kept = '{"image": "scored before", "metric": "other", "version": "1", "value": 0.5}\n'
    out.write_text(kept + '{"image": "cut by a kill", "met', encoding="utf-8")  # no newline: died mid-row
    assert _run(capsys, "score", *map(str, paths), "--metrics", "tiny-hpsv2", "--prompt", "a cat",
                "--out", str(out))[0] == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]  # every line parses
    assert [row["image"] for row in rows] == ["scored before", *map(str, paths)]


def test_a_complete_last_row_without_its_newline_is_kept(tmp_path, capsys):
    paths = _write_images(tmp_path / "images", 1)
    out = tmp_path / "scores.jsonl"
    out.write_text('{"image": "edited by hand", "metric": "other", "version": "1", "value": 0.5}', encoding="utf-8")
    assert _run(capsys, "score", *map(str, paths), "--metrics", "tiny-hpsv2", "--prompt", "a cat",
                "--out", str(out))[0] == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["image"] for row in rows] == ["edited by hand", str(paths[0])]


def _grey() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (40, 56), dtype=np.uint8)


def _palette() -> Image.Image:
    image = Image.fromarray(np.random.default_rng(2).integers(0, 16, (40, 56), dtype=np.uint8), "P")
    image.putpalette(np.random.default_rng(3).integers(0, 256, 16 * 3, dtype=np.uint8).tobytes())
    return image


def _with_alpha() -> Image.Image:
    return Image.merge("LA", (Image.fromarray(_grey()), Image.fromarray(255 - _grey())))


def _cmyk() -> Image.Image:
    return Image.fromarray(np.random.default_rng(4).integers(0, 256, (40, 56, 3), dtype=np.uint8)).convert("CMYK")


# (file suffix, the image in an unusual mode, the same picture as an ordinary 8-bit image)
MODES = {
    "I;16": (".png", lambda: Image.fromarray(_grey().astype(np.uint16) * 257), lambda: Image.fromarray(_grey())),
    "I": (".tif", lambda: Image.fromarray(_grey().astype(np.int32) * 257, "I"), lambda: Image.fromarray(_grey())),
    "F": (".tif", lambda: Image.fromarray(_grey().astype(np.float32) / 255), lambda: Image.fromarray(_grey())),
    "P": (".png", _palette, lambda: _palette().convert("RGB")),
    "1": (".png", lambda: Image.fromarray(_grey()).convert("1"), lambda: Image.fromarray(_grey()).convert("1")
          .convert("L")),
    "LA": (".png", _with_alpha, lambda: _with_alpha().convert("RGBA")),
    "CMYK": (".tif", _cmyk, lambda: _cmyk().convert("RGB")),
}


@pytest.mark.parametrize("mode", MODES)
def test_images_score_like_the_same_picture_in_8_bit(tmp_path, capsys, mode):
    suffix, unusual, ordinary = MODES[mode]
    image = unusual()
    assert image.mode == mode
    image.save(tmp_path / f"a-unusual{suffix}")
    ordinary().save(tmp_path / "b-ordinary.png")
    out = tmp_path / "scores.jsonl"
    code, _, err = _run(capsys, "score", str(tmp_path / f"a-unusual{suffix}"), str(tmp_path / "b-ordinary.png"),
                        "--metrics", "tiny-hpsv2,tiny-aesthetic", "--prompt", "a cat", "--out", str(out))
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for metric in ("tiny-hpsv2", "tiny-aesthetic"):
        unusual_value, ordinary_value = (r["value"] for r in rows if r["metric"] == metric)
        assert unusual_value == pytest.approx(ordinary_value, abs=1e-5), metric


@pytest.mark.parametrize("make, expected", [
    (lambda: Image.fromarray(np.full((8, 8), 2.0, dtype=np.float32)), "values in [0, 1]"),
    (lambda: Image.fromarray(np.full((8, 8), np.nan, dtype=np.float32)), "values in [0, 1]"),
    (lambda: Image.fromarray(np.full((8, 8), -5, dtype=np.int32), "I"), "values 0..65535"),
    (lambda: Image.new("LAB", (8, 8)), "accepted modes: 1, L, LA, P"),
], ids=["float-over-1", "float-nan", "int-negative", "lab"])
def test_values_or_modes_that_cannot_be_converted_are_one_line(tmp_path, capsys, make, expected):
    path = tmp_path / "odd.tif"
    make().save(path)
    line = _one_line(*_run(capsys, "score", str(path), "--metrics", "tiny-hpsv2", "--prompt", "a cat"))
    assert str(path) in line and expected in line
