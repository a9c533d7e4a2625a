"""The style registry and its reference images: built-ins, user styles and overrides, folders with captions,
micro renders, fingerprints, and the one-line refusals (unreadable, too few, not fetched while offline)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rpo_bench.core.errors import BadInputError, MissingWeightsError, UnknownNameError
from rpo_bench.style.registry import (
    MIN_REFERENCES,
    STYLES,
    get_style,
    reference_images,
    references_fingerprint,
    style_from_table,
)


@pytest.fixture
def own_home(tmp_path, monkeypatch, session_home):
    """A home of this test's own (its registry.toml is read), sharing the session's built tiny models."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(session_home / "models", target_is_directory=True) if (
        session_home / "models").is_dir() else None
    monkeypatch.setenv("RPO_BENCH_HOME", str(home))
    STYLES.reset_plugins()
    yield home
    STYLES.reset_plugins()


def _folder(path: Path, n: int, captions: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path / f"{i:02d}.png")
    if captions:
        (path / "captions.jsonl").write_text("".join(json.dumps({"file": f, "caption": c}) + "\n"
                                                     for f, c in captions.items()), encoding="utf-8")
    return path


def _user_style(home: Path, text: str) -> None:
    (home / "registry.toml").write_text(text, encoding="utf-8")
    STYLES.reset_plugins()


def test_built_in_styles_name_their_sources():
    names = STYLES.names()
    assert {"vangogh", "sketch", "micro-sketch", "micro-vangogh", "micro-pixel", "micro-watercolor"} <= set(names)
    vangogh = get_style("vangogh")
    assert vangogh.source_text == "hf:huggan/wikiart [train] where artist = vincent-van-gogh"
    assert "verify on first real download" in vangogh.verify
    assert get_style("micro-sketch").judges == ("micro-style:sketch", "micro-oracle")


def test_unknown_style_suggests_close_names():
    with pytest.raises(UnknownNameError, match="did you mean micro-sketch"):
        get_style("micro-skech")


def test_micro_references_are_deterministic_renders_with_content_captions():
    style = get_style("micro-sketch")
    first, again = reference_images(style), reference_images(style)
    assert len(first) == style.references
    assert [r.sha256 for r in first] == [r.sha256 for r in again]
    assert all("sketch" not in r.caption for r in first)  # the caption never names the style
    assert first[0].image.size == (32, 32)
    assert references_fingerprint(style) != references_fingerprint(get_style("micro-vangogh"))


def test_folder_style_reads_captions_file_text_files_and_template(own_home, tmp_path):
    folder = _folder(tmp_path / "refs", MIN_REFERENCES + 2, {"00.png": "a red barn"})
    (folder / "01.txt").write_text("a windmill\n", encoding="utf-8")
    _user_style(own_home, f'[styles.mine]\nfolder = "{folder}"\nprompts = "smoke"\ncaption = "a painting"\n'
                          'base_model = "tiny-sd15"\nembedding = "tiny-clip:0"\n')
    references = reference_images(get_style("mine"))
    assert [r.caption for r in references[:3]] == ["a red barn", "a windmill", "a painting"]
    assert [r.name for r in references] == sorted(r.name for r in references)


def test_user_folder_overrides_a_built_in_source(own_home, tmp_path):
    folder = _folder(tmp_path / "vg", MIN_REFERENCES)
    _user_style(own_home, f'[styles.vangogh]\nfolder = "{folder}"\n')
    style = get_style("vangogh")
    assert style.folder == str(folder) and style.dataset is None
    assert style.prompts == "style-content" and style.base_model == "sd15-base"  # the rest is kept
    assert len(reference_images(style)) == MIN_REFERENCES


def test_fingerprint_follows_the_images(own_home, tmp_path):
    folder = _folder(tmp_path / "refs", MIN_REFERENCES)
    _user_style(own_home, f'[styles.mine]\nfolder = "{folder}"\nprompts = "smoke"\n')
    before = references_fingerprint(get_style("mine"))
    _user_style(own_home, f'[styles.mine]\nfolder = "{folder}"\nprompts = "smoke"\nreferences = 21\n')
    Image.new("RGB", (16, 16), "white").save(folder / "99.png")
    assert references_fingerprint(get_style("mine")) != before


def test_refusals_name_the_problem(own_home, tmp_path):
    few = _folder(tmp_path / "few", 3)
    unreadable = tmp_path / "bad"
    unreadable.mkdir()
    (unreadable / "a.png").write_bytes(b"text")
    _user_style(own_home, f'[styles.few]\nfolder = "{few}"\nprompts = "smoke"\n'
                          f'[styles.bad]\nfolder = "{unreadable}"\nprompts = "smoke"\n')
    with pytest.raises(BadInputError, match=f"3 reference image.*at least {MIN_REFERENCES}"):
        reference_images(get_style("few"))
    with pytest.raises(BadInputError, match="no readable images"):
        reference_images(get_style("bad"))
    with pytest.raises(MissingWeightsError, match="styles fetch vangogh"):  # HF_HUB_OFFLINE is set in tests
        reference_images(get_style("vangogh"))


