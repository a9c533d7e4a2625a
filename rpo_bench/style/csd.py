"""CSD, the Contrastive Style Descriptor (Somepalli et al. 2024, "Measuring Style Similarity in Diffusion Models";
code learn2phoenix/CSD, MIT): `csd:S` is the cosine between an image's CSD style embedding and style S's prototype.

The official model (CSD/model.py, `CSD_CLIP`) is OpenAI CLIP ViT-L/14's vision tower with its projection removed
(`backbone.proj = None`), followed by a plain 1024 x 768 matrix: style embedding = L2-normalise(backbone(x) @
last_layer_style). (`last_layer_content`, the content head trained adversarially, is in the file but unused
here.) Its images go through CSD/loss_utils.py's `transforms_branch0`: RGB, Resize(224, bicubic), CenterCrop(224),
ToTensor, OpenAI CLIP mean/std. The prototype is the maintainers' recipe (CSD issue #5): the normalised mean of
the references' style embeddings; the score is the cosine to it, in [-1, 1].

We build the same tower with open_clip (its VisionTransformer uses OpenAI's parameter names; QuickGELU as OpenAI's
CLIP) and load the released file into it. That file is the training checkpoint (CSD/train_csd.py's `save_dict`):
`model_state_dict` with DistributedDataParallel's `module.` prefix, optimizer states, the iteration, and the
training `args` (an argparse.Namespace, with numpy scalars). `torch.load(weights_only=True)` refuses those last
objects, so we allow exactly these inert data classes besides tensors; anything else (code) is still refused.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rpo_bench.core.errors import BadInputError
from rpo_bench.hub.file_checks import read_json_object
from rpo_bench.hub.hub_files import HubFiles
from rpo_bench.metrics.checkpoints import check_keys, check_shapes, read_state_dict
from rpo_bench.metrics.official import OfficialScorer
from rpo_bench.metrics.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, stack_pixels
from rpo_bench.models.location import tiny_models_dir
from rpo_bench.models.tiny import _save_atomically
from rpo_bench.style.availability import absent_style
from rpo_bench.style.registry import STYLES, get_style, reference_images, references_fingerprint

CSD_REPO = "tomg-group-umd/CSD-ViT-L"  # linked from the CSD README; the maintainers' own Hub copy
CSD_FILE = "pytorch_model.bin"
ARCH = "ViT-L-14"  # OpenAI CLIP ViT-L/14: width 1024, 24 layers, 16 heads, patch 14, 224 px
ARCH_CONFIG_FILE = "open_clip_config.json"  # beside a checkpoint of another size (the tiny variant)
STATE_KEY = "model_state_dict"
BACKBONE_PREFIX = "backbone."
STYLE_HEAD = "last_layer_style"
CONTENT_HEAD = "last_layer_content"
FORMULA_VERSION = "1"
IMAGE_SIZE = 224
EMBED_BATCH = 16  # references embedded per forward: bounded memory for 200 ViT-L passes on a CPU
ACCEPTED = (f"a CSD checkpoint like {CSD_REPO}/{CSD_FILE} ({STATE_KEY} with backbone.* of an OpenAI CLIP ViT "
            f"without proj, and {STYLE_HEAD}), or a safetensors file of that state dict")


# -- reading the checkpoint ---------------------------------------------------------------------------------
NUMERIC_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16",
                  "float32", "float64", "longdouble", "complex64", "complex128")


def checkpoint_data_classes() -> list:
    """What the official training checkpoint holds besides tensors and plain containers: the training arguments
    (an argparse.Namespace: attributes, no code) and numpy scalars inside them (a numeric dtype and raw bytes;
    numpy 2 builds each dtype as an instance of its own class, which the unpickler checks too). numpy 1 pickled
    the scalar under numpy.core, numpy 2 under numpy._core: both names map to the same function."""

    scalar = (np._core if hasattr(np, "_core") else np.core).multiarray.scalar
    dtype_classes = {type(np.dtype(name)) for name in NUMERIC_DTYPES}
    return [argparse.Namespace, np.dtype, *sorted(dtype_classes, key=str), (scalar, "numpy.core.multiarray.scalar"),
            (scalar, "numpy._core.multiarray.scalar")]


def read_csd_state(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The model's tensors under the official names without the DDP prefix: backbone.*, last_layer_style, ..."""
    with torch.serialization.safe_globals(checkpoint_data_classes()):
        checkpoint = read_state_dict(path, what)
    if not isinstance(checkpoint, Mapping):
        raise BadInputError(f"{what}: {path} holds {type(checkpoint).__name__}, not a dict; accepted: {ACCEPTED}")
    state = checkpoint.get(STATE_KEY, checkpoint)  # the training file wraps it; a converted file may not
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInputError(f"{what}: {path} holds no state dict of tensors; accepted: {ACCEPTED}")
    # CSD/utils.py's convert_state_dict: the file was saved from DistributedDataParallel
    return {key.removeprefix("module."): tensor for key, tensor in state.items()}


