"""The CLIP BPE tokenizer of openai/clip-vit-large-patch14, built offline from open_clip's shipped vocabulary.

Stable Diffusion's text encoders use exactly this tokenizer. open_clip ships its BPE merges inside the wheel
(`bpe_simple_vocab_16e6.txt.gz`), so the Hugging Face files (vocab.json, merges.txt) can be regenerated here
without any download; the ids then match the real checkpoints token for token.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from rpo_bench.core.atomic import atomic_write

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MODEL_MAX_LENGTH = 77
VOCAB_SIZE = 49408
# CLIP keeps the first 49152 - 256 - 2 merges of the file (its vocabulary is 49408 = 2 * 256 + merges + 2).
NUM_MERGES = VOCAB_SIZE - 2 * 256 - 2


def _bpe_file() -> Path:
    """open_clip's shipped merges, located without importing open_clip (that import alone takes ~2.5 s)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the CLIP vocabulary ships with open_clip: pip install open_clip_torch")
    return Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"


def _bytes_to_unicode() -> list[str]:
    """The byte -> printable character table of GPT-2/CLIP byte-level BPE, in CLIP's vocabulary order."""
    ranges = [("!", "~"), ("¡", "¬"), ("®", "ÿ")]
    printable = [b for lo, hi in ranges for b in range(ord(lo), ord(hi) + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def _vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    lines = gzip.open(_bpe_file()).read().decode("utf-8").split("\n")
    merges = lines[1 : NUM_MERGES + 1]  # line 0 is the file's own version header
    base = _bytes_to_unicode()
    tokens = base + [c + "</w>" for c in base] + ["".join(m.split()) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise RuntimeError(f"CLIP vocabulary from {_bpe_file()}: {len(vocab)} tokens, expected {VOCAB_SIZE}")
    return vocab, merges


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, text)


def write_clip_tokenizer_files(directory: Path, pad_token: str = EOS_TOKEN) -> Path:
    """Write the Hugging Face CLIPTokenizer files into `directory` (created if needed) and return it.

    SD1.5 pads with "<|endoftext|>"; SDXL's second tokenizer pads with "!" (id 0), so pad is a parameter.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = _vocab_and_merges()
    specials = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN}
    specials["pad_token"] = pad_token
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "do_lower_case": True,
        "add_prefix_space": False,
        "errors": "replace",
        **specials,
    }
    _write_text(directory / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    _write_text(directory / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    _write_text(directory / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
    _write_text(directory / "special_tokens_map.json", json.dumps(specials, indent=2) + "\n")
    return directory


@functools.lru_cache(maxsize=8)
def clip_tokenizer(pad_token: str = EOS_TOKEN) -> CLIPTokenizer:
    """A ready CLIPTokenizer, cached: building the 49k-token BPE takes a noticeable part of a second.

    The object is shared by every caller in the process: treat it as read-only.

    Loaded through from_pretrained(dir): transformers 5 silently ignores vocab_file=/merges_file= kwargs.
    """
    from transformers import CLIPTokenizer  # noqa: PLC0415 - transformers loads in seconds: on first use

    with tempfile.TemporaryDirectory(prefix="rpo-bench-clip-tok-") as tmp:
        return CLIPTokenizer.from_pretrained(write_clip_tokenizer_files(Path(tmp), pad_token=pad_token))
