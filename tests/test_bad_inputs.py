"""The bad-input matrix (docs/bad-inputs.md): every case is one command line that must fail with one clear line.

This module is the single source of truth: `CASES` hold the command lines, the files each one needs (built at
test time) and a fragment the error line must contain; docs/bad-inputs.md is generated from them together with
the message the tool really prints:

    python -m tests.test_bad_inputs --write-docs     # rewrite docs/bad-inputs.md after changing a message
    python -m tests.test_bad_inputs [ID ...]         # print each case's outcome, change nothing

(RPO_BENCH_MODELS_CACHE=<folder> lets repeated runs of the script reuse one tiny-model cache.)

A case passes when the command exits with 2, prints exactly one non-empty line on stderr, starting with
`error:`, containing the fragment and no raw control character, shows no traceback anywhere, and leaves nothing
behind: no new, changed or removed file under the case's folder (its working directory; the shared tiny-model
cache, the image cache and the file-hash memo are caches and excluded) and no image or score rows in a results
store it was given. Usage errors (unknown commands and options, values of the wrong type) come from the argument
parser, which prints its usage first; their rows check the `Error:` line instead. `ACCEPTED` holds inputs that
look odd but are valid: they must succeed and print a note. Each case runs in-process (about 0.1 s); the two
rows marked slow build a full-size scorer before failing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import shutil
import sqlite3
import struct
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"
REGENERATE = "python -m tests.test_bad_inputs --write-docs"


# -- where a case runs --------------------------------------------------------------------------------------------
@dataclass
class Workspace:
    """`tmp` is the case's own folder ({tmp} in command lines); `home` its RPO_BENCH_HOME, whose models/ links to
    the shared tiny-model cache so that no case rebuilds a model; `shared` holds fixtures built once per session
    (a preference folder, a trained run)."""

    tmp: Path
    home: Path
    shared: Path

    @property
    def models_cache(self) -> Path:
        return self.shared / "models"


def make_workspace(tmp: Path, shared: Path) -> Workspace:
    home = tmp / "home"
    home.mkdir(parents=True)
    (shared / "models").mkdir(parents=True, exist_ok=True)
    (home / "models").symlink_to(shared / "models", target_is_directory=True)
    return Workspace(tmp, home, shared)


# -- setups: the bad files a case needs -----------------------------------------------------------------------
SETUPS: dict[str, Callable[[Workspace], None]] = {}


def setup(function: Callable[[Workspace], None]) -> Callable[[Workspace], None]:
    """Register a setup; its docstring's first line is the docs' description of what the case is given."""
    SETUPS[function.__name__] = function
    return function


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _noise_image(width: int, height: int, mode: str = "RGB", seed: int = 0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65535, (height, width), dtype=np.uint16))
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).convert(mode)


def _png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@setup
def images(ws: Workspace) -> None:
    """images/ with two 64x64 RGB PNGs"""
    for i in range(2):
        _noise_image(64, 64, seed=i).save(_write(ws.tmp / "images" / f"{i}.png", b""))


@setup
def empty_folder(ws: Workspace) -> None:
    """an empty folder `empty/`"""
    (ws.tmp / "empty").mkdir()


@setup
def a_file(ws: Workspace) -> None:
    """a plain file `afile`"""
    _write(ws.tmp / "afile", "x\n")


@setup
def truncated_png(ws: Workspace) -> None:
    """trunc.png: the first 60% of a 64x64 PNG"""
    data = _png_bytes(_noise_image(64, 64))
    _write(ws.tmp / "trunc.png", data[:int(len(data) * 0.6)])


@setup
def sixteen_bit_png(ws: Workspace) -> None:
    """deep16.png: a 16-bit greyscale PNG (mode I;16)"""
    _write(ws.tmp / "deep16.png", _png_bytes(_noise_image(64, 64, "I;16")))


@setup
def sliver_png(ws: Workspace) -> None:
    """sliver.png: a 4000x3 RGB PNG"""
    _write(ws.tmp / "sliver.png", _png_bytes(_noise_image(4000, 3)))


@setup
def bomb_png(ws: Workspace) -> None:
    """bomb.png: a 100-byte PNG declaring 20000x10000 pixels (over twice PIL's MAX_IMAGE_PIXELS)"""
    _write(ws.tmp / "bomb.png", _png_header_only(20000, 10000))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height greyscale pixels, with a few bytes of data: tiny on disk."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


@setup
def bomb_warning_png(ws: Workspace) -> None:
    """bigish.png: a 100-byte PNG declaring 12000x10000 pixels (over PIL's MAX_IMAGE_PIXELS, under twice it)"""
    _write(ws.tmp / "bigish.png", _png_header_only(12000, 10000))


@setup
def float_tiff(ws: Workspace) -> None:
    """float.tif: a 32-bit float greyscale TIFF (mode F) with values up to 5"""
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((32, 32), 5.0, dtype=np.float32), "F").save(ws.tmp / "float.tif")


@setup
def negative_tiff(ws: Workspace) -> None:
    """neg.tif: a 32-bit integer greyscale TIFF (mode I) with negative values"""
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((32, 32), -7, dtype=np.int32), "I").save(ws.tmp / "neg.tif")


@setup
def lab_tiff(ws: Workspace) -> None:
    """lab.tif: a CIELAB TIFF (PIL mode LAB)"""
    _noise_image(32, 32).convert("LAB").save(ws.tmp / "lab.tif")


@setup
def zero_byte_png(ws: Workspace) -> None:
    """zero.png: an empty file"""
    _write(ws.tmp / "zero.png", b"")


@setup
def text_as_png(ws: Workspace) -> None:
    """notimage.png: a text file with an image suffix"""
    _write(ws.tmp / "notimage.png", "not a png at all\n")


@setup
def odd_mode_images(ws: Workspace) -> None:
    """odd/: a CMYK JPEG, a greyscale+alpha PNG and a palette PNG"""
    _noise_image(48, 64, "CMYK").save(_write(ws.tmp / "odd" / "cmyk.jpg", b""), format="JPEG")
    _noise_image(64, 48, "LA", seed=1).save(_write(ws.tmp / "odd" / "la.png", b""))
    _noise_image(40, 40, "P", seed=2).save(_write(ws.tmp / "odd" / "palette.png", b""))


@setup
def prompt_files(ws: Workspace) -> None:
    """prompt files: empty.txt (blank lines), latin1.txt (not UTF-8), p.csv, bad.jsonl, noprompt.jsonl, ansi.txt
    (a line starting with ESC [2J), two.txt (2 lines), dir.txt/ (a folder)"""
    _write(ws.tmp / "empty.txt", "\n\n")
    _write(ws.tmp / "latin1.txt", "caf\xe9 au lait\n".encode("latin-1"))
    _write(ws.tmp / "p.csv", "prompt\na cat\n")
    _write(ws.tmp / "bad.jsonl", '{"prompt": "a cat"}\n{"prompt": "a dog"\n')
    _write(ws.tmp / "noprompt.jsonl", '{"caption": "a cat"}\n')
    _write(ws.tmp / "ansi.txt", "a red cat\n\x1b[2Ja blue dog\n")
    _write(ws.tmp / "two.txt", "a cat\na dog\n")
    (ws.tmp / "dir.txt").mkdir()


def _config_writer(name: str, text: str | bytes, doc: str) -> None:
    def write(ws: Workspace) -> None:
        _write(ws.tmp / name, text)

    write.__name__ = f"config_{name.replace('.', '_').replace('-', '_')}"
    write.__doc__ = doc
    setup(write)


_TRAIN_BASE = 'data = "d"\noutput = "o"\n'
_config_writer("pin.toml", f'[train]\nmethod = "rpo"\npin_diagonal = "false"\n{_TRAIN_BASE}',
               'pin.toml: `pin_diagonal = "false"` (a string, not a boolean)')
_config_writer("steps-str.toml", f'[train]\nsteps = "two"\n{_TRAIN_BASE}', 'steps-str.toml: `steps = "two"`')
_config_writer("steps-float.toml", f"[train]\nsteps = 2.7\n{_TRAIN_BASE}", "steps-float.toml: `steps = 2.7`")
_config_writer("lr-str.toml", f'[train]\nlr = "1e-4"\n{_TRAIN_BASE}', 'lr-str.toml: `lr = "1e-4"` (a string)')
_config_writer("broken.toml", "[train\nsteps = 2\n", "broken.toml: invalid TOML (`[train` unclosed)")
_config_writer("latin1.toml", '[train]\nname = "caf\xe9"\n'.encode("latin-1"), "latin1.toml: Latin-1 bytes")
_config_writer("c.ini", "[train]\nsteps = 2\n", "c.ini: an INI file")
_config_writer("list.yaml", "- steps: 2\n", "list.yaml: a YAML list instead of a mapping")
_config_writer("broken.json", '{"steps": 2,', "broken.json: invalid JSON")
_config_writer("unknown-key.toml", f"[train]\nlearning_rate = 1e-4\n{_TRAIN_BASE}",
               "unknown-key.toml: `learning_rate = 1e-4` (the setting is `lr`)")


@setup
def empty_jsonl(ws: Workspace) -> None:
    """empty.jsonl: an empty file"""
    _write(ws.tmp / "empty.jsonl", "")


@setup
def pairs_missing_image(ws: Workspace) -> None:
    """pairs.jsonl: one pair whose jpg_1 is gone.png, which does not exist"""
    _noise_image(64, 64).save(_write(ws.tmp / "a.png", b""))
    _write(ws.tmp / "pairs.jsonl", json.dumps({"caption": "a red square", "jpg_0": "a.png", "jpg_1": "gone.png",
                                               "label_0": 1.0}) + "\n")


@setup
def config_folder(ws: Workspace) -> None:
    """cfg.toml/: a folder with a config suffix"""
    (ws.tmp / "cfg.toml").mkdir()


