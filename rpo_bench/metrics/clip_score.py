"""CLIP score: 100 * max(cos(image, prompt), 0), as torchmetrics and the CLIP-score paper define it.

Backbones: a Hugging Face CLIP (hub id or local folder, default openai/clip-vit-large-patch14) or an open_clip
model (`clip:open_clip:ViT-B-32/laion2b_s34b_b79k`). `tiny-clip` runs the same HF code on a random tiny CLIP.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from rpo_bench.config import is_offline
from rpo_bench.errors import BadInputError, MissingWeightsError
from rpo_bench.metrics.base import Metric
from rpo_bench.progress import silence_library_progress

log = logging.getLogger(__name__)
DEFAULT_BACKBONE = "openai/clip-vit-large-patch14"
FORMULA_VERSION = "1"
HF_CLIP_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json",
                 "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")


def clip_score_from_features(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Row-wise CLIP score of matching image/text feature pairs (the math, separate from any model)."""
    image_features = torch.nn.functional.normalize(image_features.float(), dim=-1)
    text_features = torch.nn.functional.normalize(text_features.float(), dim=-1)
    return 100.0 * (image_features * text_features).sum(dim=-1).clamp(min=0)


class HFClipBackbone:
    """transformers CLIPModel; projections applied by hand so transformers 4 and 5 give the same features."""

    def __init__(self, source: str, device: str, dtype, name: str = "clip"):
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        silence_library_progress()
        local = Path(source).expanduser().is_dir()
        try:
            self.model = CLIPModel.from_pretrained(source, dtype=dtype, local_files_only=local or is_offline())
            self.processor = CLIPImageProcessor.from_pretrained(source, local_files_only=local or is_offline())
            self.tokenizer = CLIPTokenizer.from_pretrained(source, local_files_only=local or is_offline())
        except OSError as exc:
            raise MissingWeightsError(f"CLIP weights {source} are not on this machine"
                                      + (" and HF_HUB_OFFLINE is set" if is_offline() else "")
                                      + f"; fetch them with `rpo-bench download {name}`") from exc
        self.model.to(device).eval()
        self.device, self.dtype = device, dtype

    @torch.no_grad()
    def features(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        tokens = self.tokenizer(list(prompts), padding=True, truncation=True,
                                max_length=self.tokenizer.model_max_length, return_tensors="pt")
        vision = self.model.vision_model(pixel_values=pixels.to(self.device, self.dtype))
        image_features = self.model.visual_projection(vision.pooler_output)
        text = self.model.text_model(input_ids=tokens["input_ids"].to(self.device),
                                     attention_mask=tokens["attention_mask"].to(self.device))
        text_features = self.model.text_projection(text.pooler_output)
        return image_features, text_features

    def too_long(self, prompts: Sequence[str]) -> int:
        limit = self.tokenizer.model_max_length
        return sum(len(ids) > limit for ids in self.tokenizer(list(prompts))["input_ids"])


def open_clip_identity(source: str) -> str:
    """`ARCH/PRETRAINED` where PRETRAINED is an open_clip tag or a checkpoint file (identified by its hash).

    Without PRETRAINED open_clip would return random weights, different at every load: refused.
    """
    arch, _, pretrained = source.partition("/")
    if not arch or not pretrained:
        raise BadInputError(f"clip:open_clip:{source}: accepted: clip:open_clip:ARCH/PRETRAINED, e.g. "
                            "clip:open_clip:ViT-B-32/laion2b_s34b_b79k or clip:open_clip:ViT-B-32/path/to/weights")
    checkpoint = Path(pretrained).expanduser()
    if checkpoint.is_file():
        from rpo_bench.models.fingerprint import sha256_file

        return f"open_clip:{arch}/{checkpoint.name}@{sha256_file(checkpoint)[:12]}"
    return f"open_clip:{source}"


class OpenClipBackbone:
    def __init__(self, source: str, device: str, dtype):
        import open_clip

        arch, _, pretrained = source.partition("/")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained or None)
        except (RuntimeError, OSError) as exc:
            raise MissingWeightsError(f"open_clip weights {source} are not on this machine: {exc}") from exc
        self.model = model.to(device=device, dtype=dtype).eval()
        self.preprocess, self.tokenizer = preprocess, open_clip.get_tokenizer(arch)
        self.device, self.dtype = device, dtype

    @torch.no_grad()
    def features(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.stack([self.preprocess(image) for image in images]).to(self.device, self.dtype)
        tokens = self.tokenizer(list(prompts)).to(self.device)
        return self.model.encode_image(pixels), self.model.encode_text(tokens)

    def too_long(self, prompts: Sequence[str]) -> int:
        return 0  # open_clip's tokenizer truncates silently to its context length


class ClipScore(Metric):
    name = "clip"
    higher_is_better = True
    value_range = (0.0, 100.0)
    summary = "CLIP score, 100 * max(cos(image, prompt), 0)"

    def __init__(self, arg: str | None = None):
        super().__init__(arg)
        self._backbone = None
        self._identity: str | None = None
        self._warned_truncation = False

    def backbone_source(self) -> str:
        return self.arg or DEFAULT_BACKBONE

    @property
    def version(self) -> str:
        """Formula version + the backbone's weights (hub commit or folder hash), known without loading them."""
        if self._identity is None:
            source = self.backbone_source()
            if source.startswith("open_clip:"):
                self._identity = open_clip_identity(source.removeprefix("open_clip:"))
            elif Path(source).expanduser().is_dir():
                from rpo_bench.models.fingerprint import folder_fingerprint

                self._identity = f"{Path(source).name}@{folder_fingerprint(Path(source))[:12]}"
            else:
                from rpo_bench.models.fingerprint import resolve_hub_commit

                commit = resolve_hub_commit(source, "main", "config.json", f"metric {self.key}", self.key)
                self._identity = f"{source}@{commit[:12]}"
        return f"{FORMULA_VERSION}+{self._identity}"

    def hub_files(self) -> list:
        """A Hub CLIP's weights and processor files (open_clip tags and local folders need none from here)."""
        from rpo_bench.hub_files import HubFiles

        source = self.backbone_source()
        if source.startswith("open_clip:") or Path(source).expanduser().is_dir():
            return []
        return [HubFiles(source, patterns=HF_CLIP_FILES, what="CLIP weights, processor and tokenizer")]

    def load(self, device: str, dtype) -> None:
        source = self.backbone_source()
        if source.startswith("open_clip:"):
            self._backbone = OpenClipBackbone(source.removeprefix("open_clip:"), device, dtype)
        else:
            self._backbone = HFClipBackbone(source, device, dtype, self.key)

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        if not self._warned_truncation and self._backbone.too_long(prompts):
            log.warning("%s: prompts longer than the CLIP tokenizer's 77 tokens are truncated, as CLIP score "
                        "implementations do", self.key)
            self._warned_truncation = True
        image_features, text_features = self._backbone.features(images, prompts)
        return clip_score_from_features(image_features, text_features).tolist()

    def unload(self) -> None:
        self._backbone = None


class TinyClipScore(ClipScore):
    """CLIP score on a random tiny CLIP (argument: its seed); exercises the real HF loading and scoring code."""

    name = "tiny-clip"

    def backbone_source(self) -> str:
        from rpo_bench.models.loader import tiny_models_dir
        from rpo_bench.models.tiny import ensure_tiny_model

        seed = self.arg or "0"
        if not seed.isdigit():
            raise BadInputError(f"tiny-clip:{seed}: the argument is the tiny CLIP's seed; accepted: an integer >= 0")
        return str(ensure_tiny_model("tiny-clip", int(seed), tiny_models_dir()))


class MicroClipScore(ClipScore):
    """CLIP score with the micro world's contrastively trained CLIP (shipped with rpo-bench)."""

    name = "micro-clip"

    def backbone_source(self) -> str:
        from rpo_bench.micro.build import ASSETS

        return str(ASSETS / "micro-clip")
