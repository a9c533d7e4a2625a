"""CLIP score: 100 * max(cos(image, prompt), 0), as torchmetrics and the CLIP-score paper define it.

Backbones: a Hugging Face CLIP (hub id or local folder, default openai/clip-vit-large-patch14) or an open_clip
model (`clip:open_clip:ViT-B-32/laion2b_s34b_b79k`). `tiny-clip` runs the same HF code on a random tiny CLIP.
"""

from __future__ import annotations

import difflib
import logging
import pickle
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from rpo_bench.core.config import is_offline
from rpo_bench.core.errors import BadInputError, MissingWeightsError
from rpo_bench.core.progress import silence_library_progress
from rpo_bench.hub.file_checks import check_transformers_folder
from rpo_bench.hub.hub_files import HubFiles, is_local_location
from rpo_bench.metrics import seed_argument
from rpo_bench.metrics.base import Metric
from rpo_bench.metrics.checkpoints import read_state_dict
from rpo_bench.micro.build import ASSETS
from rpo_bench.models.fingerprint import folder_fingerprint, resolve_hub_commit, sha256_file
from rpo_bench.models.location import tiny_models_dir
from rpo_bench.models.tiny import ensure_tiny_model

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


HF_CLIP_ACCEPTED = ("a transformers CLIP folder (config.json with model_type 'clip', model.safetensors, "
                    "preprocessor_config.json and the tokenizer files) or a Hub id like openai/clip-vit-large-patch14")


def local_clip_folder(source: str, what: str) -> Path | None:
    """`source` as a local CLIP folder after checking it is one; None for a Hub id.

    A path that is not a CLIP folder is the user's mistake, not missing weights: "not on this machine" and a
    download command would send them the wrong way."""
    if not is_local_location(source):
        return None
    folder = Path(source).expanduser()
    check_transformers_folder(folder, what, HF_CLIP_ACCEPTED, model_types=("clip",), label="CLIP")
    check_clip_processor_files(folder, what, HF_CLIP_ACCEPTED)
    return folder