def _registry_writer(name: str, text: str | bytes, doc: str) -> None:
    def write(ws: Workspace) -> None:
        _write(ws.home / "registry.toml", text)

    write.__name__ = f"registry_{name}"
    write.__doc__ = f"registry.toml: {doc}"
    setup(write)


_registry_writer("number_for_kind", "models = 3\n", "`models = 3` (a number where the [models] tables belong)")
_registry_writer("number_for_entry", "[models]\nmine = 3\n", "`[models] mine = 3` (a number where a table belongs)")
_registry_writer("tiny_seed_path", '[models.evil]\nfamily = "sd15"\ntiny = "tiny-sd15"\nseed = "../../x"\n',
                 '[models.evil] with `tiny = "tiny-sd15"`, `seed = "../../x"`')
_registry_writer("repo_number", '[models.num]\nfamily = "sd15"\nrepo = 5\n', '[models.num] with `repo = 5`')
_registry_writer("unknown_family", '[models.sd3]\nfamily = "sd3"\nrepo = "org/sd3"\n',
                 '[models.sd3] with `family = "sd3"`')
_registry_writer("misspelt_key", '[models.pinned]\nfamily = "sd15"\nrepo = "org/m"\nrevison = "abc"\n',
                 '[models.pinned] with the misspelt key `revison`')
_registry_writer("no_weights", '[models.empty]\nfamily = "sd15"\n', "[models.empty] with neither `repo` nor `tiny`")
_registry_writer("negative_resolution", "[protocols.neg]\nsteps = 10\nresolution = -64\n",
                 "[protocols.neg] with `resolution = -64`")
_registry_writer("version_text", '[protocols.vtext]\nsteps = 10\nversion = "two"\n',
                 '[protocols.vtext] with `version = "two"`')
_registry_writer("version_float", "[protocols.vfloat]\nsteps = 10\nversion = 1.5\n",
                 "[protocols.vfloat] with `version = 1.5`")
_registry_writer("steps_zero", "[protocols.still]\nsteps = 0\n", "[protocols.still] with `steps = 0`")
_registry_writer("unknown_sampler", '[protocols.lms]\nsteps = 10\nsampler = "lms"\n',
                 '[protocols.lms] with `sampler = "lms"`')
_registry_writer("prompt_set_path", '[prompts."../x"]\nhf_dataset = "org/prompts"\nsplit = "train"\n',
                 '[prompts."../x"] (a prompt-set name that is a path) from a Hub dataset')
_registry_writer("prompt_set_missing_file", '[prompts.gone]\nfile = "/nonexistent/gone.txt"\n',
                 "[prompts.gone] whose `file` does not exist")
_registry_writer("metric_no_target", '[metrics.mine]\nsummary = "x"\n', "[metrics.mine] with no `target`")
_registry_writer("metric_bad_target", '[metrics.mine]\ntarget = "nosuchmodule:Scorer"\n',
                 '[metrics.mine] with `target = "nosuchmodule:Scorer"`')
_registry_writer("broken", "[models.x\n", "invalid TOML")
_registry_writer("latin1", '[models.caf\xe9]\nfamily = "sd15"\n'.encode("latin-1"), "Latin-1 bytes")
_registry_writer("taken_name", '[models.taken]\nfamily = "sd15"\ntiny = "tiny-sd15"\n',
                 "[models.taken] already registered")


# -- styles ---------------------------------------------------------------------------------------------------------
def _style_registry(ws: Workspace, folder: Path) -> None:
    _write(ws.home / "registry.toml", f'[styles.mine]\nfolder = "{folder}"\nprompts = "smoke"\n'
                                      'base_model = "tiny-sd15"\nembedding = "tiny-clip:0"\n')


@setup
def style_unreadable_references(ws: Workspace) -> None:
    """[styles.mine] whose folder holds three .png files that are text"""
    for i in range(3):
        _write(ws.tmp / "refs" / f"{i}.png", b"not an image")
    _style_registry(ws, ws.tmp / "refs")


@setup
def style_few_references(ws: Workspace) -> None:
    """[styles.mine] whose folder holds 5 readable PNGs"""
    for i in range(5):
        _noise_image(32, 32, seed=i).save(_write(ws.tmp / "refs" / f"{i}.png", b""))
    _style_registry(ws, ws.tmp / "refs")


# E9: user files -------------------------------------------------------------------------------------------------
_config_writer("latin1.yaml", "steps: 2\nname: caf\xe9\n".encode("latin-1"),
               "latin1.yaml: Latin-1 bytes in a YAML config")
_registry_writer("style_folder_number", '[styles.x]\nfolder = 5\nprompts = "smoke"\n', "[styles.x] with `folder = 5`")


@setup
def registry_folder(ws: Workspace) -> None:
    """registry.toml: a folder of that name"""
    (ws.home / "registry.toml").mkdir()


_GOOD_LEADERBOARD = '[demo]\nquick = true\nmethods = "dpo"\ntrain_seeds = "0"\nset = ["steps=2"]\n'


def _leaderboard_writer(name: str, text: str, doc: str) -> None:
    def write(ws: Workspace) -> None:
        _write(ws.tmp / "lb" / "good" / "leaderboard.toml", _GOOD_LEADERBOARD)
        _write(ws.tmp / "lb" / "mine" / "leaderboard.toml", text)

    write.__name__ = f"leaderboard_{name}"
    write.__doc__ = f"lb/good/leaderboard.toml (valid) and lb/mine/leaderboard.toml: {doc}"
    setup(write)


_leaderboard_writer("demo_number", "demo = 5\n", "`demo = 5`")
_leaderboard_writer("style_number", "[demo]\nstyle = 5\n", "`style = 5`")
_leaderboard_writer("set_string", '[demo]\nset = "lr=1e-4"\n', '`set = "lr=1e-4"` (a string, not a list)')
_leaderboard_writer("quick_string", '[demo]\nquick = "false"\n', '`quick = "false"` (a string, not a boolean)')
_leaderboard_writer("seeds_negative", "[demo]\ntrain_seeds = [0, -1]\n", "`train_seeds = [0, -1]`")
_leaderboard_writer("broken", "[demo\nquick = true\n", "invalid TOML (`[demo` unclosed)")


def _style_folder(ws: Workspace, images: int = 2) -> Path:
    for i in range(images):
        _noise_image(32, 32, seed=i).save(_write(ws.tmp / "refs" / f"{i:02d}.png", b""))
    _style_registry(ws, ws.tmp / "refs")
    return ws.tmp / "refs"


@setup
def style_captions_latin1(ws: Workspace) -> None:
    """[styles.mine] whose folder holds two PNGs and a Latin-1 captions.jsonl"""
    _write(_style_folder(ws) / "captions.jsonl", '{"file": "00.png", "caption": "caf\xe9"}\n'.encode("latin-1"))


@setup
def style_caption_txt_latin1(ws: Workspace) -> None:
    """[styles.mine] whose folder holds two PNGs and a Latin-1 00.txt caption"""
    _write(_style_folder(ws) / "00.txt", "caf\xe9\n".encode("latin-1"))


@setup
def style_fifo_reference(ws: Workspace) -> None:
    """[styles.mine] whose folder holds two PNGs and a FIFO named zz.png"""
    os.mkfifo(_style_folder(ws) / "zz.png")


@setup
def style_reference_dev_zero(ws: Workspace) -> None:
    """[styles.mine] whose folder holds two PNGs and zz.png, a link to /dev/zero"""
    (_style_folder(ws) / "zz.png").symlink_to("/dev/zero")


# -- model folders (built from the shared tiny models) ------------------------------------------------------------
def _tiny(ws: Workspace, kind: str) -> Path:
    from rpo_bench.models.tiny import ensure_tiny_model

    return ensure_tiny_model(kind, 0, ws.models_cache)


def _copy_tiny_sd15(ws: Workspace, name: str) -> Path:
    return Path(shutil.copytree(_tiny(ws, "tiny-sd15"), ws.tmp / name))


@setup
def folder_without_index(ws: Workspace) -> None:
    """noindex/: a folder with a UNet but no model_index.json"""
    (ws.tmp / "noindex" / "unet").mkdir(parents=True)


@setup
def index_not_json(ws: Workspace) -> None:
    """badindex/model_index.json: not JSON"""
    _write(ws.tmp / "badindex" / "model_index.json", "{nope")


@setup
def index_without_components(ws: Workspace) -> None:
    """bare/model_index.json: `{"_class_name": "StableDiffusionPipeline"}` and no components"""
    _write(ws.tmp / "bare" / "model_index.json", json.dumps({"_class_name": "StableDiffusionPipeline"}))


@setup
def index_other_pipeline(ws: Workspace) -> None:
    """flux/model_index.json: a FluxPipeline"""
    _write(ws.tmp / "flux" / "model_index.json", json.dumps({"_class_name": "FluxPipeline"}))


@setup
def sdxl_unet_in_sd15(ws: Workspace) -> None:
    """mixed/: tiny-sd15 with tiny-sdxl's UNet in its unet/"""
    folder = _copy_tiny_sd15(ws, "mixed")
    shutil.rmtree(folder / "unet")
    shutil.copytree(_tiny(ws, "tiny-sdxl") / "unet", folder / "unet")


@setup
def truncated_unet(ws: Workspace) -> None:
    """cut/: tiny-sd15 whose unet/diffusion_pytorch_model.safetensors is cut to half"""
    weights = _copy_tiny_sd15(ws, "cut") / "unet" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:len(data) // 2])


def _training_record(kind: str, base: str) -> str:
    from rpo_bench.models.catalog import resolve_model

    return json.dumps({"format": "rpo-bench-train/1", "kind": kind, "method": "dpo",
                       "base_model": resolve_model(base).to_dict()})


