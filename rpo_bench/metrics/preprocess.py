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

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from rpo_bench.core.errors import BadInputError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _to_rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


def clip_image_transform(size: int = 224):
    """torchvision on PIL images: the same calls, in the same order, as the official packages."""
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor  # noqa: PLC0415 - torchvision: on first use

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
    from torchvision.transforms import InterpolationMode, Normalize, ToTensor  # noqa: PLC0415 - torchvision: on first use
    from torchvision.transforms import functional as F  # noqa: PLC0415 - torchvision: on first use

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
        from transformers import CLIPImageProcessorPil  # noqa: PLC0415 - transformers loads in seconds: on first use
    except ImportError:  # transformers 4: the PIL implementation is the plain class
        from transformers import CLIPImageProcessor as CLIPImageProcessorPil  # noqa: PLC0415 - transformers loads in seconds: on first use
    return CLIPImageProcessorPil.from_pretrained(str(folder))


# -- user images: opened, checked and brought to 8-bit in one place ------------------------------------------------
# Every scorer resizes to 224: the shorter side (then crops) or the longer side (then pads). Past this ratio the
# crop shows under 1% of the image, the padded strip is 2 pixels or less (0 past 448:1, where HPSv2's resize
# fails), and the shorter-side resize of e.g. 4000x3 makes a 300,000-pixel-long intermediate.
MAX_ASPECT_RATIO = 100

# Modes PIL converts to RGB the way an 8-bit RGB(A) file of the same picture would look, and what they become
# here. Palette and 1-bit images become L/RGB(A) before any resize, because PIL resizes "P" and "1" with
# nearest-neighbour whatever filter is asked for; alpha stays, so each scorer treats it as it treats RGBA files.
_EIGHT_BIT_MODES = {"L": "L", "LA": "LA", "RGB": "RGB", "RGBA": "RGBA", "1": "L", "PA": "RGBA", "RGBa": "RGBA",
                    "RGBX": "RGB", "CMYK": "RGB", "YCbCr": "RGB", "HSV": "RGB"}
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # read as 0..65535, scaled by 255/65535
_FLOAT_MODE = "F"  # read as 0..1, scaled by 255
ACCEPTED_MODES = "1, L, LA, P, PA, RGB, RGBA, CMYK, YCbCr, HSV, 16-bit grey (I;16, I: 0..65535), float grey (F: 0..1)"


def _open_checked(source: Path | BinaryIO, name: str) -> Image.Image:
    """Image.open with PIL's decompression-bomb limit enforced at its warning level, not only at twice it: an
    image that large would be resized to 224 pixels anyway, and decoding it can take gigabytes."""
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        size = exc.args[0].split(")")[0].removeprefix("Image size (") if exc.args else "too many pixels"
        raise BadInputError(f"image {name} has {size}, over PIL's decompression-bomb limit of {limit} pixels "
                            "(PIL.Image.MAX_IMAGE_PIXELS); accepted: images up to that size, so downscale it") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _does_not_decode(name, exc) from exc


def _does_not_decode(name: str, exc: Exception) -> BadInputError:
    return BadInputError(f"image {name} does not decode ({type(exc).__name__}: {exc}); accepted: image files that "
                         "PIL reads")


def _unsupported_mode(name: str, mode: str) -> BadInputError:
    return BadInputError(f"image {name} has PIL mode {mode!r}, which rpo-bench does not convert to RGB; accepted "
                         f"modes: {ACCEPTED_MODES}")


def check_image_header(image: Image.Image, name: str) -> None:
    """What can be refused from the header alone: the mode and the aspect ratio."""
    if image.mode not in _EIGHT_BIT_MODES and image.mode not in ("P", _FLOAT_MODE, *_SIXTEEN_BIT_MODES):
        raise _unsupported_mode(name, image.mode)
    width, height = image.size
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise BadInputError(f"image {name} is {width}x{height} pixels, too elongated to resize to the scorers' 224 "
                            f"pixels; accepted: sizes whose longer side is at most {MAX_ASPECT_RATIO} times the "
                            "shorter")


def to_eight_bit(image: Image.Image, name: str) -> Image.Image:
    """`image` as L, LA, RGB or RGBA with 8-bit values meaning what the file's values mean.

    PIL's own convert("RGB") clips 16-bit and float values at 255, which turns a 16-bit PNG or a [0, 1] float TIFF
    near-white or near-black without a word."""
    mode = image.mode
    if mode in _EIGHT_BIT_MODES:
        return image if _EIGHT_BIT_MODES[mode] == mode else image.convert(_EIGHT_BIT_MODES[mode])
    if mode == "P":  # a palette with a transparent entry keeps it as alpha, as the same picture saved as RGBA
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.float64)
        if values.min() < 0 or values.max() > 65535:  # only mode I (32-bit) can hold these
            raise BadInputError(f"image {name} is integer (mode {mode}) with values {values.min():g}.."
                                f"{values.max():g}; accepted: integer images with values 0..65535 (16-bit)")
        return Image.fromarray(np.rint(values * (255 / 65535)).astype(np.uint8), "L")
    if mode == _FLOAT_MODE:
        values = np.asarray(image).astype(np.float64)
        if not (values.min() >= 0.0 and values.max() <= 1.0):  # also refuses NaN
            raise BadInputError(f"image {name} is floating point (mode F) with values {values.min():g}.."
                                f"{values.max():g}; accepted: float images with values in [0, 1]")
        return Image.fromarray(np.rint(values * 255).astype(np.uint8), "L")
    raise _unsupported_mode(name, mode)


def check_user_image(path: Path) -> None:
    """Refuse, in one line naming the file, what `open_user_image` would refuse, without decoding the pixels of
    ordinary images (cheap enough to run on every file before a model loads): it reads the header and checks the
    file's structure. Images whose values decide (16-bit, float) are decoded."""
    with _open_checked(path, str(path)) as image:
        check_image_header(image, str(path))
        if image.mode in (_FLOAT_MODE, *_SIXTEEN_BIT_MODES):
            to_eight_bit(_decoded(image, str(path)), str(path))
            return
        try:
            image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise _does_not_decode(str(path), exc) from exc


def _decoded(image: Image.Image, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings():  # a frame of an animation can be larger than its header says
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise _does_not_decode(name, exc) from exc
    return image


def open_user_image(source: Path | BinaryIO, name: str | None = None) -> Image.Image:
    """A user's image (a file given to `rpo-bench score`, an image of a preference dataset), decoded, in 8-bit
    L, LA, RGB or RGBA; or one line naming it: not an image, a decompression bomb, too elongated, a mode or values
    rpo-bench cannot convert. Every place that opens user images goes through here."""
    name = name or str(source)
    with _open_checked(source, name) as image:
        check_image_header(image, name)
        converted = to_eight_bit(_decoded(image, name), name)
        return converted.copy() if converted is image else converted  # usable after the file is closed
