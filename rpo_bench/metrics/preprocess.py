"""Image preprocessing exactly as the official scorers do it.

- ImageReward (BLIP) and the LAION aesthetic predictor (OpenAI CLIP) resize the shorter side to 224 with PIL
  bicubic, centre-crop, convert to RGB *after* cropping, and normalise with the OpenAI CLIP statistics:
  `clip_image_transform`.
- HPSv2's `score` does not crop: its vendored open_clip (with `light_augmentation=True`) converts to a tensor,
  resizes the *longer* side to 224 with torchvision's tensor bicubic, pads the rest with zeros (black), then
  normalises: `hps_image_transform`. (The official code keeps RGBA images as 4 channels and then fails; we
  convert them to RGB.)
- PickScore runs the Hugging Face CLIP processor as transformers 4 did: PIL-based, and RGBA converted to RGB by
  dropping alpha. transformers 5 defaults to a torchvision-tensor backend and composites alpha onto white, so
  PickScore converts to RGB itself and asks for the PIL backend (`pil_clip_image_processor`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _to_rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


def clip_image_transform(size: int = 224):
    """torchvision on PIL images: the same calls, in the same order, as the official packages."""
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

    return Compose([
        Resize(size, interpolation=InterpolationMode.BICUBIC),
        CenterCrop(size),
        _to_rgb,
        ToTensor(),
        Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
    ])


def hps_image_transform(size: int = 224):
    """HPSv2's ResizeMaxSize: longer side to `size` (tensor bicubic), centred zero padding to a square, OpenAI
    normalisation. Antialiasing is explicit: the official code takes torchvision's default, which was False for
    tensors before torchvision 0.17 and True since, and moves HPS by up to ~0.1 (x100 scale). We follow the
    official code as it runs with today's torchvision."""
    from torchvision.transforms import InterpolationMode, Normalize, ToTensor
    from torchvision.transforms import functional as F

    to_tensor, normalize = ToTensor(), Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)

    def transform(image: Image.Image) -> torch.Tensor:
        tensor = to_tensor(image if image.mode == "RGB" else image.convert("RGB"))
        height, width = tensor.shape[1:]
        scale = size / max(height, width)
        if scale != 1.0:
            tensor = F.resize(tensor, [round(height * scale), round(width * scale)], InterpolationMode.BICUBIC,
                              antialias=True)
        pad_h, pad_w = size - tensor.shape[1], size - tensor.shape[2]
        if pad_h or pad_w:  # the official code pads only after a resize (and fails on e.g. 224x100); we always do
            tensor = F.pad(tensor, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
        return normalize(tensor)

    return transform


def to_rgb_dropping_alpha(image: Image.Image) -> Image.Image:
    """PIL's plain conversion, as transformers 4's CLIP processor did (transformers 5 composites onto white)."""
    return image if image.mode == "RGB" else image.convert("RGB")


def stack_pixels(transform, images: Sequence[Image.Image]) -> torch.Tensor:
    return torch.stack([transform(image) for image in images])


def pil_clip_image_processor(folder: Path):
    """The processor saved in `folder` (preprocessor_config.json), run by transformers' PIL backend."""
    try:
        from transformers import CLIPImageProcessorPil
    except ImportError:  # transformers 4: the PIL implementation is the plain class
        from transformers import CLIPImageProcessor as CLIPImageProcessorPil
    return CLIPImageProcessorPil.from_pretrained(str(folder))