@setup
def lora_random_keys(ws: Workspace) -> None:
    """lora/: a training output (rpo_bench.json over tiny-sd15) whose pytorch_lora_weights.safetensors holds
    random keys"""
    import torch
    from safetensors.torch import save_file

    folder = ws.tmp / "lora"
    _write(folder / "rpo_bench.json", _training_record("lora", "tiny-sd15"))
    save_file({"foo.bar.weight": torch.zeros(4, 4), "baz.lora_A.weight": torch.ones(2, 8)},
              str(folder / "pytorch_lora_weights.safetensors"))


@setup
def sd15_unet_for_sdxl(ws: Workspace) -> None:
    """wrongbase/: a training output that says its base is tiny-sdxl but holds tiny-sd15's UNet"""
    folder = ws.tmp / "wrongbase"
    _write(folder / "rpo_bench.json", _training_record("unet", "tiny-sdxl"))
    shutil.copytree(_tiny(ws, "tiny-sd15") / "unet", folder / "unet")


@setup
def record_not_json(ws: Workspace) -> None:
    """badrecord/rpo_bench.json: not JSON"""
    _write(ws.tmp / "badrecord" / "rpo_bench.json", "{nope")


@setup
def lora_truncated(ws: Workspace) -> None:
    """lora/: a training output (rpo_bench.json over tiny-sd15) whose pytorch_lora_weights.safetensors is cut to
    half"""
    import torch
    from safetensors.torch import save_file

    folder = ws.tmp / "lora"
    _write(folder / "rpo_bench.json", _training_record("lora", "tiny-sd15"))
    weights = folder / "pytorch_lora_weights.safetensors"
    save_file({"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": torch.ones(64, 64)}, str(weights))
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])


@setup
def scorer_checkpoints(ws: Workspace) -> None:
    """scorer checkpoints: cut.pt (a torch file cut to 2000 bytes), pickle.pt (a pickled Python object, which
    weights_only loading refuses)"""
    import fractions

    import torch

    torch.save({"state_dict": {"w": torch.ones(64, 64)}}, ws.tmp / "cut.pt")
    (ws.tmp / "cut.pt").write_bytes((ws.tmp / "cut.pt").read_bytes()[:2000])
    torch.save({"state_dict": {}, "note": fractions.Fraction(1, 3)}, ws.tmp / "pickle.pt")


# -- training fixtures (built once per session in `shared`) -------------------------------------------------------
def preference_folder(ws: Workspace) -> Path:
    """Four hand-made pairs of 64x64 images in the layout `rpo-bench pairs` writes."""
    from rpo_bench.training.data import write_preference_folder

    folder = ws.shared / "prefs"
    if not (folder / "pairs.jsonl").is_file():
        rows = [{"caption": f"a {colour} square", "jpg_0": _png_bytes(_noise_image(64, 64, seed=2 * i)),
                 "jpg_1": _png_bytes(_noise_image(64, 64, seed=2 * i + 1)), "label_0": 1.0, "label_1": 0.0}
                for i, colour in enumerate(("red", "green", "blue", "white"))]
        write_preference_folder(rows, folder)
    return folder


def _train_toml(ws: Workspace, output: Path) -> str:
    return (f'[train]\nmethod = "dpo"\nmodel = "tiny-sd15"\ndata = "{preference_folder(ws)}"\noutput = "{output}"\n'
            'steps = 2\npairs_per_device = 2\nlora_rank = 2\nbeta = 500.0\nlr = 1e-3\nlr_scheduler = "constant"\n'
            'device = "cpu"\ncheckpoint_every = 1\nlog_every = 0\n')


@setup
def train_config(ws: Workspace) -> None:
    """train.toml: a valid tiny DPO run (tiny-sd15, 4 hand-made pairs, output `{tmp}/out`)"""
    _write(ws.tmp / "train.toml", _train_toml(ws, ws.tmp / "out"))


@setup
def train_config_taken_name(ws: Workspace) -> None:
    """train.toml as above, and registry.toml with [models.taken] already registered"""
    train_config(ws)
    SETUPS["registry_taken_name"](ws)


@setup
def trained_run(ws: Workspace) -> None:
    """run/: a 2-step tiny DPO run with checkpoints at steps 1 and 2, and its run/train.toml"""
    source = ws.shared / "trained-run"
    if not (source / "rpo_bench.json").is_file():
        from rpo_bench.training.config import build_config, read_config_file
        from rpo_bench.training.trainer import train

        staging = ws.shared / "trained-run.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        _write(staging / "train.toml", _train_toml(ws, source))
        config = build_config(None, read_config_file(staging / "train.toml"), {})
        train(config, show_progress=False)
        shutil.move(staging / "train.toml", source / "train.toml")
    shutil.copytree(source, ws.tmp / "run", symlinks=True)
    # the copy resumes in place: its config names the copy as output (output may change on resume)
    _write(ws.tmp / "run" / "train.toml", _train_toml(ws, ws.tmp / "run"))


@setup
def trained_run_cut_checkpoint(ws: Workspace) -> None:
    """run/ as above, with checkpoints/step-2/trainable.safetensors cut to half"""
    trained_run(ws)
    weights = ws.tmp / "run" / "checkpoints" / "step-2" / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])


# E9: training
@setup
def trained_run_state_step_negative(ws: Workspace) -> None:
    """run/ as above, its checkpoints/step-2/trainer_state.json edited to say step -2"""
    trained_run(ws)
    state = ws.tmp / "run" / "checkpoints" / "step-2" / "trainer_state.json"
    state.write_text(state.read_text(encoding="utf-8").replace('"step": 2', '"step": -2'), encoding="utf-8")


@setup
def trained_run_state_of_another_step(ws: Workspace) -> None:
    """run/ as above, with checkpoints/step-3: a copy of step-1, whose state says step 1"""
    trained_run(ws)
    shutil.copytree(ws.tmp / "run" / "checkpoints" / "step-1", ws.tmp / "run" / "checkpoints" / "step-3")



@setup
def not_a_store(ws: Workspace) -> None:
    """`notes.sqlite`, a text file, and `other.sqlite`, an SQLite file with a table of another program"""
    _write(ws.tmp / "notes.sqlite", "not a database\n")
    with contextlib.closing(sqlite3.connect(ws.tmp / "other.sqlite")) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
        db.commit()


@setup
def small_store(ws: Workspace) -> None:
    """`s.sqlite`, a results store with tiny-clip scores of tiny-sd15 and tiny-sd15-alt (rows written directly)"""
    from rpo_bench.evaluation.store_schema import SCHEMA, SCHEMA_VERSION

    with contextlib.closing(sqlite3.connect(ws.tmp / "s.sqlite")) as db:
        db.executescript(SCHEMA)
        db.execute("INSERT INTO runs VALUES ('run', 0, 0, '{}', '{}', NULL)")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("INSERT INTO prompt_sets VALUES ('ps', 'smoke', 'smoke', 'fp', 1, 0)")
        for i, model in enumerate(("tiny-sd15", "tiny-sd15-alt")):
            db.execute("INSERT INTO images VALUES (?, 'f', 'tiny', 'p', '{}', 'float32', 'cat', 0, 'sha', 1, 1, 'run', "
                       "0)", (f"k{i}",))
            db.execute("INSERT INTO samples VALUES ('ps', ?, ?, 0, '', 'run', 0)", (model, f"k{i}"))
            db.execute("INSERT INTO scores VALUES (?, 'tiny-clip', '1', 0.5, 'run', 0)", (f"k{i}",))
        db.commit()


@setup
def schema1_store(ws: Workspace) -> None:
    """`old.sqlite`, a results store of the first schema (before E9), with one score"""
    from tests.test_store_identity import SCHEMA_1

    with contextlib.closing(sqlite3.connect(ws.tmp / "old.sqlite")) as db:
        db.executescript(SCHEMA_1)
        db.execute("INSERT INTO runs VALUES ('run', 0, 0, '{}', '{}', NULL)")
        db.execute("INSERT INTO images VALUES ('k', 'm', 'f', 'tiny', 'p', '{}', 'float32', 'smoke', 0, '', 'cat', 0, "
                   "'sha', 'run', 0)")
        db.execute("INSERT INTO scores VALUES ('k', 'tiny-clip', '1', 0.5, 'm', 'p', 'run', 0)")
        db.commit()


