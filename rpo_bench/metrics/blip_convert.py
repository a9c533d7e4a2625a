"""ImageReward's checkpoint (BLIP as written in the BLIP repository) -> transformers BLIP modules.

ImageReward.pt holds `blip.visual_encoder.*` (a timm-style ViT), `blip.text_encoder.*` (BLIP's "med" BERT with
cross-attention) and `mlp.layers.*`. transformers' BlipVisionModel and BlipTextModel are ports of the same
modules, so the conversion is a renaming: exact for the text tower, a handful of names for the ViT. The ViT's size
is read from the tensors (BLIP's ViTs use 64-wide attention heads), the text tower's from med_config.json.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch

VISION = "blip.visual_encoder."
TEXT = "blip.text_encoder."
MLP = "mlp."
UNUSED = ("blip.vision_proj.", "blip.text_proj.")  # contrastive heads of BLIP pre-training; ImageReward ignores them
HEAD_WIDTH = 64

_VISION_RENAMES = (
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
    (r"^norm\.", "post_layernorm."),
)


def _rename_vision(key: str) -> str:
    for pattern, replacement in _VISION_RENAMES:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    return f"<unknown>{key}"  # kept so the key check names it


def split_checkpoint(state: Mapping[str, torch.Tensor]) -> tuple[dict, dict, dict, list[str]]:
    """(vision, text, mlp state dicts in transformers / our names, keys that belong to none)."""
    vision, text, mlp, other = {}, {}, {}, []
    for key, tensor in state.items():
        if key.startswith(VISION):
            vision[_rename_vision(key.removeprefix(VISION))] = tensor
        elif key.startswith(TEXT):
            name = key.removeprefix(TEXT)
            if not name.endswith("position_ids"):  # a buffer older transformers saved; rebuilt by the module
                text[name] = tensor
        elif key.startswith(MLP):
            mlp[key.removeprefix(MLP)] = tensor
        elif not key.startswith(UNUSED):
            other.append(key)
    return vision, text, mlp, other


def vision_config_from_weights(vision: Mapping[str, torch.Tensor]):
    from transformers import BlipVisionConfig  # noqa: PLC0415 - transformers loads in seconds: on first use

    patch = vision["embeddings.patch_embedding.weight"]
    width, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    positions = int(vision["embeddings.position_embedding"].shape[1]) - 1
    depth = 1 + max(int(m.group(1)) for k in vision if (m := re.match(r"encoder\.layers\.(\d+)\.", k)))
    return BlipVisionConfig(
        hidden_size=width, intermediate_size=int(vision["encoder.layers.0.mlp.fc1.weight"].shape[0]),
        num_hidden_layers=depth, num_attention_heads=max(1, width // HEAD_WIDTH),
        image_size=round(positions ** 0.5) * patch_size, patch_size=patch_size,
        layer_norm_eps=1e-6,  # BLIP's ViT: partial(nn.LayerNorm, eps=1e-6)
        hidden_act="gelu", attention_dropout=0.0,
    )


def read_med_config(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def text_config_from_med(med: Mapping, encoder_width: int):
    """BLIP's med_config.json (a BertConfig with cross-attention) as a BlipTextConfig."""
    from transformers import BlipTextConfig  # noqa: PLC0415 - transformers loads in seconds: on first use

    return BlipTextConfig(
        vocab_size=med["vocab_size"], hidden_size=med["hidden_size"],
        encoder_hidden_size=encoder_width,  # BLIP_Pretrain overwrites med's encoder_width with the ViT's width
        intermediate_size=med["intermediate_size"], num_hidden_layers=med["num_hidden_layers"],
        num_attention_heads=med["num_attention_heads"], max_position_embeddings=med["max_position_embeddings"],
        hidden_act=med.get("hidden_act", "gelu"), layer_norm_eps=med.get("layer_norm_eps", 1e-12),
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=med.get("pad_token_id", 0),
        bos_token_id=med.get("bos_token_id"), sep_token_id=med.get("sep_token_id"),  # unused by an encoder
        is_decoder=True,  # transformers builds the cross-attention layers only for decoders; we call it as encoder
    )
