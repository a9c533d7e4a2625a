"""PickScore: a CLIP ViT-H-14 (transformers CLIPModel) fine-tuned on Pick-a-Pic choices.

As in the authors' README: the processor of laion/CLIP-ViT-H-14-laion2B-s32B-b79K (PIL preprocessing, 77-token
truncation), L2-normalised image and text embeddings, score = exp(logit_scale) x cosine (about 20-23).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from rpo_bench.core.errors import BadInputError
from rpo_bench.core.progress import silence_library_progress
from rpo_bench.hub.file_checks import check_transformers_folder
from rpo_bench.hub.hub_files import HubFiles
from rpo_bench.metrics.checkpoints import check_keys
from rpo_bench.metrics.clip_score import check_clip_processor_files
from rpo_bench.metrics.official import OfficialScorer, fetch_hub_file, transformers_errors_only
from rpo_bench.metrics.preprocess import pil_clip_image_processor, to_rgb_dropping_alpha

MODEL_FILES = ("config.json", "model.safetensors")
PROCESSOR_FILES = ("preprocessor_config.json", "tokenizer_config.json", "tokenizer.json", "vocab.json",
                   "merges.txt", "special_tokens_map.json")


class PickScore(OfficialScorer):
    name = "pickscore"
    higher_is_better = True
    value_range = (-150.0, 150.0)  # exp(logit_scale) is capped at 100 in CLIP training
    summary = "PickScore (yuvalkirstain/PickScore_v1): exp(logit_scale) x cosine; pickscore:<folder> for local"
    accepted_local = "a transformers CLIPModel folder (config.json, model.safetensors) with its processor files"
    hub = HubFiles("yuvalkirstain/PickScore_v1", patterns=MODEL_FILES, what="PickScore CLIP ViT-H-14")
    processor_hub = HubFiles("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", patterns=PROCESSOR_FILES,
                             what="CLIP ViT-H-14 processor and tokenizer")

    def hub_files(self) -> list[HubFiles]:
        local = self.local_source()
        if local is None:
            return self.all_hub_files()
        return [] if (local / "preprocessor_config.json").is_file() else [self.processor_hub]

    def all_hub_files(self) -> list[HubFiles]:
        return [self.hub, self.processor_hub]

    def _folders(self) -> tuple[Path, Path]:
        """(model folder, processor folder); a local folder serves as both when it has a processor."""
        local = self.local_source()
        model_folder = local if local is not None else self._hub_folder(self.hub, MODEL_FILES)
        # a local folder or a Hub cache entry alike: a truncated download is named here, not by safetensors
        check_transformers_folder(model_folder, self.key, self.accepted_local, model_types=("clip",), label="CLIP")
        if local is not None and (local / "preprocessor_config.json").is_file():
            processor_folder = local
        else:
            processor_folder = self._hub_folder(self.processor_hub, ("preprocessor_config.json", "tokenizer.json",
                                                                     "tokenizer_config.json"))
        check_clip_processor_files(processor_folder, self.key, self.accepted_local)
        return model_folder, processor_folder

    def _hub_folder(self, files: HubFiles, needed: Sequence[str]) -> Path:
        paths = [fetch_hub_file(self.name, files, filename) for filename in needed]
        return paths[0].parent

    def build(self) -> None:
        from safetensors import SafetensorError  # noqa: PLC0415 - safetensors pulls torch: on first use
        from transformers import CLIPModel, CLIPTokenizer  # noqa: PLC0415 - transformers loads in seconds: on first use


        silence_library_progress()
        model_folder, processor_folder = self._folders()
        try:
            with transformers_errors_only():  # its load report would be a table; ours is one line
                model, info = CLIPModel.from_pretrained(str(model_folder), dtype=self.dtype, output_loading_info=True)
        except (OSError, RuntimeError, ValueError, SafetensorError) as exc:  # shapes that do not fit the config
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise BadInputError(f"{self.key}: {model_folder} is not a loadable CLIPModel ({type(exc).__name__}: "
                                f"{detail}); accepted: {self.accepted_local}") from exc
        # transformers fills missing weights with random ones and ignores unexpected ones: refuse both. Checkpoints
        # saved by transformers < 4.31 (PickScore_v1 among them) also hold `position_ids` buffers, rebuilt today.
        unexpected = {k for k in info["unexpected_keys"] if not k.endswith("position_ids")}
        check_keys(set(model.state_dict()) - set(info["missing_keys"]) | unexpected,
                   model.state_dict(), model_folder / MODEL_FILES[1], self.key, self.accepted_local)
        self.model = model.to(self.device).eval()
        self.processor = pil_clip_image_processor(processor_folder)
        self.tokenizer = CLIPTokenizer.from_pretrained(str(processor_folder))

    def prepare(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        rgb = [to_rgb_dropping_alpha(image) for image in images]
        pixels = self.processor(images=rgb, return_tensors="pt")["pixel_values"]
        tokens = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self.token_limit,
                                return_tensors="pt")
        return {"pixels": pixels.to(self.device, self.dtype), "input_ids": tokens["input_ids"].to(self.device),
                "attention_mask": tokens["attention_mask"].to(self.device)}

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # projections applied by hand: get_*_features changed its return type in transformers 5
        image = self.model.visual_projection(self.model.vision_model(pixel_values=pixels).pooler_output)
        text = self.model.text_projection(
            self.model.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output)
        image = torch.nn.functional.normalize(image.float(), dim=-1)
        text = torch.nn.functional.normalize(text.float(), dim=-1)
        return self.model.logit_scale.float().exp() * (image * text).sum(dim=-1)

    def count_truncated(self, prompts: Sequence[str]) -> int:
        return sum(len(ids) > self.token_limit for ids in self.tokenizer(list(prompts), verbose=False)["input_ids"])