# -- the cases ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One bad command line: `argv` with {tmp} for the case's folder, the setup that builds its files, and a
    fragment the error line must contain (the bad value, in the words the user typed)."""

    id: str
    area: str
    argv: tuple[str, ...]
    expect: str
    setup: str = ""
    usage: bool = False  # reported by the argument parser (usage text, then `Error: ...`)
    slow: bool = False  # builds a full-size model before it fails (tens of seconds, gigabytes)

    def args(self, ws: Workspace) -> list[str]:
        return [a.format(tmp=ws.tmp, home=ws.home) for a in self.argv]

    def fragment(self, ws: Workspace) -> str:
        return self.expect.format(tmp=ws.tmp, home=ws.home)


@dataclass(frozen=True)
class Accepted:
    """A command line that looks odd but is accepted: exit 0, and a note that says what was done about it."""

    id: str
    argv: tuple[str, ...]
    note: str
    setup: str = ""
    absent: str = ""  # text that must not be printed (a raw control character)

    def args(self, ws: Workspace) -> list[str]:
        return [a.format(tmp=ws.tmp, home=ws.home) for a in self.argv]


STORE = ("--store", "{tmp}/r.sqlite")
EVAL = ("evaluate", *STORE)
LONG_PROMPT = " ".join(["a very detailed red square on a blue background"] * 20)  # ~180 CLIP tokens


def C(id: str, area: str, argv: str | tuple[str, ...], expect: str, setup: str = "", usage: bool = False,
      slow: bool = False) -> Case:
    """A case; a string argv is split on spaces (use a tuple for arguments that hold spaces)."""
    return Case(id, area, tuple(argv.split(" ")) if isinstance(argv, str) else tuple(argv), expect, setup, usage,
                slow)


TRAIN = ("train", "--data", "d", "--output", "{tmp}/out", "--quiet")

CASES: list[Case] = [
    # names: registry entries that do not exist, and values outside a fixed list
    C("evaluate-unknown-model", "names", (*EVAL, "--models", "tiny-sd16"), "'tiny-sd16'"),
    C("evaluate-unknown-metric", "names", (*EVAL, "--metrics", "tiny-clp"), "'tiny-clp'"),
    C("evaluate-unknown-prompt-set", "names", (*EVAL, "--prompts", "smok"), "'smok'"),
    C("evaluate-unknown-protocol", "names", (*EVAL, "--protocol", "spo-ddim2"), "'spo-ddim2'"),
    C("evaluate-unknown-device", "names", (*EVAL, "--device", "tpu"), "'tpu'"),
    C("evaluate-unknown-dtype", "names", (*EVAL, "--dtype", "float8"), "'float8'"),
    C("evaluate-unknown-score-dtype", "names", (*EVAL, "--score-dtype", "int8"), "'int8'"),
    C("evaluate-unknown-oracle-attribute", "names", (*EVAL, "--metrics", "micro-oracle:flavour"), "'flavour'"),
    C("evaluate-style-without-style", "names", (*EVAL, "--metrics", "micro-style"), "micro-style"),
    C("evaluate-open-clip-without-weights", "names", (*EVAL, "--metrics", "clip:open_clip:ViT-B-32"),
      "clip:open_clip:ViT-B-32"),
    C("models-show-unknown", "names", "models show sdxl-bse", "'sdxl-bse'"),
    C("metrics-show-unknown", "names", "metrics show hpsv3", "'hpsv3'"),
    C("metrics-show-unknown-style", "names", "metrics show micro-style:cubism", "'cubism'"),
    C("prompts-show-unknown", "names", "prompts show smok", "'smok'"),
    C("protocols-show-unknown", "names", "protocols show spo", "'spo'"),
    C("train-unknown-method", "names", (*TRAIN, "--method", "ppo"), "'ppo'"),
    C("train-unknown-preset", "names", (*TRAIN, "--preset", "dpo-sd15"), "'dpo-sd15'"),
    C("train-unknown-optimizer", "names", (*TRAIN, "--optimizer", "sgd"), "'sgd'"),
    C("train-unknown-embed-mode", "names", (*TRAIN, "--method", "rpo", "--embed-mode", "audio"), "'audio'"),
    C("train-setting-of-another-method", "names", (*TRAIN, "--method", "dpo", "--tau", "0.5"), "tau"),
    C("train-method-typo", "names", (*TRAIN, "--method", "kot"), "did you mean kto"),
    C("train-kto-flag-with-dpo", "names", (*TRAIN, "--method", "dpo", "--kto-beta", "100"), "read by kto"),
    C("train-winner-preserving-with-sft", "names", (*TRAIN, "--method", "sft", "--winner-preserving"),
      "read by dpo, rpo"),
    C("train-winner-preserving-with-kto", "names", (*TRAIN, "--method", "kto", "--winner-preserving"),
      "single images, not pairs"),
    C("train-kto-labels-unknown", "names", (*TRAIN, "--method", "kto", "--kto-labels", "votes"), "'votes'"),
    C("methods-show-unknown", "names", "methods show mapoo", "'mapoo'"),
    C("train-unknown-model", "names", (*TRAIN[:2], "{tmp}/images", *TRAIN[3:], "--model", "tiny-sd16"),
      "'tiny-sd16'", "images"),
    C("pairs-unknown-mode", "names", "pairs --model tiny-sd15 --prompts smoke --metric tiny-clip --output {tmp}/p "
      "--mode pairs", "'pairs'"),
    C("pairs-unknown-model", "names", "pairs --model tiny-sd16 --prompts smoke --metric tiny-clip --output {tmp}/p",
      "'tiny-sd16'"),
    C("pairs-unknown-metric", "names", "pairs --model tiny-sd15 --prompts smoke --metric hpsv3 --output {tmp}/p",
      "'hpsv3'"),
    C("download-unknown-name", "names", "download --dry-run tiny-sd51", "'tiny-sd51'"),
    C("download-not-cached-offline", "names", "download sd15-base", "sd15-base"),
    C("score-unknown-metric", "names", "score {tmp}/images --prompt cat --metrics hpsv3", "'hpsv3'", "images"),
    C("score-unknown-device", "names", "score {tmp}/images --prompt cat --device tpu", "'tpu'", "images"),
    C("score-unknown-dtype", "names", "score {tmp}/images --prompt cat --dtype float8", "'float8'", "images"),
    C("micro-preferences-unknown-device", "names", "micro preferences --out {tmp}/p --device tpu", "'tpu'"),
    C("styles-show-unknown", "names", "styles show vangog", "'vangog'"),
    C("evaluate-unknown-style", "names", (*EVAL, "--style", "cubism"), "'cubism'"),
    C("evaluate-base-sim-without-base", "names", (*EVAL, "--models", "tiny-sd15", "--metrics",
                                                  "base-sim:micro-sketch"), "micro-base"),
    C("evaluate-grid-not-png", "names", (*EVAL, "--grid", "{tmp}/grid.jpg"), "'.jpg'"),
    C("train-unknown-style", "names", ("train", "--style", "cubism", "--output", "{tmp}/out", "--quiet"),
      "'cubism'"),
    C("train-style-unknown-pairs", "names", ("train", "--style", "micro-sketch", "--pairs", "both", "--output",
                                             "{tmp}/out", "--quiet"), "'both'"),
    C("train-style-relabel-without-data", "names", ("train", "--style", "sketch", "--pairs", "relabel", "--output",
                                                    "{tmp}/out", "--quiet"), "--pairs relabel"),
    C("train-style-references-unreadable", "paths", ("train", "--style", "mine", "--output", "{tmp}/out", "--quiet"),
      "no readable images", "style_unreadable_references"),
    C("train-style-too-few-references", "paths", ("train", "--style", "mine", "--output", "{tmp}/out", "--quiet"),
      "at least 20", "style_few_references"),
    C("train-style-dataset-offline", "names", ("train", "--style", "vangogh", "--output", "{tmp}/out", "--quiet"),
      "huggan/wikiart"),
    C("styles-fetch-offline", "names", "styles fetch vangogh", "HF_HUB_OFFLINE"),
    C("micro-compare-style-not-micro", "names", "micro compare --out {tmp}/c --style vangogh", "'vangogh'"),
    # metric arguments
    C("evaluate-empty-metrics", "names", (*EVAL, "--metrics", ""), "--metrics"),
    C("evaluate-empty-models", "names", (*EVAL, "--models", ""), "models"),
    C("evaluate-tiny-clip-superscript-seed", "names", (*EVAL, "--metrics", "tiny-clip:²"), "tiny-clip:²"),
    C("evaluate-tiny-clip-word-seed", "names", (*EVAL, "--metrics", "tiny-clip:abc"), "tiny-clip:abc"),
    C("score-empty-metrics", "names", ("score", "{tmp}/images", "--prompt", "cat", "--metrics", ""), "--metrics",
      "images"),
    C("download-wrong-kind", "names", "download --dry-run --kind prompts tiny-sd15", "'tiny-sd15'"),
    C("metrics-show-tiny-clip-superscript-seed", "names", "metrics show tiny-clip:²", "tiny-clip:²"),
    C("download-tiny-clip-superscript-seed", "names", "download --dry-run tiny-clip:²", "tiny-clip:²"),
    # numbers
    C("evaluate-seeds-huge-range", "numbers", (*EVAL, "--seeds", "0-9999999999"), "0-9999999999"),
    C("evaluate-seeds-word", "numbers", (*EVAL, "--seeds", "0,x"), "'x'"),
    C("evaluate-seeds-reversed", "numbers", (*EVAL, "--seeds", "3-1"), "'3-1'"),
    C("evaluate-seeds-negative", "numbers", (*EVAL, "--seeds", "-1"), "'-1'"),
    C("evaluate-seeds-empty", "numbers", (*EVAL, "--seeds", ""), "--seeds ''"),
    C("evaluate-batch-size-zero", "numbers", (*EVAL, "--batch-size", "0"), "--batch-size 0"),
    C("evaluate-batch-size-negative", "numbers", (*EVAL, "--batch-size", "-3"), "--batch-size -3"),
    C("score-batch-size-zero", "numbers", "score {tmp}/images --prompt cat --batch-size 0", "--batch-size 0",
      "images"),
    C("train-max-grad-norm-negative", "numbers", (*TRAIN, "--max-grad-norm", "-1"), "--max-grad-norm -1"),
    C("train-lr-nan", "numbers", (*TRAIN, "--lr", "nan"), "--lr nan"),
    C("train-lr-inf", "numbers", (*TRAIN, "--lr", "inf"), "--lr inf"),
    C("train-lr-zero", "numbers", (*TRAIN, "--lr", "0"), "--lr 0"),
    C("train-steps-zero", "numbers", (*TRAIN, "--steps", "0"), "--steps 0"),
    C("train-beta-negative", "numbers", (*TRAIN, "--method", "dpo", "--beta", "-1"), "--beta -1"),
    C("train-tau-zero", "numbers", (*TRAIN, "--method", "rpo", "--tau", "0"), "--tau 0"),
    C("train-mu-one", "numbers", (*TRAIN, "--method", "dpo", "--winner-preserving", "--mu", "1"), "--mu 1"),
    C("train-ema-decay-one", "numbers", (*TRAIN, "--ema-decay", "1"), "--ema-decay 1"),
    C("train-positive-ratio-zero", "numbers", (*TRAIN, "--method", "kto", "--positive-ratio", "0"),
      "--positive-ratio 0"),
    C("train-caption-dropout-one", "numbers", (*TRAIN, "--caption-dropout", "1"), "--caption-dropout 1"),
    C("train-lora-rank-negative", "numbers", (*TRAIN, "--lora-rank", "-2"), "--lora-rank -2"),
    C("train-resolution-negative", "numbers", (*TRAIN, "--resolution", "-64"), "--resolution -64"),
    C("train-resume-steps-below-checkpoint", "numbers",
      "train --config {tmp}/run/train.toml --resume --steps 1 --quiet", "--steps 1", "trained_run"),
    C("pairs-k-one", "numbers", "pairs --model tiny-sd15 --prompts smoke --metric tiny-clip --output {tmp}/p --k 1",
      "k = 1"),
    C("pairs-margin-negative", "numbers", "pairs --model tiny-sd15 --prompts smoke --metric tiny-clip "
      "--output {tmp}/p --margin -1", "margin = -1"),
    C("pairs-margin-nan", "numbers", "pairs --model tiny-sd15 --prompts smoke --metric tiny-clip "
      "--output {tmp}/p --margin nan", "margin = nan"),
    C("micro-preferences-k-one", "numbers", "micro preferences --out {tmp}/p --k 1", "k = 1"),
    C("micro-preferences-label-noise-negative", "numbers", "micro preferences --out {tmp}/p --label-noise -1",
      "-1"),
    C("micro-preferences-label-noise-nan", "numbers", "micro preferences --out {tmp}/p --label-noise nan", "nan"),
    C("micro-build-threads-zero", "numbers", "micro build --out {tmp}/m --threads 0", "--threads 0"),
    C("micro-build-jobs-three", "numbers", "micro build --out {tmp}/m --jobs 3", "--jobs 3"),
    C("micro-grid-prompts-zero", "numbers", "micro grid --out {tmp}/g.png --prompts 0", "--prompts 0"),
    C("micro-build-seed-negative", "numbers", "micro build --out {tmp}/m --seed -1", "--seed -1"),
    C("micro-preferences-pairs-per-prompt-zero", "numbers", "micro preferences --out {tmp}/p --pairs-per-prompt 0",
      "pairs per prompt = 0"),
    C("micro-preferences-pairs-per-prompt-with-all", "numbers",
      "micro preferences --out {tmp}/p --mode all --pairs-per-prompt 3", "'all'"),
    C("micro-preferences-seed-negative", "numbers", "micro preferences --out {tmp}/p --seed -1", "-1"),
    C("micro-compare-unknown-method", "names", "micro compare --out {tmp}/c --methods dpo,ppo", "ppo"),
    C("micro-compare-detect-not-positive", "numbers", "micro compare --out {tmp}/c --detect 0", "--detect 0"),
    C("micro-compare-jobs-zero", "numbers", "micro compare --out {tmp}/c --jobs 0", "--jobs 0"),
    C("micro-compare-set-unknown-key", "names", "micro compare --out {tmp}/c --set lrr=1e-4", "lrr=1e-4"),
    C("micro-compare-set-not-a-number", "numbers", "micro compare --out {tmp}/c --set lr=fast", "'fast'"),
    C("micro-compare-set-out-of-range", "numbers",
      "micro compare --out {tmp}/c --preset tiny-cpu --set data=d --set lr=-1", "-1"),
    C("evaluate-baseline-not-in-models", "names", (*EVAL, "--baseline", "tiny-sd16"), "'tiny-sd16'"),
    C("evaluate-by-unknown", "names", (*EVAL, "--by", "prompt"), "'prompt'"),
    C("evaluate-protocol-twice", "names", (*EVAL, "--protocol", "tiny,tiny"), "tiny,tiny"),
    C("evaluate-device-index-not-a-number", "names", (*EVAL, "--device", "cuda:x"), "'cuda:x'"),
    C("evaluate-hub-revision-empty", "names", (*EVAL, "--metrics", "hpsv2:@"), "hpsv2:@"),
    # configs: a training config file
    C("train-config-missing", "configs", "train --config {tmp}/nope.toml", "nope.toml"),
    C("train-config-folder", "configs", "train --config {tmp}/cfg.toml", "cfg.toml", "config_folder"),
    C("train-config-invalid-toml", "configs", "train --config {tmp}/broken.toml", "broken.toml",
      "config_broken_toml"),
    C("train-config-not-utf8", "configs", "train --config {tmp}/latin1.toml", "UTF-8", "config_latin1_toml"),
    C("train-config-suffix", "configs", "train --config {tmp}/c.ini", "'.ini'", "config_c_ini"),
    C("train-config-yaml-list", "configs", "train --config {tmp}/list.yaml", "list.yaml", "config_list_yaml"),
    C("train-config-invalid-json", "configs", "train --config {tmp}/broken.json", "broken.json",
      "config_broken_json"),
    C("train-config-unknown-key", "configs", "train --config {tmp}/unknown-key.toml", "learning_rate",
      "config_unknown_key_toml"),
    C("train-config-bool-as-string", "configs", "train --config {tmp}/pin.toml", "pin_diagonal", "config_pin_toml"),
    C("train-config-steps-word", "configs", "train --config {tmp}/steps-str.toml", "'two'",
      "config_steps_str_toml"),
    C("train-config-steps-fraction", "configs", "train --config {tmp}/steps-float.toml", "2.7",
      "config_steps_float_toml"),
    C("train-config-lr-string", "configs", "train --config {tmp}/lr-str.toml", "'1e-4'", "config_lr_str_toml"),
    # registry entries in $RPO_BENCH_HOME/registry.toml
    C("registry-number-for-kind", "registry", "models", "models", "registry_number_for_kind"),
    C("registry-number-for-entry", "registry", "models", "mine", "registry_number_for_entry"),
    C("registry-tiny-seed-path", "registry", "models show evil", "../../x", "registry_tiny_seed_path"),
    C("registry-repo-number", "registry", "models show num", "repo", "registry_repo_number"),
    C("registry-unknown-family", "registry", "models show sd3", "'sd3'", "registry_unknown_family"),
    C("registry-misspelt-key", "registry", "models show pinned", "revison", "registry_misspelt_key"),
    C("registry-model-without-weights", "registry", "models show empty", "'empty'", "registry_no_weights"),
    C("registry-negative-resolution", "registry", "protocols show neg", "-64", "registry_negative_resolution"),
    C("registry-version-word", "registry", "protocols show vtext", "'two'", "registry_version_text"),
    C("registry-version-fraction", "registry", "protocols show vfloat", "1.5", "registry_version_float"),
    C("registry-steps-zero", "registry", "protocols show still", "steps", "registry_steps_zero"),
    C("registry-unknown-sampler", "registry", "protocols show lms", "'lms'", "registry_unknown_sampler"),
    C("registry-prompt-set-path-name", "registry", "prompts show ../x", "../x", "registry_prompt_set_path"),
    C("registry-prompt-set-missing-file", "registry", "prompts show gone", "gone.txt",
      "registry_prompt_set_missing_file"),
    C("registry-metric-without-target", "registry", "metrics show mine", "'mine'", "registry_metric_no_target"),
    C("registry-metric-bad-target", "registry", "metrics show mine", "nosuchmodule", "registry_metric_bad_target"),
    C("registry-invalid-toml", "registry", "models", "registry.toml", "registry_broken"),
    C("registry-not-utf8", "registry", "models", "registry.toml is not UTF-8 text: byte 0xe9 at offset 11",
      "registry_latin1"),
    C("train-name-taken", "registry", "train --config {tmp}/train.toml --name taken --quiet", "'taken'",
      "train_config_taken_name"),
    # prompts
    C("evaluate-prompt-file-empty", "prompts", (*EVAL, "--prompts", "{tmp}/empty.txt"), "empty.txt",
      "prompt_files"),
    C("evaluate-prompt-file-not-utf8", "prompts", (*EVAL, "--prompts", "{tmp}/latin1.txt"), "latin1.txt",
      "prompt_files"),
    C("evaluate-prompt-file-missing", "prompts", (*EVAL, "--prompts", "{tmp}/nope.txt"), "nope.txt"),
    C("evaluate-prompt-file-suffix", "prompts", (*EVAL, "--prompts", "{tmp}/p.csv"), "'.csv'", "prompt_files"),
    C("evaluate-prompt-file-folder", "prompts", (*EVAL, "--prompts", "{tmp}/dir.txt"), "dir.txt", "prompt_files"),
    C("evaluate-prompt-jsonl-broken-line", "prompts", (*EVAL, "--prompts", "{tmp}/bad.jsonl"), "bad.jsonl:2",
      "prompt_files"),
    C("evaluate-prompt-jsonl-no-prompt", "prompts", (*EVAL, "--prompts", "{tmp}/noprompt.jsonl"),
      "noprompt.jsonl:1", "prompt_files"),
    C("evaluate-model-name-control-characters", "names", (*EVAL, "--models", "tiny\x1b[2J"), "'tiny\\x1b[2J'"),
    C("score-file-name-control-characters", "paths", ("score", "{tmp}/a\x1b[2J.png", "--prompt", "cat"),
      "a\\x1b[2J.png"),
    C("score-prompt-empty", "prompts", ("score", "{tmp}/images", "--prompt", " "), "is empty", "images"),
    C("score-prompt-and-prompts", "prompts", "score {tmp}/images --prompt cat --prompts {tmp}/two.txt",
      "--prompt", "images,prompt_files"),
    C("score-no-prompt", "prompts", "score {tmp}/images", "--prompt", "images"),
    C("score-prompts-count", "prompts", "score {tmp}/images/0.png --prompts {tmp}/two.txt", "2 lines for 1 images",
      "images,prompt_files"),
    C("score-prompts-not-utf8", "prompts", "score {tmp}/images --prompts {tmp}/latin1.txt", "latin1.txt",
      "images,prompt_files"),
    C("score-prompts-folder", "prompts", "score {tmp}/images --prompts {tmp}/dir.txt", "dir.txt",
      "images,prompt_files"),
    C("pairs-prompt-file-empty", "prompts", "pairs --model tiny-sd15 --prompts {tmp}/empty.txt --metric tiny-clip "
      "--output {tmp}/p", "empty.txt", "prompt_files"),
    # paths and files
    C("evaluate-store-under-a-file", "paths", "evaluate --store {tmp}/afile/r.sqlite", "afile", "a_file"),
    C("evaluate-image-cache-is-a-file", "paths", (*EVAL, "--image-cache", "{tmp}/afile"), "afile", "a_file"),
    C("score-missing-file", "paths", "score {tmp}/missing.png --prompt cat", "missing.png"),
    C("score-empty-folder", "paths", "score {tmp}/empty --prompt cat", "empty", "empty_folder"),
    C("score-out-is-a-folder", "paths", "score {tmp}/images --prompt cat --out {tmp}/empty", "--out",
      "images,empty_folder"),
    C("score-out-parent-missing", "paths", "score {tmp}/images --prompt cat --out {tmp}/no/such/s.jsonl", "--out",
      "images"),
    C("train-output-is-a-file", "paths", "train --config {tmp}/train.toml --output {tmp}/afile --quiet", "afile",
      "train_config,a_file"),
    C("train-data-empty-file", "paths", "train --config {tmp}/train.toml --data {tmp}/empty.jsonl --quiet",
      "{tmp}/empty.jsonl", "train_config,empty_jsonl"),
    C("train-data-folder-without-pairs", "paths", "train --config {tmp}/train.toml --data {tmp}/empty --quiet",
      "{tmp}/empty", "train_config,empty_folder"),
    C("train-data-missing-image", "paths", "train --config {tmp}/train.toml --data {tmp}/pairs.jsonl --quiet",
      "gone.png", "train_config,pairs_missing_image"),
    C("train-data-missing", "paths", "train --config {tmp}/train.toml --data {tmp}/nope.jsonl --quiet",
      "nope.jsonl", "train_config"),
    C("pairs-output-is-a-file", "paths", "pairs --model tiny-sd15 --prompts smoke --metric tiny-clip "
      "--output {tmp}/afile", "afile", "a_file"),
    C("micro-build-out-is-a-file", "paths", "micro build --out {tmp}/afile", "afile", "a_file"),
    C("micro-preferences-out-is-a-file", "paths", "micro preferences --out {tmp}/afile", "afile", "a_file"),
    # report reads the store only; --store=PATH keeps the file in the check that nothing was changed
    C("report-store-missing", "paths", "report --store={tmp}/none.sqlite", "does not exist"),
    C("report-store-is-text", "paths", "report --store={tmp}/notes.sqlite", "not an SQLite database", "not_a_store"),
    C("report-store-other-sqlite", "paths", "report --store={tmp}/other.sqlite",
      "without the runs, prompt_sets, images, samples, scores",
      "not_a_store"),
    C("report-unknown-baseline", "names", "report --store={tmp}/s.sqlite --baseline tiny-sd16",
      "one of tiny-sd15, tiny-sd15-alt", "small_store"),
    C("report-metric-without-scores", "names", "report --store={tmp}/s.sqlite --metrics tiny-clip,hpsv2",
      "metrics with scores: tiny-clip", "small_store"),
    C("report-html-without-out", "usage", "report --store={tmp}/s.sqlite --html", "--html needs --out",
      "small_store"),
    C("report-two-formats", "usage", "report --store={tmp}/s.sqlite --json --csv", "--json and --csv",
      "small_store"),
    C("report-label-without-equals", "usage", "report --store={tmp}/s.sqlite --label tiny-sd15",
      "accepted: NAME=LABEL", "small_store"),
    C("report-label-unknown-model", "names", "report --store={tmp}/s.sqlite --label tiny-sd16=base",
      "one of tiny-sd15, tiny-sd15-alt", "small_store"),
    C("report-label-collision", "names", "report --store={tmp}/s.sqlite --label tiny-sd15=tiny-sd15-alt",
      "two models would be shown as 'tiny-sd15-alt'", "small_store"),
    C("leaderboard-unknown-name", "names", "leaderboard update nope --root {tmp}", "leaderboard 'nope' does not "
      "exist"),
    C("leaderboard-root-missing", "paths", "leaderboard update micro --root {tmp}/none", "{tmp}/none does not exist"),
    C("demo-unknown-style", "names", "demo --style micro-skecth --out {tmp}/d", "'micro-skecth'"),
    C("demo-style-not-micro", "names", "demo --style sketch --out {tmp}/d", "not a micro style"),
    # images
    C("score-not-an-image", "images", "score {tmp}/notimage.png --prompt cat", "notimage.png", "text_as_png"),
    C("score-zero-byte-image", "images", "score {tmp}/zero.png --prompt cat", "zero.png", "zero_byte_png"),
    C("score-truncated-png", "images", "score {tmp}/trunc.png --prompt cat", "trunc.png", "truncated_png"),
    C("score-float-image-out-of-range", "images", "score {tmp}/float.tif --prompt cat", "{tmp}/float.tif",
      "float_tiff"),
    C("score-int32-image-negative", "images", "score {tmp}/neg.tif --prompt cat", "{tmp}/neg.tif", "negative_tiff"),
    C("score-lab-image", "images", "score {tmp}/lab.tif --prompt cat", "'LAB'", "lab_tiff"),
    C("score-bomb-warning-level", "images", "score {tmp}/bigish.png --prompt cat", "{tmp}/bigish.png",
      "bomb_warning_png"),
    C("score-4000x3-png", "images", "score {tmp}/sliver.png --prompt cat", "sliver.png", "sliver_png"),
    C("score-decompression-bomb", "images", "score {tmp}/bomb.png --prompt cat", "bomb.png", "bomb_png"),
    # checkpoints and model folders
    C("models-show-folder-without-index", "checkpoints", "models show {tmp}/noindex", "noindex",
      "folder_without_index"),
    C("models-show-index-not-json", "checkpoints", "models show {tmp}/badindex", "model_index.json",
      "index_not_json"),
    C("models-show-other-pipeline", "checkpoints", "models show {tmp}/flux", "FluxPipeline", "index_other_pipeline"),
    C("models-show-record-not-json", "checkpoints", "models show {tmp}/badrecord", "rpo_bench.json",
      "record_not_json"),
    C("evaluate-index-without-components", "checkpoints", (*EVAL, "--models", "{tmp}/bare", "--prompts", "smoke"),
      "{tmp}/bare", "index_without_components"),
    C("evaluate-sdxl-unet-in-sd15", "checkpoints", (*EVAL, "--models", "{tmp}/mixed", "--prompts", "smoke",
                                                    "--metrics", "tiny-clip", "--protocol", "tiny"),
      "{tmp}/mixed/unet", "sdxl_unet_in_sd15"),
    C("evaluate-truncated-safetensors", "checkpoints", (*EVAL, "--models", "{tmp}/cut", "--prompts", "smoke",
                                                        "--metrics", "tiny-clip", "--protocol", "tiny"),
      "{tmp}/cut/unet/diffusion_pytorch_model.safetensors", "truncated_unet"),
    C("evaluate-lora-random-keys", "checkpoints", (*EVAL, "--models", "{tmp}/lora", "--prompts", "smoke",
                                                   "--metrics", "tiny-clip", "--protocol", "tiny"),
      "{tmp}/lora", "lora_random_keys"),
    C("evaluate-unet-of-another-family", "checkpoints", (*EVAL, "--models", "{tmp}/wrongbase", "--prompts", "smoke",
                                                         "--metrics", "tiny-clip", "--protocol", "tiny"),
      "{tmp}/wrongbase/unet", "sd15_unet_for_sdxl"),
    C("evaluate-lora-truncated", "checkpoints", (*EVAL, "--models", "{tmp}/lora", "--prompts", "smoke",
                                                 "--metrics", "tiny-clip", "--protocol", "tiny"),
      "{tmp}/lora", "lora_truncated"),
    C("train-resume-truncated-checkpoint", "checkpoints",
      "train --config {tmp}/run/train.toml --resume --steps 3 --quiet", "{tmp}/run/checkpoints/step-2",
      "trained_run_cut_checkpoint"),
    C("score-scorer-checkpoint-truncated", "checkpoints",
      "score {tmp}/images --prompt cat --metrics hpsv2:{tmp}/cut.pt", "{tmp}/cut.pt", "images,scorer_checkpoints",
      slow=True),
    C("score-scorer-checkpoint-pickle", "checkpoints",
      "score {tmp}/images --prompt cat --metrics hpsv2:{tmp}/pickle.pt", "{tmp}/pickle.pt",
      "images,scorer_checkpoints", slow=True),
    C("score-scorer-checkpoint-missing", "checkpoints",
      "score {tmp}/images --prompt cat --metrics hpsv2:{tmp}/nope.pt", "{tmp}/nope.pt", "images"),
    C("evaluate-model-path-is-a-file", "checkpoints", (*EVAL, "--models", "{tmp}/afile"), "{tmp}/afile", "a_file"),
    C("models-show-system-folder", "checkpoints", "models show /etc", "'/etc'"),
    # E9: training
    C("train-resume-state-step-negative", "checkpoints",
      "train --config {tmp}/run/train.toml --resume --steps 3 --quiet", "trainer_state.json says step -2",
      "trained_run_state_step_negative"),
    C("train-resume-state-of-another-step", "checkpoints",
      "train --config {tmp}/run/train.toml --resume --steps 4 --quiet", "says step 1, its folder step-3",
      "trained_run_state_of_another_step"),
    C("train-output-under-a-file", "paths", "train --config {tmp}/train.toml --output {tmp}/afile/out --quiet",
      "{tmp}/afile is not a folder", "train_config,a_file"),
    # E9: user files
    C("train-config-yaml-not-utf8", "configs", "train --config {tmp}/latin1.yaml",
      "latin1.yaml is not UTF-8 text: byte 0xe9 at offset 18 (line 2)", "config_latin1_yaml"),
    C("registry-file-is-a-folder", "registry", "models", "registry.toml is a folder", "registry_folder"),
    C("registry-style-folder-number", "registry", "styles show x", "registry.toml: [styles.x] folder = 5",
      "registry_style_folder_number"),
    C("leaderboard-demo-not-a-table", "configs", "leaderboard update mine --root {tmp}/lb", "demo = 5",
      "leaderboard_demo_number"),
    C("leaderboard-style-number", "configs", "leaderboard update mine --root {tmp}/lb", "[demo] style = 5",
      "leaderboard_style_number"),
    C("leaderboard-set-a-string", "configs", "leaderboard update mine --root {tmp}/lb", "[demo] set = 'lr=1e-4'",
      "leaderboard_set_string"),
    C("leaderboard-quick-a-string", "configs", "leaderboard update mine --root {tmp}/lb", "[demo] quick = 'false'",
      "leaderboard_quick_string"),
    C("leaderboard-train-seeds-list-bad-seed", "configs", "leaderboard update mine --root {tmp}/lb",
      "[demo] train_seeds = [0, -1]: seed -1", "leaderboard_seeds_negative"),
    C("leaderboard-another-leaderboard-broken", "configs", "leaderboard update good --root {tmp}/lb",
      "mine/leaderboard.toml is not valid TOML", "leaderboard_broken"),
    C("leaderboard-root-is-a-file", "paths", "leaderboard update micro --root {tmp}/afile", "afile is a file",
      "a_file"),
    C("styles-show-captions-not-utf8", "paths", "styles show mine",
      "captions.jsonl is not UTF-8 text: byte 0xe9 at offset 34", "style_captions_latin1"),
    C("styles-show-caption-txt-not-utf8", "paths", "styles show mine", "00.txt is not UTF-8 text: byte 0xe9 at "
      "offset 3", "style_caption_txt_latin1"),
    C("styles-show-fifo-reference", "paths", "styles show mine", "zz.png is a named pipe (FIFO)",
      "style_fifo_reference"),
    C("styles-show-reference-link-to-dev-zero", "paths", "styles show mine", "zz.png is a device",
      "style_reference_dev_zero"),
    # E9: hub (offline here: tests/test_hub_unreachable.py runs the same commands against a refusing port)
    C("evaluate-hub-models-offline", "names", (*EVAL, "--models", "sd15-base,sd15-dpo"),
      "`rpo-bench download sd15-base sd15-dpo`"),
    C("evaluate-hub-scorer-and-prompts-offline", "names", (*EVAL, "--metrics", "hpsv2", "--prompts", "pickapic-val"),
      "`rpo-bench download hpsv2 pickapic-val`"),
    C("download-misspelt-style", "names", "download --dry-run vangog", "vangogh (style)"),
    # E9: integrity (the results store's schema, labels)
    C("report-store-of-the-first-schema", "paths", "report --store {tmp}/old.sqlite",
      "rpo-bench store migrate {tmp}/old.sqlite", "schema1_store"),
    C("store-migrate-missing-file", "paths", "store migrate {tmp}/none.sqlite", "does not exist"),
    C("report-label-with-a-line-break", "names", ("report", "--store", "{tmp}/s.sqlite", "--label",
                                                  "tiny-sd15-alt=alt\n## heading"), "single-line label",
      "small_store"),
    # usage errors: the argument parser's own
    C("unknown-command", "usage", "evalute", "'evalute'", usage=True),
    C("unknown-option", "usage", "evaluate --no-such-flag", "--no-such-flag", usage=True),
    C("integer-option-given-a-word", "usage", "evaluate --batch-size two", "two", usage=True),
    C("train-integer-option-given-a-word", "usage", "train --steps two", "two", usage=True),
    C("download-unknown-kind", "usage", "download tiny-sd15 --kind weights", "'weights'", usage=True),
    C("presets-extra-argument", "usage", "presets x", "(x)", usage=True),
    C("models-show-without-name", "usage", "models show", "'name'", usage=True),
]

ACCEPTED: list[Accepted] = [
    Accepted("score-prompt-over-token-limit", ("score", "{tmp}/images", "--metrics", "tiny-clip", "--prompt",
                                               LONG_PROMPT), "truncated", "images"),
    Accepted("score-16-bit-png", ("score", "{tmp}/deep16.png", "--metrics", "tiny-clip", "--prompt", "a cat"),
             "1 images", "sixteen_bit_png"),
    Accepted("prompts-show-control-characters", ("prompts", "show", "{tmp}/ansi.txt"), "\\x1b[2Ja blue dog",
             "prompt_files", absent="\x1b"),
    Accepted("score-prompt-control-characters", ("score", "{tmp}/images", "--metrics", "tiny-clip", "--prompt",
                                                 "a cat\x1b[2J", "--out", "{tmp}/s.jsonl"), "2 images", "images",
             absent="\x1b"),
    Accepted("score-odd-image-modes", ("score", "{tmp}/odd", "--metrics", "tiny-clip", "--prompt", "a cat"),
             "3 images", "odd_mode_images"),
]


# -- running one case ---------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    code: int
    out: str
    err: str
    left_behind: list[str] = field(default_factory=list)

    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


# Caches a failed command may fill without leaving output behind: the image cache (content-addressed images,
# reused by the next run) and the memo of file hashes. The tiny-model cache is a link, not followed.
CACHES = ("home/images", "home/file-hashes.json")


def _snapshot(root: Path, skip: set[Path]) -> dict[str, tuple[int, int]]:
    """Every file (size, mtime) and folder under `root`, except the caches and the stores in `skip`."""
    found: dict[str, tuple[int, int]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            relative = str(path.relative_to(root))
            if path in skip or any(relative == c or relative.startswith(c + "/") for c in CACHES):
                continue
            stat = path.lstat()
            found[relative] = (0, 0) if name in dirs else (stat.st_size, stat.st_mtime_ns)
    return found


def _store_paths(argv: list[str]) -> list[Path]:
    return [Path(argv[i + 1]) for i, arg in enumerate(argv[:-1]) if arg == "--store"]


def _store_rows(store: Path) -> int:
    """Image and score rows of a results store (a store that a failed run merely opened holds none)."""
    if not store.is_file():
        return 0
    with contextlib.closing(sqlite3.connect(store)) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return sum(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("images", "scores") if t in tables)


def _reset_registries() -> None:
    from rpo_bench.core.registry import reset_all_user_entries

    reset_all_user_entries()


def run_case(case: Case | Accepted, ws: Workspace) -> Outcome:
    """Set the case up, run `rpo-bench` in this process and report its exit code, output and leftovers."""
    from rpo_bench.cli import main

    os.environ["RPO_BENCH_HOME"] = str(ws.home)
    _reset_registries()
    for name in filter(None, case.setup.split(",")):
        SETUPS[name](ws)
    argv = case.args(ws)
    stores = _store_paths(argv)
    skip = {s.with_name(s.name + suffix) for s in stores for suffix in ("", "-wal", "-shm", "-journal")}
    before = _snapshot(ws.tmp, skip)
    rows_before = {s: _store_rows(s) for s in stores}  # a store the case was given may hold rows already
    cwd = os.getcwd()
    os.chdir(ws.tmp)  # whatever a command writes to a relative path lands where the snapshot sees it
    out, err = io.StringIO(), io.StringIO()
    # what `main`'s logging.basicConfig shows a user (under pytest the root logger already has handlers)
    shown_log = logging.StreamHandler(err)
    shown_log.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    shown_log.setLevel(logging.WARNING)
    logging.getLogger().addHandler(shown_log)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except (Exception, SystemExit) as exc:  # an escaping exception is a finding, not a crash of the test
            import traceback

            code = -1
            err.write("".join(traceback.format_exception(exc)))
        finally:
            logging.getLogger().removeHandler(shown_log)
            os.chdir(cwd)
    _reset_registries()
    after = _snapshot(ws.tmp, skip)
    left = sorted(p for p in after if before.get(p) != after[p])
    left += [f"{p} (removed)" for p in sorted(set(before) - set(after))]  # nothing the user had may be lost
    left += [f"{s.name}: {n - rows_before[s]:+d} image/score rows" for s in stores
             if (n := _store_rows(s)) != rows_before[s]]
    return Outcome(code, out.getvalue(), err.getvalue(), left)


RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")  # a newline or tab is layout; ESC, CR, BS act on the terminal


def problems(case: Case, outcome: Outcome, ws: Workspace) -> list[str]:
    """What is wrong with a bad-input case's outcome (empty: it behaves as the table says)."""
    fragment = case.fragment(ws)
    found = []
    if outcome.code != 2:
        found.append(f"exit code {outcome.code}, expected 2")
    if "Traceback" in outcome.out + outcome.err:
        found.append("a traceback")
    lines = outcome.error_lines()
    if case.usage:
        errors = [line for line in lines if line.startswith("Error: ")]
        if len(errors) != 1:
            found.append(f"{len(errors)} `Error:` lines on stderr, expected 1")
    else:
        errors = lines
        if len(lines) != 1 or not lines[0].startswith("error: "):
            found.append(f"{len(lines)} lines on stderr, expected one starting with `error: `")
    if errors and fragment not in errors[-1]:
        found.append(f"the error line does not contain {fragment!r}")
    if RAW_CONTROL.search(outcome.err):
        found.append("raw control characters on stderr (they act on the terminal)")
    if outcome.left_behind:
        found.append(f"left behind: {', '.join(outcome.left_behind)}")
    return found