def vision_config(checkpoint: Path, what: str) -> tuple[int, dict]:
    """(output dim, open_clip vision_cfg): ViT-L-14 from open_clip's registry, unless a config sits beside."""
    beside = checkpoint.with_name(ARCH_CONFIG_FILE)
    if beside.exists():
        accepted = "an open_clip model config: a JSON object with a model_cfg object (embed_dim, vision_cfg)"
        config = read_json_object(beside, what, accepted).get("model_cfg")
        if not isinstance(config, dict) or not isinstance(config.get("vision_cfg"), dict) \
                or not isinstance(config.get("embed_dim"), int):
            raise BadInputError(f"{what}: {beside} has no model_cfg with embed_dim and vision_cfg; "
                                f"accepted: {accepted}")
    else:
        import open_clip  # noqa: PLC0415 - open_clip loads in seconds: on first use

        config = open_clip.get_model_config(ARCH)
    return config["embed_dim"], config["vision_cfg"]


# -- the model ----------------------------------------------------------------------------------------------
class CsdStyleModel(torch.nn.Module):
    """CSD_CLIP's style branch: the CLIP vision tower without its projection, then the style matrix."""

    def __init__(self, embed_dim: int, vision_cfg: Mapping, dtype: torch.dtype = torch.float32):
        super().__init__()
        from open_clip.model import _build_vision_tower  # noqa: PLC0415 - open_clip loads in seconds: on first use

        # quick_gelu: OpenAI's CLIP (which CSD fine-tunes) uses QuickGELU, open_clip's registry config nn.GELU.
        # cast_dtype: in half precision, LayerNorm in float32 as OpenAI's LayerNorm does.
        self.backbone = _build_vision_tower(embed_dim, dict(vision_cfg), quick_gelu=True, cast_dtype=dtype)
        width = self.backbone.proj.shape[0]
        self.backbone.proj = None  # as CSD_CLIP: the pooled, ln_post-ed class token is the feature
        self.last_layer_style = torch.nn.Parameter(torch.zeros(width, embed_dim))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.backbone(pixels)
        return torch.nn.functional.normalize((features @ self.last_layer_style).float(), dim=-1)


def load_csd_model(path: Path, what: str, dtype: torch.dtype = torch.float32) -> CsdStyleModel:
    """A CsdStyleModel with the checkpoint's weights; a checkpoint that does not fit is one line, never a model
    with random weights left behind."""
    state = read_csd_state(path, what)
    embed_dim, vision_cfg = vision_config(path, what)
    try:
        model = CsdStyleModel(embed_dim, vision_cfg, dtype)
    except (TypeError, ValueError, KeyError) as exc:  # a config beside the checkpoint with unknown or bad fields
        raise BadInputError(f"{what}: {path.with_name(ARCH_CONFIG_FILE)} does not describe an open_clip vision "
                            f"tower ({type(exc).__name__}: {exc}); accepted: open_clip's vision_cfg fields") from exc
    state.pop(CONTENT_HEAD, None)  # the content head: trained, saved, not part of the style score
    wanted = {f"{BACKBONE_PREFIX}{key}": tensor for key, tensor in model.backbone.state_dict().items()}
    wanted[STYLE_HEAD] = model.last_layer_style
    check_keys(state, wanted, path, what, ACCEPTED)
    check_shapes(state, wanted, path, what, ACCEPTED)
    model.load_state_dict(state)
    return to_working_dtype(model, dtype).eval()


