"""Tiny variants of the official scorers: the same architecture families and the official file layouts, at tiny
sizes with random weights (seeded), built offline on first use into the tiny-model cache.

They run exactly the loading and scoring code of `hpsv2`, `pickscore`, `imagereward` and `aesthetic` (reading
`HPS_v2_compressed.pt`, `ImageReward.pt` + `med_config.json`, a CLIPModel folder, the LAION `.pth`), so CI and a
laptop exercise checkpoint reading, key conversion, preprocessing and tokenising without the multi-GB weights.
Their numbers mean nothing beyond that.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from pathlib import Path

import torch

from rpo_bench.metrics import seed_argument
from rpo_bench.metrics.aesthetic import CLIP_SUBFOLDER, HEAD_FILE, AestheticScore
from rpo_bench.metrics.blip_convert import HEAD_WIDTH, text_config_from_med
from rpo_bench.metrics.hps import ARCH_CONFIG_FILE, HPS_FILES, HPSv2Score
from rpo_bench.metrics.imagereward import ImageRewardScore
from rpo_bench.metrics.mlp_head import PreferenceMLP
from rpo_bench.metrics.pickscore import PickScore
from rpo_bench.models.location import tiny_models_dir
from rpo_bench.models.tiny import _save_atomically
from rpo_bench.models.tokenizer import clip_tokenizer

IMAGE_SIZE = 224  # the official input size, so preprocessing is exercised exactly as at full size
_MARKERS = {"tiny-hpsv2": HPS_FILES["v2.0"], "tiny-pickscore": "config.json", "tiny-imagereward": "ImageReward.pt",
            "tiny-aesthetic": HEAD_FILE}


class _Files:
    """Adapter for models.tiny's atomic saver: writes a dict of file name -> writer(path)."""

    def __init__(self, writers: dict[str, Callable[[Path], None]]):
        self.writers = writers

    def save_pretrained(self, directory, **kwargs) -> None:
        for name, write in self.writers.items():
            write(Path(directory) / name)


def _tiny_clip_model(projection_dim: int = 32):
    from transformers import CLIPConfig, CLIPModel  # noqa: PLC0415 - transformers loads in seconds: on first use

    text = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 2,
            "max_position_embeddings": 77, "vocab_size": 49408, "projection_dim": projection_dim,
            "hidden_act": "gelu", "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407}
    vision = {"image_size": IMAGE_SIZE, "patch_size": 32, "hidden_size": 32, "intermediate_size": 37,
              "num_hidden_layers": 2, "num_attention_heads": 2, "projection_dim": projection_dim, "hidden_act": "gelu"}
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim))


def _clip_processor_writer(model) -> Callable[[Path], None]:
    def write(directory: Path) -> None:
        # atomic: writes into the temporary folder models.tiny renames as a whole
        from transformers import CLIPImageProcessor  # noqa: PLC0415 - transformers loads in seconds: on first use


        model.save_pretrained(directory, safe_serialization=True)
        CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                           crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(directory)
        clip_tokenizer().save_pretrained(directory)

    return write