def message(outcome: Outcome, ws: Workspace) -> str:
    """The error line as the docs show it: the case's folders as $TMP and $SHARED (not <tmp>: Markdown would
    take that for an HTML tag and hide it)."""
    lines = outcome.error_lines()
    errors = [line for line in lines if line.startswith(("error: ", "Error: "))] or lines[-1:]
    text = errors[-1] if errors else ""
    for path, label in ((ws.tmp, "$TMP"), (ws.shared, "$SHARED")):
        text = text.replace(str(path.resolve()), label).replace(str(path), label)
    return text.strip()


# -- the docs table -----------------------------------------------------------------------------------------------
AREAS = {"names": "Names", "numbers": "Numbers", "configs": "Config files", "registry": "Registry entries",
         "prompts": "Prompts", "paths": "Paths and files", "images": "Images", "checkpoints": "Checkpoints and model "
         "folders", "usage": "Usage errors (the argument parser's: usage text, then one `Error:` line)"}


def _cell(text: str) -> str:
    """A Markdown table cell: pipes escaped, control characters shown as Python escapes."""
    shown = "".join(repr(c)[1:-1] if (ord(c) < 32 or ord(c) == 127) else c for c in text)
    return shown.replace("|", "\\|")


def _code(text: str) -> str:
    shown = _cell(text)
    return f"`` {shown} ``" if "`" in shown else f"`{shown}`"