def to_working_dtype(model: CsdStyleModel, dtype: torch.dtype) -> CsdStyleModel:
    """In half precision, as OpenAI's CLIP runs: matrices in `dtype`, LayerNorms and embeddings in float32 (the
    tower was built with float32 LayerNorms for this)."""
    if dtype not in (torch.float16, torch.bfloat16):
        return model.to(dtype)
    from open_clip.model import convert_weights_to_lp  # noqa: PLC0415 - open_clip loads in seconds: on first use

    convert_weights_to_lp(model.backbone, dtype)
    model.last_layer_style.data = model.last_layer_style.data.to(dtype)
    return model


def csd_image_transform(size: int = IMAGE_SIZE):
    """transforms_branch0 of CSD/loss_utils.py, after the RGB conversion its datasets do on opening."""
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor  # noqa: PLC0415 - torchvision: on first use

    return Compose([
        lambda image: image if image.mode == "RGB" else image.convert("RGB"),
        Resize(size, interpolation=InterpolationMode.BICUBIC),
        CenterCrop(size),
        ToTensor(),
        Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
    ])


def prototype(embeddings: torch.Tensor) -> torch.Tensor:
    """A style's prototype: the normalised mean of its references' normalised style embeddings (CSD issue #5)."""
    if embeddings.dim() != 2 or len(embeddings) == 0:
        raise BadInputError(f"a CSD prototype needs one or more embeddings (an N x D tensor); got shape "
                            f"{tuple(embeddings.shape)}")
    unit = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    return torch.nn.functional.normalize(unit.mean(dim=0), dim=-1)


def style_cosine(embeddings: torch.Tensor, proto: torch.Tensor) -> torch.Tensor:
    """Cosine of each embedding to the prototype, clamped to [-1, 1] against rounding."""
    unit = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    return (unit @ proto.float()).clamp(-1.0, 1.0)


# -- the metrics --------------------------------------------------------------------------------------------
class CsdScore(OfficialScorer):
    """`csd:S`: CSD style similarity of an image to style S's references (rpo_bench.style.registry)."""

    name = "csd"
    aspect, aspect_rank = "style", 2
    example_arg = "vangogh"
    higher_is_better = True
    value_range = (-1.0, 1.0)
    summary = (f"CSD style similarity ({CSD_REPO}, CLIP ViT-L/14 + style head): cosine of the image's style "
               "embedding to the style's reference prototype; csd:<style>")
    uses_prompt = False
    formula_version = FORMULA_VERSION
    hub = HubFiles(CSD_REPO, patterns=(CSD_FILE,), what="CSD ViT-L training checkpoint (about 2.4 GB)")
    accepted_local = f"the official {CSD_FILE} of {CSD_REPO}"

    def __init__(self, arg: str | None = None, checkpoint: Path | None = None):
        """`checkpoint`: local weights in the official layout instead of the Hub's (tests, notebooks).

        Without a style the metric can still list its Hub files (`rpo-bench download csd` builds it so); it
        refuses to score."""
        if arg is not None:
            get_style(arg)  # an unknown style fails when the metric is named, before any work starts
        super().__init__(arg)
        self._checkpoint = Path(checkpoint).expanduser() if checkpoint is not None else None
        self._prototype: torch.Tensor | None = None

    @property
    def style(self):
        if not self.arg:
            known = ", ".join(f"{self.name}:{entry.name}" for entry in STYLES)
            raise BadInputError(f"{self.name}: needs a style; accepted: {known}")
        return get_style(self.arg)

    def absent_entries(self) -> list:
        """The CSD weights, then the style's parts (its references, when streamed from a Hub dataset)."""
        return [*super().absent_entries(), absent_style(self.style.name)] if self.arg else super().absent_entries()

    def local_source(self) -> Path | None:
        if self._checkpoint is not None and not self._checkpoint.exists():
            raise BadInputError(f"{self.key}: {self._checkpoint} does not exist; accepted: {self.accepted_local}")
        return self._checkpoint

    @property
    def version(self) -> str:
        """Formula + weights (Hub commit or file hash) + the reference set: a new reference image, or new weights
        (the maintainers say theirs may change), gives a new version."""
        style = self.style  # first: without a style, "needs a style" is the error worth reading
        return f"{super().version}+refs-{references_fingerprint(style)}"

    def notes(self) -> list[str]:
        """The weights behind the numbers, with the maintainers' caveat (their README's disclaimer); cheap: it only
        repeats the identity `version` already resolved."""
        weights = f"weights {self._identity}" if self._identity else f"weights of {CSD_REPO}"
        return [f"{self.key}: {weights}; the CSD maintainers say the released weights do not exactly reproduce "
                "the paper's numbers: compare csd scores only at the same weights"]

    def checkpoint_path(self) -> Path:
        return self.weights_file(CSD_FILE)

    def build(self) -> None:
        style = self.style
        path = self.checkpoint_path()
        self.model = load_csd_model(path, self.key, self.dtype).to(self.device)
        self.transform = csd_image_transform(self.model.backbone.image_size[0])
        self._prototype = self._style_prototype(style)

    def _style_prototype(self, style) -> torch.Tensor:
        images = [reference.image for reference in reference_images(style)]
        with torch.inference_mode():
            embeddings = torch.cat([self.embed(images[start:start + EMBED_BATCH])
                                    for start in range(0, len(images), EMBED_BATCH)])
        return prototype(embeddings)

    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Normalised CSD style embeddings (float32, on the device)."""
        return self.model(**self.prepare(images, []))

    def prepare(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        return {"pixels": stack_pixels(self.transform, images).to(self.device, self.dtype)}

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return style_cosine(self.model(pixels), self._prototype)

    def unload(self) -> None:
        super().unload()
        self._prototype = None


# -- the tiny variant ---------------------------------------------------------------------------------------
TINY_CONFIG = {"embed_dim": 32, "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 2, "width": 64,
                                               "head_width": 32, "patch_size": 16}}
TINY_SEED = 0


class _TinyFiles:
    """models.tiny's atomic saver calls save_pretrained(directory): write the checkpoint and its config."""

    def __init__(self, checkpoint: dict):
        self.checkpoint = checkpoint

    def save_pretrained(self, directory, **kwargs) -> None:
        # atomic: writes into the temporary folder models.tiny renames as a whole
        directory = Path(directory)
        torch.save(self.checkpoint, directory / CSD_FILE)
        (directory / ARCH_CONFIG_FILE).write_text(json.dumps({"model_cfg": TINY_CONFIG}), encoding="utf-8")