def _build_hps() -> _Files:
    # atomic: each writer fills the temporary folder models.tiny renames as a whole
    import open_clip  # noqa: PLC0415 - open_clip loads in seconds: on first use

    config = {"embed_dim": 16,
              "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 2, "width": 32, "head_width": 16, "patch_size": 14},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    state = open_clip.model.CLIP(**config).state_dict()
    return _Files({
        HPS_FILES["v2.0"]: lambda p: torch.save({"state_dict": state}, p),  # the official wrapping
        ARCH_CONFIG_FILE: lambda p: p.write_text(json.dumps({"model_cfg": config}), encoding="utf-8"),
    })


def _bert_vocab() -> list[str]:
    """A small WordPiece vocabulary in BERT's format: specials, characters, continuation pieces, a few words."""
    characters = list(string.ascii_lowercase + string.digits + string.punctuation)
    words = ["a", "an", "the", "of", "in", "on", "with", "photo", "painting", "cat", "dog", "red", "blue", "style"]
    return (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + characters + [f"##{c}" for c in characters]
            + [w for w in words if w not in characters])


def _official_blip_keys(vision: dict, text: dict, mlp: dict) -> dict[str, torch.Tensor]:
    """Our modules' tensors under ImageReward.pt's names (the inverse of blip_convert's renaming)."""
    renames = (("embeddings.class_embedding", "cls_token"), ("embeddings.position_embedding", "pos_embed"),
               ("embeddings.patch_embedding.", "patch_embed.proj."), ("post_layernorm.", "norm."),
               (r"encoder\.layers\.(\d+)\.layer_norm1\.", r"blocks.\1.norm1."),
               (r"encoder\.layers\.(\d+)\.layer_norm2\.", r"blocks.\1.norm2."),
               (r"encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"blocks.\1.attn.qkv."),
               (r"encoder\.layers\.(\d+)\.self_attn\.projection\.", r"blocks.\1.attn.proj."),
               (r"encoder\.layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."))
    state = {}
    for key, tensor in vision.items():
        for pattern, replacement in renames:
            key = re.sub(f"^{pattern}", replacement, key)
        state[f"blip.visual_encoder.{key}"] = tensor
    state.update({f"blip.text_encoder.{k}": v for k, v in text.items()})
    state.update({f"mlp.{k}": v for k, v in mlp.items()})
    width = vision["embeddings.class_embedding"].shape[-1]
    state["blip.vision_proj.weight"] = torch.zeros(16, width)  # present in the official file, unused by the score
    state["blip.vision_proj.bias"] = torch.zeros(16)
    return state


def _build_imagereward() -> _Files:
    # atomic: each writer fills the temporary folder models.tiny renames as a whole
    from transformers import BlipTextModel, BlipVisionConfig, BlipVisionModel  # noqa: PLC0415 - transformers loads in seconds: on first use

    vocab = _bert_vocab()
    med = {"architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": 32, "intermediate_size": 37,
           "layer_norm_eps": 1e-12, "max_position_embeddings": 64, "model_type": "bert", "num_attention_heads": 2,
           "num_hidden_layers": 2, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": len(vocab) + 2,
           "encoder_width": 2 * HEAD_WIDTH, "add_cross_attention": True}

    vision = BlipVisionModel(BlipVisionConfig(hidden_size=2 * HEAD_WIDTH, intermediate_size=37, num_hidden_layers=2,
                                              num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=16,
                                              layer_norm_eps=1e-6))
    text = BlipTextModel(text_config_from_med(med, med["encoder_width"]), add_pooling_layer=False)
    for module in (vision, text):  # BERT's init (std 0.02) makes the reward nearly blind to the image at this size
        for tensor in module.parameters():
            if tensor.dim() > 1:
                torch.nn.init.normal_(tensor, std=0.3)
    mlp = PreferenceMLP(med["hidden_size"])
    state = _official_blip_keys(vision.state_dict(), text.state_dict(), mlp.state_dict())
    return _Files({
        "ImageReward.pt": lambda p: torch.save(state, p),
        "med_config.json": lambda p: p.write_text(json.dumps(med, indent=2), encoding="utf-8"),
        "vocab.txt": lambda p: p.write_text("\n".join(vocab) + "\n", encoding="utf-8"),
        "tokenizer_config.json": lambda p: p.write_text(json.dumps({"do_lower_case": True}), encoding="utf-8"),
    })


def _build_pickscore() -> _Files:
    model = _tiny_clip_model()
    write = _clip_processor_writer(model)
    return _Files({".": write})


def _build_aesthetic() -> _Files:
    # atomic: each writer fills the temporary folder models.tiny renames as a whole
    clip = _tiny_clip_model()
    head = PreferenceMLP(clip.config.projection_dim)
    return _Files({
        HEAD_FILE: lambda p: torch.save(head.state_dict(), p),  # a plain state dict, as the LAION release
        CLIP_SUBFOLDER: _clip_processor_writer(clip),
    })


_BUILDERS: dict[str, Callable[[], _Files]] = {"tiny-hpsv2": _build_hps, "tiny-pickscore": _build_pickscore,
                                               "tiny-imagereward": _build_imagereward,
                                               "tiny-aesthetic": _build_aesthetic}


def ensure_tiny_scorer(kind: str, seed: int) -> Path:
    """`<tiny models dir>/<kind>-seed<seed>`, built (seeded, atomically) on first use."""
    path = tiny_models_dir() / f"{kind}-seed{seed}"
    if not (path / _MARKERS[kind]).is_file():
        _save_atomically(path, seed, _MARKERS[kind], _BUILDERS[kind])
    return path


class _Tiny:
    """Mixin: weights come from the tiny build for the seed in the argument, never from the Hub."""

    name: str
    arg: str | None

    def __init__(self, arg: str | None = None):
        seed_argument(self.name, arg)  # refused when the metric is named, before any command starts work
        super().__init__(arg)

    def local_source(self) -> Path:
        folder = ensure_tiny_scorer(self.name, seed_argument(self.name, self.arg))
        return folder / HPS_FILES["v2.0"] if self.name == "tiny-hpsv2" else folder

    def hub_files(self) -> list:
        return []


class TinyHPSv2Score(_Tiny, HPSv2Score):
    name = "tiny-hpsv2"
    summary = "HPSv2 code on a random tiny open_clip ViT (tests, CPU demo); tiny-hpsv2:<seed>"


class TinyPickScore(_Tiny, PickScore):
    name = "tiny-pickscore"
    summary = "PickScore code on a random tiny CLIPModel (tests, CPU demo); tiny-pickscore:<seed>"


class TinyImageRewardScore(_Tiny, ImageRewardScore):
    name = "tiny-imagereward"
    summary = "ImageReward code on a random tiny BLIP + MLP in the official layout (tests, CPU demo)"


class TinyAestheticScore(_Tiny, AestheticScore):
    name = "tiny-aesthetic"
    summary = "aesthetic-predictor code on a random tiny CLIP + MLP (tests, CPU demo)"