def _quote(arg: str) -> str:
    """Shell quoting (the {tmp} placeholder needs none); control characters as bash's $'\\x1b'."""
    import shlex

    if RAW_CONTROL.search(arg):
        return "$'" + "".join(repr(c)[1:-1] if RAW_CONTROL.match(c) else c for c in arg).replace("'", "\\'") + "'"
    return shlex.quote(arg) if arg == "" or re.search(r"[\s'\"\\$`|;&()*?]", arg) else arg


def command_line(case: Case | Accepted) -> str:
    shown = ['"$LONG_PROMPT"' if arg == LONG_PROMPT else _quote(arg).replace("{tmp}", "$TMP") for arg in case.argv]
    return "rpo-bench " + " ".join(shown)


def setup_text(case: Case | Accepted) -> str:
    names = [n for n in case.setup.split(",") if n]
    return "; ".join(" ".join((SETUPS[n].__doc__ or n).split()).replace("{tmp}", "$TMP") for n in names)


def docs_row(case: Case, shown: str) -> str:
    fragment = case.expect.replace("{tmp}", "$TMP")
    return (f"| {case.id} | {_code(command_line(case))} | {_cell(setup_text(case))} | {_code(fragment)} "
            f"| {_cell(shown)} |")


def accepted_row(case: Accepted, shown: str) -> str:
    return (f"| {case.id} | {_code(command_line(case))} | {_cell(setup_text(case))} | {_code(case.note)} "
            f"| {_cell(shown)} |")


