"""The one reader of files a user hands in (rpo_bench.core.user_files): regular files only, checked before they are
opened, a size cap, UTF-8 with a BOM tolerated, and one line naming the file and the place it broke."""

from __future__ import annotations

import os
import threading

import pytest

from rpo_bench.cli import main
from rpo_bench.core.errors import BadInputError
from rpo_bench.core.user_files import MAX_BYTES, read_bytes, read_config, read_jsonl, read_text, read_toml


def _unblock_after(path, seconds: float = 30.0) -> threading.Timer:
    """A reader that wrongly opened the FIFO would wait for a writer forever: open the write end after a while, so
    such a reader gets an empty file and the test fails instead of hanging."""
    def open_writer():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:  # nobody is reading: the reader did not open it
            pass

    timer = threading.Timer(seconds, open_writer)
    timer.daemon = True
    timer.start()
    return timer


def test_utf8_with_a_byte_order_mark_is_read_without_it(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xef\xbb\xbfname = \"caf\xc3\xa9\"\n")
    assert read_text(path, "config file") == 'name = "café"\n'
    assert read_toml(path, "config file") == {"name": "café"}


def test_not_utf8_names_the_file_the_byte_offset_and_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"steps: 2\nname: caf\xe9\n")
    with pytest.raises(BadInputError) as caught:
        read_text(path, "config file")
    assert str(caught.value) == (f"config file {path} is not UTF-8 text: byte 0xe9 at offset 18 (line 2); accepted: "
                                 "UTF-8 text (save the file as UTF-8)")


def test_non_utf8_yaml_train_config_is_one_line_not_a_traceback(tmp_path, capsys):
    config = tmp_path / "latin1.yaml"
    config.write_bytes(b"steps: 2\nname: caf\xe9\n")
    assert main(["train", "--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"error: config file {config} is not UTF-8 text: byte 0xe9 at offset 18 "
                                        "(line 2); accepted: UTF-8 text (save the file as UTF-8)"]


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "zz.png"
    os.mkfifo(fifo)
    timer = _unblock_after(fifo)
    try:
        with pytest.raises(BadInputError, match=r"zz.png is a named pipe \(FIFO\); accepted: a regular file"):
            read_bytes(fifo, "reference image")
    finally:
        timer.cancel()


def test_a_link_to_a_device_is_refused_and_a_link_to_a_file_is_read(tmp_path):
    (tmp_path / "zero").symlink_to("/dev/zero")
    with pytest.raises(BadInputError, match="zero is a device"):
        read_bytes(tmp_path / "zero", "reference image")
    (tmp_path / "real.txt").write_text("a cat\n", encoding="utf-8")
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    assert read_text(tmp_path / "link.txt", "caption file") == "a cat\n"


def test_a_file_over_the_size_cap_is_refused_naming_the_cap(tmp_path):
    big = tmp_path / "big.png"
    with open(big, "wb") as handle:  # sparse: nothing is written to disk
        handle.truncate(MAX_BYTES + 1)
    cap = f"at most {MAX_BYTES // 2**20} MiB per file"
    with pytest.raises(BadInputError, match=f"big.png is {MAX_BYTES + 1:,} bytes; accepted: {cap}"):
        read_bytes(big, "reference image")
    assert read_bytes(big, "preference pairs file", max_bytes=None)[:4] == b"\0\0\0\0"


def test_missing_and_folder_are_one_line(tmp_path):
    with pytest.raises(BadInputError, match="config file .*nope.toml does not exist"):
        read_toml(tmp_path / "nope.toml", "config file")
    (tmp_path / "cfg.toml").mkdir()
    with pytest.raises(BadInputError, match="cfg.toml is a folder"):
        read_toml(tmp_path / "cfg.toml", "config file")


@pytest.mark.parametrize("name, text, expected", [
    ("c.toml", "[train]\nsteps = 2\n", {"train": {"steps": 2}}),
    ("c.yaml", "steps: 2\nlr: 1.0e-4\n", {"steps": 2, "lr": 1e-4}),
    ("c.yml", "", {}),
    ("c.json", '{"steps": 2}', {"steps": 2}),
])
def test_configs_of_every_suffix_read_as_tables(tmp_path, name, text, expected):
    (tmp_path / name).write_text(text, encoding="utf-8")
    assert read_config(tmp_path / name, "config file") == expected


@pytest.mark.parametrize("name, text, fragment", [
    ("c.yaml", "- steps: 2\n", "holds a list; accepted: a table of settings"),
    ("c.yaml", "1: 2\n", "key 1 is not text"),
    ("c.yaml", "steps: [1\n", "is not valid YAML"),
    ("c.json", '{"steps": 2,', "is not valid JSON (Expecting property name enclosed in double quotes at line 1"),
    ("c.json", "3", "holds a number"),
    ("c.toml", "[train\n", "is not valid TOML: Expected ']'"),
    ("c.ini", "[train]\n", "suffix '.ini'; accepted: .toml, .yaml, .yml, .json"),
])
def test_bad_configs_are_one_line_naming_the_file(tmp_path, name, text, fragment):
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(BadInputError, match=None) as caught:
        read_config(tmp_path / name, "config file")
    message = str(caught.value)
    assert str(tmp_path / name) in message and fragment in message and "\n" not in message


def test_jsonl_lines_are_numbered_and_a_bad_line_is_named(tmp_path):
    path = tmp_path / "captions.jsonl"
    path.write_text('{"a": 1}\n\n{"b": 2}\n{bad\n', encoding="utf-8")
    with pytest.raises(BadInputError, match=r"captions.jsonl is not valid JSON \(.* at line 4\)"):
        read_jsonl(path, "captions file")
    path.write_text('{"a": 1}\n\n{"b": 2}\n', encoding="utf-8")
    assert read_jsonl(path, "captions file") == [(1, {"a": 1}), (3, {"b": 2})]
