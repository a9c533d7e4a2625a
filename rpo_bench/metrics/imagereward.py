"""ImageReward: BLIP (ViT-L image encoder, BERT-base text encoder with cross-attention) + an MLP head.

As the official `score`: the prompt tokenised by bert-base-uncased (with BLIP's [DEC]/[ENC] tokens added),
padded and truncated to 35 tokens; the text encoder attends to the image embeddings; the [CLS] feature goes
through the MLP; the reward is normalised with the official mean and std (about -2..2; SD1.5 averages -0.16).
The official package no longer imports under transformers 5, so the checkpoint is converted (blip_convert).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from rpo_bench.core.errors import BadInputError
from rpo_bench.hub.file_checks import read_json_object
from rpo_bench.hub.hub_files import HubFiles
from rpo_bench.metrics.blip_convert import (
    split_checkpoint,
    text_config_from_med,
    vision_config_from_weights,
)
from rpo_bench.metrics.checkpoints import check_keys, check_shapes, nested_state_dict, read_state_dict
from rpo_bench.metrics.mlp_head import PreferenceMLP
from rpo_bench.metrics.official import OfficialScorer, fetch_hub_file
from rpo_bench.metrics.preprocess import clip_image_transform, stack_pixels

REWARD_MEAN = 0.16717362830052426  # ImageReward.py: the reward distribution on its training set
REWARD_STD = 1.0333394966054072
TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json")
VIT_SIZING_KEYS = {"embeddings.patch_embedding.weight", "embeddings.position_embedding",
                   "encoder.layers.0.mlp.fc1.weight"}  # what the ViT's size is read from
ACCEPTED = "the official ImageReward.pt (BLIP ViT-L + BERT with cross-attention + MLP)"


class ImageRewardScore(OfficialScorer):
    name = "imagereward"
    higher_is_better = True
    value_range = (float("-inf"), float("inf"))
    summary = "ImageReward v1.0 (THUDM/ImageReward), normalised reward; imagereward:<folder> for local weights"
    token_limit = 35
    accepted_local = "a folder with ImageReward.pt and med_config.json (and optionally the BERT tokenizer's vocab.txt)"
    hub = HubFiles("THUDM/ImageReward", patterns=("ImageReward.pt", "med_config.json"),
                   what="ImageReward checkpoint and BLIP text config")
    tokenizer_hub = HubFiles("google-bert/bert-base-uncased", patterns=TOKENIZER_FILES,
                             what="bert-base-uncased tokenizer")

    def hub_files(self) -> list[HubFiles]:
        local = self.local_source()
        if local is None:
            return self.all_hub_files()
        return [] if (local / "vocab.txt").is_file() else [self.tokenizer_hub]

    def all_hub_files(self) -> list[HubFiles]:
        return [self.hub, self.tokenizer_hub]

    def local_source(self) -> Path | None:
        local = super().local_source()
        if local is not None and not local.is_dir():  # ImageReward needs two files: the argument is their folder
            raise BadInputError(f"{self.key}: {local} is a file; accepted: {self.accepted_local}")
        return local

    def _tokenizer_folder(self) -> Path:
        local = self.local_source()
        if local is not None and (local / "vocab.txt").is_file():
            return local
        paths = [fetch_hub_file(self.name, self.tokenizer_hub, f) for f in TOKENIZER_FILES]
        return paths[0].parent

    def build(self) -> None:
        from transformers import BertTokenizer, BlipTextModel, BlipVisionModel  # noqa: PLC0415 - transformers loads in seconds: on first use

        checkpoint_path = self.weights_file("ImageReward.pt")
        state = nested_state_dict(read_state_dict(checkpoint_path, self.key), checkpoint_path, self.key)
        vision_state, text_state, mlp_state, other = split_checkpoint(state)
        check_keys(other, [], checkpoint_path, self.key, ACCEPTED)
        check_keys(vision_state.keys() & VIT_SIZING_KEYS, VIT_SIZING_KEYS, checkpoint_path, self.key, ACCEPTED)

        vision = BlipVisionModel(vision_config_from_weights(vision_state))
        med_path = self.weights_file("med_config.json")
        med_accepted = "BLIP's med_config.json (a BertConfig: vocab_size, hidden_size, num_hidden_layers, ...)"
        med = read_json_object(med_path, self.key, med_accepted)
        try:
            text_config = text_config_from_med(med, vision.config.hidden_size)
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInputError(f"{self.key}: {med_path} lacks or mistypes {exc}; accepted: {med_accepted}") from exc
        text = BlipTextModel(text_config, add_pooling_layer=False)
        mlp = PreferenceMLP.sized_for(mlp_state)
        for module, part in ((vision, vision_state), (text, text_state), (mlp, mlp_state)):
            expected = module.state_dict()
            check_keys(part, expected, checkpoint_path, self.key, ACCEPTED)
            check_shapes(part, expected, checkpoint_path, self.key, ACCEPTED)
            module.load_state_dict(part)
        self.model = torch.nn.ModuleDict({"vision": vision, "text": text, "mlp": mlp}).to(self.device, self.dtype)
        self.model["mlp"].float()  # the official head runs in float32 on `.float()` features, whatever the backbone
        self.model.eval()

        tokenizer = BertTokenizer.from_pretrained(str(self._tokenizer_folder()))
        # BLIP's init_tokenizer: the same two additions, so that ids match the checkpoint's 30524-token embedding
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
        tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
        self.tokenizer = tokenizer
        self.transform = clip_image_transform(vision.config.image_size)

    def prepare(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=self.token_limit,
                                return_tensors="pt")
        return {"pixels": stack_pixels(self.transform, images).to(self.device, self.dtype),
                "input_ids": tokens["input_ids"].to(self.device),
                "attention_mask": tokens["attention_mask"].to(self.device)}

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        image_embeds = self.model["vision"](pixel_values=pixels).last_hidden_state
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        text = self.model["text"](input_ids=input_ids, attention_mask=attention_mask,
                                  encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask)
        features = text.last_hidden_state[:, 0, :].float()
        reward = self.model["mlp"](features).squeeze(-1)
        return (reward - REWARD_MEAN) / REWARD_STD

    def count_truncated(self, prompts: Sequence[str]) -> int:
        return sum(len(ids) > self.token_limit for ids in self.tokenizer(list(prompts), verbose=False)["input_ids"])