def _cells(row: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


def render_docs(messages: dict[str, str], notes: dict[str, str]) -> str:
    parts = [
        "# Bad inputs and the message each gets",
        "",
        "Every command line below is wrong in one way, and `rpo-bench` answers each with one line on stderr that",
        "names the bad value and what is accepted, exit code 2, no traceback (unless `--debug`), and nothing left",
        "behind: no new, changed or deleted file, no rows in a results store. `$TMP` is a scratch folder (the",
        "working directory) holding the files in the *given* column, and `$RPO_BENCH_HOME` is `$TMP/home`; registry",
        "rows write `$RPO_BENCH_HOME/registry.toml`. `$LONG_PROMPT` is a 180-token prompt.",
        "",
        "Generated from `tests/test_bad_inputs.py`, which runs every row (`pytest tests/test_bad_inputs.py`):",
        "the rows live there (`CASES`), and new commands add theirs there. After changing a message or a row,",
        f"regenerate this file with `{REGENERATE}`.",
        "",
    ]
    for area, title in AREAS.items():
        rows = [c for c in CASES if c.area == area]
        parts += [f"## {title}", "", "| id | command | given | must contain | message |", "|---|---|---|---|---|"]
        parts += [docs_row(c, messages.get(c.id, "")) for c in rows]
        parts.append("")
    parts += ["## Accepted, with a note", "",
              "Inputs that look odd but are valid: the command succeeds (exit 0) and says what it did about them.", "",
              "| id | command | given | note contains | what it prints |", "|---|---|---|---|---|"]
    parts += [accepted_row(a, notes.get(a.id, "")) for a in ACCEPTED]
    return "\n".join(parts) + "\n"


def documented_rows() -> dict[str, list[str]]:
    """id -> cells of every table row in docs/bad-inputs.md."""
    rows = {}
    for line in DOCS.read_text(encoding="utf-8").splitlines() if DOCS.is_file() else []:
        if line.startswith("| ") and not line.startswith(("| id ", "|---")):
            cells = _cells(line)
            rows[cells[0]] = cells
    return rows


# -- the tests ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def shared_fixtures(session_home, tmp_path_factory) -> Path:
    """The session's tiny models (shared with every other test) plus this module's preference folder and run."""
    shared = tmp_path_factory.mktemp("bad-inputs-shared")
    (session_home / "models").mkdir(parents=True, exist_ok=True)
    (shared / "models").symlink_to(session_home / "models", target_is_directory=True)
    return shared


@pytest.fixture
def workspace(tmp_path, shared_fixtures, monkeypatch) -> Workspace:
    ws = make_workspace(tmp_path / "case", shared_fixtures)
    monkeypatch.setenv("RPO_BENCH_HOME", str(ws.home))
    return ws


def test_matrix_has_at_least_60_rows_with_unique_ids():
    ids = [c.id for c in CASES] + [a.id for a in ACCEPTED]
    assert len(CASES) >= 60 and len(ids) == len(set(ids))
    assert all(c.area in AREAS for c in CASES) and all(n in SETUPS for c in CASES for n in c.setup.split(",") if n)


def test_docs_list_exactly_these_cases():
    """docs/bad-inputs.md and CASES cannot drift: same ids, command lines, setups and fragments."""
    rows = documented_rows()
    expected = {c.id: docs_row(c, "") for c in CASES} | {a.id: accepted_row(a, "") for a in ACCEPTED}
    assert sorted(rows) == sorted(expected), f"docs are stale: run {REGENERATE}"
    for case_id, row in expected.items():
        assert rows[case_id][:4] == _cells(row)[:4], f"docs row {case_id} is stale: run {REGENERATE}"


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in CASES])
def test_bad_input(case: Case, workspace: Workspace):
    outcome = run_case(case, workspace)
    found = problems(case, outcome, workspace)
    assert not found, f"{command_line(case)}: {'; '.join(found)}\nstdout:\n{outcome.out}\nstderr:\n{outcome.err}"
    documented = documented_rows().get(case.id, [""] * 5)[4]
    assert documented == _cell(message(outcome, workspace)), f"docs/bad-inputs.md message is stale: run {REGENERATE}"