def check_clip_processor_files(folder: Path, what: str, accepted: str) -> None:
    """A CLIP tokenizer and image processor in `folder`: transformers 5 builds a 2-token CLIPTokenizer from a folder
    without tokenizer files, silently, and an image processor error would not name the folder."""
    if not ((folder / "tokenizer.json").is_file() or all((folder / f).is_file() for f in ("vocab.json", "merges.txt"))):
        raise BadInputError(f"{what}: {folder} has no tokenizer files (tokenizer.json, or vocab.json and merges.txt); "
                            f"accepted: {accepted}")
    # transformers 5 saves the image processor inside processor_config.json; earlier versions on its own
    if not any((folder / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
        raise BadInputError(f"{what}: {folder} has no preprocessor_config.json (the image processor); "
                            f"accepted: {accepted}")


class HFClipBackbone:
    """transformers CLIPModel; projections applied by hand so transformers 4 and 5 give the same features."""

    def __init__(self, source: str, device: str, dtype, name: str = "clip"):
        from safetensors import SafetensorError  # noqa: PLC0415 - safetensors pulls torch: on first use
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer  # noqa: PLC0415 - transformers loads in seconds: on first use

        silence_library_progress()
        local = local_clip_folder(source, f"metric {name}") is not None
        try:
            self.model = CLIPModel.from_pretrained(source, dtype=dtype, local_files_only=local or is_offline())
            self.processor = CLIPImageProcessor.from_pretrained(source, local_files_only=local or is_offline())
            self.tokenizer = CLIPTokenizer.from_pretrained(source, local_files_only=local or is_offline())
        except (OSError, SafetensorError, ValueError, RuntimeError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if local or not isinstance(exc, OSError):  # the files are here but do not load: say why
                raise BadInputError(f"metric {name}: {source} is not a loadable CLIP model ({type(exc).__name__}: "
                                    f"{detail}); accepted: {HF_CLIP_ACCEPTED}") from exc
            raise MissingWeightsError(f"CLIP weights {source} are not on this machine"
                                      + (" and HF_HUB_OFFLINE is set" if is_offline() else "")
                                      + f"; fetch them with `rpo-bench download {name}`") from exc
        self.model.to(device).eval()
        self.device, self.dtype = device, dtype

    @torch.no_grad()
    def image_features(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Projected, unnormalised image features: what the style metrics compare images by."""
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        vision = self.model.vision_model(pixel_values=pixels.to(self.device, self.dtype))
        return self.model.visual_projection(vision.pooler_output)

    @torch.no_grad()
    def features(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(list(prompts), padding=True, truncation=True,
                                max_length=self.tokenizer.model_max_length, return_tensors="pt")
        image_features = self.image_features(images)
        text = self.model.text_model(input_ids=tokens["input_ids"].to(self.device),
                                     attention_mask=tokens["attention_mask"].to(self.device))
        text_features = self.model.text_projection(text.pooler_output)
        return image_features, text_features

    def too_long(self, prompts: Sequence[str]) -> int:
        limit = self.tokenizer.model_max_length
        return sum(len(ids) > limit for ids in self.tokenizer(list(prompts))["input_ids"])


OPEN_CLIP_ACCEPTED = ("clip:open_clip:ARCH/PRETRAINED, e.g. clip:open_clip:ViT-B-32/laion2b_s34b_b79k or "
                      "clip:open_clip:ViT-B-32/path/to/weights")


def open_clip_identity(source: str) -> str:
    """`ARCH/PRETRAINED` where PRETRAINED is an open_clip tag or a checkpoint file (identified by its hash).

    Without PRETRAINED open_clip would return random weights, different at every load: refused.
    """
    arch, _, pretrained = source.partition("/")
    if not arch or not pretrained:
        raise BadInputError(f"clip:open_clip:{source}: accepted: {OPEN_CLIP_ACCEPTED}")
    checkpoint = check_open_clip_source(arch, pretrained, f"clip:open_clip:{source}")
    if checkpoint is not None:
        return f"open_clip:{arch}/{checkpoint.name}@{sha256_file(checkpoint)[:12]}"
    return f"open_clip:{source}"


def check_open_clip_source(arch: str, pretrained: str, what: str) -> Path | None:
    """The checkpoint file PRETRAINED names (None for a tag); refuses an unknown architecture, an unknown tag and a
    path that is not a file. open_clip reports all three as RuntimeError, which reads like missing weights."""
    import open_clip  # noqa: PLC0415 - open_clip loads in seconds: on first use

    if arch not in open_clip.list_models():
        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see open_clip.list_models()"
        raise BadInputError(f"{what}: unknown open_clip architecture {arch!r}; {hint}")
    checkpoint = Path(pretrained).expanduser()
    if checkpoint.is_file():
        return checkpoint
    if checkpoint.exists():
        raise BadInputError(f"{what}: {checkpoint} is a directory; accepted: an open_clip checkpoint file or a tag")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained not in tags:
        looks_like_path = "/" in pretrained or pretrained.startswith((".", "~")) or checkpoint.suffix in (
            ".pt", ".pth", ".bin", ".safetensors")
        state = (f"{checkpoint} does not exist" if looks_like_path
                 else f"{pretrained!r} is not a pretrained tag of {arch}")
        raise BadInputError(f"{what}: {state}; accepted: a checkpoint file or one of {', '.join(tags[:6])}"
                            + (", ..." if len(tags) > 6 else ""))
    return None


class OpenClipBackbone:
    def __init__(self, source: str, device: str, dtype):
        import open_clip  # noqa: PLC0415 - open_clip loads in seconds: on first use

        arch, _, pretrained = source.partition("/")
        what = f"clip:open_clip:{source}"
        checkpoint = check_open_clip_source(arch, pretrained, what) if pretrained else None
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained or None)
        except (RuntimeError, OSError, ValueError, KeyError, IndexError, TypeError, EOFError,
                pickle.UnpicklingError) as exc:
            # open_clip's failures by cause: a tag not downloaded, an unreadable file (torch.load on arbitrary
            # bytes raises any of these), another model's weights
            if checkpoint is None:
                raise MissingWeightsError(f"open_clip weights {source} are not on this machine: "
                                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}") from exc
            raise _checkpoint_error(checkpoint, arch, what, exc) from exc
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


def _checkpoint_error(checkpoint: Path, arch: str, what: str, exc: Exception) -> BadInputError:
    """Why a local open_clip checkpoint failed: unreadable or refused (read_state_dict says which), or the wrong
    architecture's weights."""
    read_state_dict(checkpoint, what)  # raises the precise reason when the file itself is the problem
    detail = next((line.strip() for line in str(exc).splitlines() if line.strip().startswith(("size mismatch",
                                                                                                "Missing key"))),
                  str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    detail = detail if len(detail) <= 160 else detail[:157] + "..."
    return BadInputError(f"{what}: {checkpoint} does not fit open_clip {arch} ({detail}); "
                         f"accepted: a checkpoint of {arch}")


class ClipScore(Metric):
    name = "clip"
    aspect, aspect_rank = "content", 1
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
            elif local_clip_folder(source, f"metric {self.key}") is not None:
                self._identity = f"{Path(source).name}@{folder_fingerprint(Path(source))[:12]}"
            else:
                commit = resolve_hub_commit(source, "main", "config.json", f"metric {self.key}", self.key)
                self._identity = f"{source}@{commit[:12]}"
        return f"{FORMULA_VERSION}+{self._identity}"

    def hub_files(self) -> list:
        """A Hub CLIP's weights and processor files (open_clip tags and local folders need none from here)."""
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
    aspect_rank = 3

    def backbone_source(self) -> str:
        return str(ensure_tiny_model("tiny-clip", seed_argument(self.name, self.arg), tiny_models_dir()))


class MicroClipScore(ClipScore):
    """CLIP score with the micro world's contrastively trained CLIP (shipped with rpo-bench)."""

    name = "micro-clip"
    aspect_rank = 2

    def backbone_source(self) -> str:
        return str(ASSETS / "micro-clip")
