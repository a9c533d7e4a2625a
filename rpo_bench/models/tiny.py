"""Tiny models with the real architectures and random weights, for tests and offline demos.

They are saved in the same diffusers / transformers layout as the real checkpoints, so the one loading path
(`from_pretrained(path, local_files_only=True)`) that serves SD1.5, SDXL and CLIP is the path under test.
Sizes are the smallest that keep every structural feature: 8x VAE downsampling, a cross-attention block,
two UNet resolutions, SDXL's text_time conditioning, the full 49408-token CLIP vocabulary (so real prompts
tokenize to the real ids). A build takes about a second on a laptop CPU; same seed, same bytes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from rpo_bench.core.config import safe_child, writable_dir
from rpo_bench.core.errors import BadInputError, UnknownNameError
from rpo_bench.models.tokenizer import EOS_TOKEN, MODEL_MAX_LENGTH, VOCAB_SIZE, clip_tokenizer

# The noise schedule every SD1.x / SDXL checkpoint was trained with.
_SD_BETAS = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
}


def _text_config(projection_dim: int = 32, hidden_act: str = "quick_gelu"):
    """CLIP text encoder: only the width shrinks; vocabulary and context length stay the real ones."""
    from transformers import CLIPTextConfig  # noqa: PLC0415 - transformers loads in seconds: on first use

    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=MODEL_MAX_LENGTH,
        hidden_size=32,
        intermediate_size=37,  # not a multiple of 32, so a hidden/MLP shape mix-up fails loudly
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=projection_dim,
        hidden_act=hidden_act,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )


def _vae(scaling_factor: float):
    from diffusers import AutoencoderKL  # noqa: PLC0415 - diffusers loads in seconds: on first use

    # Four blocks = three downsamplings = the real 8x factor, so latents are 8x8 for a 64x64 image.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 32, 32),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=64,
        scaling_factor=scaling_factor,
    )


def _unet(cross_attention_dim: int, **extra):
    from diffusers import UNet2DConditionModel  # noqa: PLC0415 - diffusers loads in seconds: on first use

    # Two resolutions, one with cross-attention: the smallest UNet that still has skip connections across a
    # downsample and text conditioning (norm groups must divide 32, the narrowest block).
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=32,
        **extra,
    )


@contextlib.contextmanager
def _quiet_transformers_progress():
    """transformers 5 draws a "Writing model shards" bar per text encoder: noise for a one-second build."""
    from transformers.utils import logging as hf_logging  # noqa: PLC0415 - transformers loads in seconds: on first use

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _save_atomically(path: Path, seed: int, marker: str, build: Callable[[], object]) -> Path:
    """Build under a fixed seed, save into a sibling temp dir, rename into place; the first finisher wins.

    Also used by the tiny scorers, so every tiny build says in one line which folder it cannot write."""
    path = Path(path)
    writable_dir(path.parent, f"building the tiny model {path.name}")
    try:
        return _build_and_rename(path, seed, marker, build)
    except OSError as exc:  # the folder was writable a moment ago: a full disk, a quota
        raise BadInputError(f"cannot write the tiny model {path}: {exc.strerror or exc}") from exc


def _build_and_rename(path: Path, seed: int, marker: str, build: Callable[[], object]) -> Path:
    # atomic: everything is saved into a temporary folder that replaces `path` in one rename
    import torch  # noqa: PLC0415 - torch loads in seconds: on first use

    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; the renamed folder should read like any other cache entry
    try:
        # Weights are initialised on the CPU from the default generator alone. Seeding only it (not
        # torch.manual_seed, which also reseeds every CUDA device) inside fork_rng leaves callers' RNG alone.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            model = build()
        with _quiet_transformers_progress():
            model.save_pretrained(tmp, safe_serialization=True)
        try:
            os.replace(tmp, path)  # succeeds when path is absent (or an empty dir)
        except OSError:
            if not (path / marker).is_file():
                raise
            # Another process finished the same build first; its files are byte-identical to ours.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def build_tiny_sd15(path: Path, seed: int) -> Path:
    """An SD1.5-shaped StableDiffusionPipeline; native resolution 64x64."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline  # noqa: PLC0415 - diffusers loads in seconds: on first use
    from transformers import CLIPTextModel  # noqa: PLC0415 - transformers loads in seconds: on first use

    def build():
        # The default scheduler the real SD1.5 repo ships; steps_offset=1 also avoids diffusers' deprecation
        # warning on load.
        scheduler = PNDMScheduler(**_SD_BETAS, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
        return StableDiffusionPipeline(
            vae=_vae(scaling_factor=0.18215),
            text_encoder=CLIPTextModel(_text_config()),
            tokenizer=clip_tokenizer(EOS_TOKEN),
            unet=_unet(cross_attention_dim=32),
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    return _save_atomically(path, seed, "model_index.json", build)


def build_tiny_sdxl(path: Path, seed: int) -> Path:
    """An SDXL-shaped StableDiffusionXLPipeline: two text encoders and text_time conditioning.

    Load it with `add_watermarker=False` (no invisible-watermark dependency needed).
    """
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline  # noqa: PLC0415 - diffusers loads in seconds: on first use
    from transformers import CLIPTextModel, CLIPTextModelWithProjection  # noqa: PLC0415 - transformers loads in seconds: on first use

    time_embed_dim = 8
    pooled_dim = 32  # text_encoder_2's projection_dim; the UNet's added embedding takes its pooled output

    def build():
        unet = _unet(
            cross_attention_dim=32 + 32,  # SDXL concatenates both encoders' penultimate hidden states
            use_linear_projection=True,
            transformer_layers_per_block=1,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_embed_dim,
            # 6 micro-conditioning numbers (original size, crop top-left, target size) + pooled text.
            projection_class_embeddings_input_dim=6 * time_embed_dim + pooled_dim,
        )
        scheduler = EulerDiscreteScheduler(
            **_SD_BETAS, steps_offset=1, timestep_spacing="leading", interpolation_type="linear"
        )
        return StableDiffusionXLPipeline(
            vae=_vae(scaling_factor=0.13025),
            text_encoder=CLIPTextModel(_text_config()),
            text_encoder_2=CLIPTextModelWithProjection(_text_config(pooled_dim, hidden_act="gelu")),
            tokenizer=clip_tokenizer(EOS_TOKEN),
            tokenizer_2=clip_tokenizer("!"),  # the real SDXL tokenizer_2 pads with "!" (id 0)
            unet=unet,
            scheduler=scheduler,
            force_zeros_for_empty_prompt=True,
            add_watermarker=False,
        )

    return _save_atomically(path, seed, "model_index.json", build)


def build_tiny_clip(path: Path, seed: int) -> Path:
    """A CLIPModel with its CLIPProcessor in one folder: the offline stand-in for the CLIP-score model."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor  # noqa: PLC0415 - transformers loads in seconds: on first use
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD  # noqa: PLC0415 - transformers loads in seconds: on first use

    class _ModelWithProcessor:
        """Saves model and processor together so both land in the one atomically renamed folder."""

        def __init__(self, model, processor):
            self.model, self.processor = model, processor

        def save_pretrained(self, directory, **kwargs):
            # atomic: into the temporary folder _build_and_rename renames as a whole
            self.model.save_pretrained(directory, **kwargs)
            self.processor.save_pretrained(directory)

    def build():
        text = _text_config().to_dict()
        # 32x32 images in 8x8 patches: 16 patches + class token, enough to exercise the real vision tower.
        vision = {
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "projection_dim": 32,
        }
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32))
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": 32},
            crop_size={"height": 32, "width": 32},
            image_mean=OPENAI_CLIP_MEAN,
            image_std=OPENAI_CLIP_STD,
        )
        processor = CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer())
        return _ModelWithProcessor(model, processor)

    return _save_atomically(path, seed, "config.json", build)


TINY_BUILDERS: dict[str, Callable[[Path, int], Path]] = {
    "tiny-sd15": build_tiny_sd15,
    "tiny-sdxl": build_tiny_sdxl,
    "tiny-clip": build_tiny_clip,
}

# The file whose presence means a build finished (the rename is atomic, so it is never half there).
_MARKERS = {"tiny-sd15": "model_index.json", "tiny-sdxl": "model_index.json", "tiny-clip": "config.json"}


def ensure_tiny_model(kind: str, seed: int, root: Path) -> Path:
    """Return `root/<kind>-seed<seed>`, building it first if it is not there yet."""
    if kind not in TINY_BUILDERS:
        raise UnknownNameError(f"unknown tiny model {kind!r}; accepted: {', '.join(TINY_BUILDERS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise BadInputError(f"tiny model {kind} seed {seed!r}: accepted: an integer >= 0")
    path = safe_child(Path(root), f"{kind}-seed{seed}", what="tiny model")
    if not (path / _MARKERS[kind]).is_file():
        TINY_BUILDERS[kind](path, seed)
    return path


__all__ = [
    "TINY_BUILDERS",
    "build_tiny_clip",
    "build_tiny_sd15",
    "build_tiny_sdxl",
    "ensure_tiny_model",
]