@pytest.mark.parametrize("case", ACCEPTED, ids=[a.id for a in ACCEPTED])
def test_accepted_with_a_note(case: Accepted, workspace: Workspace, caplog):
    with caplog.at_level(logging.WARNING):
        outcome = run_case(case, workspace)
    assert outcome.code == 0, outcome.err
    assert "Traceback" not in outcome.out + outcome.err
    assert not case.absent or case.absent not in outcome.out + outcome.err
    assert case.note in outcome.out + outcome.err + caplog.text
    documented = documented_rows().get(case.id, [""] * 5)[4]
    assert documented == _cell(_note(outcome, case, workspace)), f"docs/bad-inputs.md note is stale: run {REGENERATE}"


# -- the generator ------------------------------------------------------------------------------------------------
def _note(outcome: Outcome, case: Accepted, ws: Workspace) -> str:
    lines = [line for line in (outcome.err + outcome.out).splitlines() if case.note in line]
    text = " ".join(lines[0].split()) if lines else ""  # a table row: its padding says nothing
    return text.replace(str(ws.tmp), "$TMP")


def _run_all(selected: list[str]) -> tuple[dict[str, str], dict[str, str], list[str]]:
    os.environ["HF_HUB_OFFLINE"] = "1"
    logging.getLogger().addHandler(logging.NullHandler())  # run_case shows log lines; main's basicConfig must not
    messages, notes, report = {}, {}, []
    with tempfile.TemporaryDirectory(prefix="rpo-bench-bad-inputs-") as root:
        shared = Path(root) / "shared"
        shared.mkdir()
        cache = os.environ.get("RPO_BENCH_MODELS_CACHE")  # reuse an existing tiny-model cache if given
        if cache:
            (shared / "models").symlink_to(Path(cache).resolve(), target_is_directory=True)
        for i, case in enumerate([*CASES, *ACCEPTED]):
            if selected and case.id not in selected:
                continue
            ws = make_workspace(Path(root) / f"case-{i}", shared)
            outcome = run_case(case, ws)
            if isinstance(case, Accepted):
                notes[case.id] = _note(outcome, case, ws)
                ok = outcome.code == 0 and case.note in outcome.out + outcome.err
                report.append(f"{'ok  ' if ok else 'FAIL'} {case.id}: exit {outcome.code}; {notes[case.id]}")
                continue
            messages[case.id] = message(outcome, ws)
            found = problems(case, outcome, ws)
            report.append(f"{'ok  ' if not found else 'FAIL'} {case.id}: {messages[case.id]}"
                          + (f"\n       {'; '.join(found)}" if found else ""))
            if "Traceback" in outcome.err:
                report.append("       " + outcome.err.strip().splitlines()[-1])
    return messages, notes, report


def _main() -> None:
    parser = argparse.ArgumentParser(description="Run the bad-input matrix; optionally rewrite docs/bad-inputs.md.")
    parser.add_argument("--write-docs", action="store_true", help="rewrite docs/bad-inputs.md with the messages")
    parser.add_argument("ids", nargs="*", help="run only these case ids (not with --write-docs)")
    args = parser.parse_args()
    if args.write_docs and args.ids:
        parser.error("--write-docs runs every case")
    messages, notes, report = _run_all(args.ids)
    print("\n".join(report))
    if args.write_docs:
        DOCS.parent.mkdir(parents=True, exist_ok=True)
        tmp = DOCS.with_name(f".{DOCS.name}.tmp")
        tmp.write_text(render_docs(messages, notes), encoding="utf-8")
        os.replace(tmp, DOCS)
        print(f"wrote {DOCS}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    _main()