@pytest.mark.parametrize("table, fragment", [
    ({"prompts": "smoke"}, "exactly one reference source"),
    ({"folder": "x", "micro": "sketch", "prompts": "smoke"}, "exactly one reference source"),
    ({"folder": "x"}, "`prompts`"),
    ({"folder": "x", "prompts": "smoke", "references": 5}, "references = 5"),
    ({"folder": "x", "prompts": "smoke", "colour": "red"}, "unknown key"),
])
def test_bad_style_tables(table, fragment):
    with pytest.raises(BadInputError, match=fragment):
        style_from_table("mine", table, source="user")


# -- E9: a style folder's files read through the one reader of user files ---------------------------------------------
def _mine(own_home, folder: Path) -> None:
    _user_style(own_home, f'[styles.mine]\nfolder = "{folder}"\nprompts = "smoke"\n')


def test_latin1_captions_jsonl_is_one_line_naming_file_and_offset(own_home, tmp_path):
    folder = _folder(tmp_path / "refs", MIN_REFERENCES)
    (folder / "captions.jsonl").write_bytes('{"file": "00.png", "caption": "caf\xe9"}\n'.encode("latin-1"))
    _mine(own_home, folder)
    with pytest.raises(BadInputError) as caught:
        reference_images(get_style("mine"))
    assert str(caught.value).startswith(f"captions file {folder / 'captions.jsonl'} is not UTF-8 text: byte 0xe9 at "
                                        "offset 34 (line 1)")


def test_latin1_name_txt_caption_is_one_line_naming_file_and_offset(own_home, tmp_path):
    folder = _folder(tmp_path / "refs", MIN_REFERENCES)
    (folder / "01.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    _mine(own_home, folder)
    with pytest.raises(BadInputError, match=r"caption file .*01.txt is not UTF-8 text: byte 0xe9 at offset 3"):
        reference_images(get_style("mine"))


def test_captions_with_a_number_for_a_caption_name_the_line(own_home, tmp_path):
    folder = _folder(tmp_path / "refs", MIN_REFERENCES)
    (folder / "captions.jsonl").write_text('{"file": "00.png", "caption": "a"}\n{"file": "01.png", "caption": 5}\n',
                                           encoding="utf-8")
    _mine(own_home, folder)
    with pytest.raises(BadInputError, match=r"captions.jsonl line 2: .*accepted: one \{\"file\""):
        reference_images(get_style("mine"))


def test_fifo_in_reference_folder_is_refused_without_opening_it(own_home, tmp_path):
    import os
    import threading

    folder = _folder(tmp_path / "refs", MIN_REFERENCES)
    os.mkfifo(folder / "zz.png")
    _mine(own_home, folder)

    def unblock():  # a reader that opened the FIFO would wait forever: let it read nothing and fail the test
        try:
            os.close(os.open(folder / "zz.png", os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass

    timer = threading.Timer(30, unblock)
    timer.daemon = True
    timer.start()
    try:
        with pytest.raises(BadInputError, match=r"reference image .*zz.png is a named pipe \(FIFO\); accepted: a "
                                                r"regular file"):
            reference_images(get_style("mine"))
    finally:
        timer.cancel()


def test_symlink_to_dev_zero_in_reference_folder_is_refused(own_home, tmp_path):
    folder = _folder(tmp_path / "refs", MIN_REFERENCES)
    (folder / "zz.png").symlink_to("/dev/zero")
    _mine(own_home, folder)
    with pytest.raises(BadInputError, match=r"zz.png is a device; accepted: a regular file \(or a link to one\)"):
        reference_images(get_style("mine"))


def test_oversized_reference_image_is_refused_naming_the_cap(own_home, tmp_path):
    from rpo_bench.style.registry import MAX_REFERENCE_BYTES

    folder = _folder(tmp_path / "refs", MIN_REFERENCES)
    with open(folder / "zz.png", "wb") as handle:  # sparse: nothing is written to disk
        handle.truncate(MAX_REFERENCE_BYTES + 1)
    _mine(own_home, folder)
    with pytest.raises(BadInputError, match=f"zz.png is .* bytes; accepted: at most {MAX_REFERENCE_BYTES // 2**20} "
                                            "MiB per file"):
        reference_images(get_style("mine"))


def test_symlinked_reference_image_is_read(own_home, tmp_path):
    folder = _folder(tmp_path / "refs", MIN_REFERENCES)
    (folder / "zz.png").symlink_to(folder / "00.png")
    _mine(own_home, folder)
    references = reference_images(get_style("mine"))
    assert len(references) == MIN_REFERENCES + 1 and references[-1].sha256 == references[0].sha256