def official_layout(model: CsdStyleModel, content_head: torch.Tensor) -> dict:
    """A model's weights as CSD/train_csd.py saves them: DDP-prefixed names inside the training save_dict, with
    the training arguments (a Namespace holding a numpy scalar, as the released file does)."""

    state = {f"module.{BACKBONE_PREFIX}{key}": tensor for key, tensor in model.backbone.state_dict().items()}
    state[f"module.{STYLE_HEAD}"] = model.last_layer_style.detach()
    state[f"module.{CONTENT_HEAD}"] = content_head
    return {STATE_KEY: state, "iter": 1, "args": argparse.Namespace(arch="tiny", lr=np.float64(0.003))}


def _build_tiny() -> _TinyFiles:
    model = CsdStyleModel(TINY_CONFIG["embed_dim"], TINY_CONFIG["vision_cfg"])
    width = TINY_CONFIG["vision_cfg"]["width"]
    with torch.no_grad():  # a random head: the zeros CsdStyleModel starts with would make every embedding zero
        model.last_layer_style.normal_(std=width ** -0.5)
    return _TinyFiles(official_layout(model, torch.randn(width, TINY_CONFIG["embed_dim"]) * width ** -0.5))


def ensure_tiny_csd() -> Path:
    """`<tiny models dir>/tiny-csd-seed0/pytorch_model.bin`, built (seeded, atomically) on first use."""
    folder = tiny_models_dir() / f"tiny-csd-seed{TINY_SEED}"
    if not (folder / CSD_FILE).is_file():
        _save_atomically(folder, TINY_SEED, CSD_FILE, _build_tiny)
    return folder / CSD_FILE


class TinyCsdScore(CsdScore):
    """`tiny-csd:S`: the csd code, file layout included, on random tiny weights built offline. Its numbers mean
    nothing beyond exercising that code."""

    name = "tiny-csd"
    aspect_rank = 3
    summary = "csd code on a random tiny CLIP ViT + style head in the official checkpoint layout (tests, CPU demo)"

    def local_source(self) -> Path:
        return self._checkpoint if self._checkpoint is not None else ensure_tiny_csd()

    def hub_files(self) -> list:
        return []

    def notes(self) -> list[str]:
        return []  # random weights: there is nothing to say about them
