"""The micro world's versions: what each build trains, so that a number can say which world it belongs to.

v1 (the first shipped world): 8x8x4 latents from a pixel-MSE VAE, a two-level UNet, a CLIP trained on the base's
mostly-plain mix. Measured limits (docs/style-recipe.md, `rpo-bench micro check`): the VAE erases vangogh and
pixel textures, the base draws blobs, the CLIP cannot see partial styles.

v2: 16x16x4 latents (2x downsampling) from a VAE trained with the random-feature perceptual loss of vae_losses.py
and its two chroma terms on a mix with half its renders styled (no discriminator: without it every style still
survives the VAE at >= 0.999, a sketch's colour survives better and training takes 40% less time; the vivid
chroma term, which weighs a stroke's hue above the paper's, reads sketch colour at 1.000; docs/micro-world.md);
a three-level UNet whose top level, at 16x16, has no attention (E7 measured that
design at 1.34x v1's step time), trained longer with EMA; a CLIP trained on captions rich in style words, with
renders of partial and mixed styles, so that its image embedding carries how much of a style an image has.
`rpo-bench micro build --world 1` rebuilds v1 as it was.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rpo_bench.core.errors import BadInputError
from rpo_bench.micro.training_data import StyleMix


@dataclass(frozen=True)
class WorldRecipe:
    version: int
    # VAE
    vae_downsampling: int
    vae_steps: int
    vae_mix: StyleMix
    vae_perceptual: float
    vae_adversarial: float
    vae_chroma: float  # weight of vae_losses.chroma_loss: a region's mean hue (docs/micro-world.md)
    vae_vivid_chroma: float  # weight of vae_losses.vivid_chroma_loss: the hue of a sketch's strokes
    vae_kl: float  # weight of the posterior's KL: enough of it keeps latents centred and the decoder robust to error
    # base UNet
    unet_levels: int
    unet_steps: int
    unet_ema_decay: float
    unet_ema_warmup: bool  # diffusers' EMA warm-up, so that the average never holds the random start (unet_train.py)
    unet_caption_noise: float  # share of each training caption's content attributes named wrong (miscaption)
    # micro CLIP
    clip_steps: int
    clip_mix: StyleMix

    def record(self) -> dict:
        """JSON-ready, for build.json."""
        return asdict(self)


WORLDS: dict[int, WorldRecipe] = {
    1: WorldRecipe(version=1, vae_downsampling=4, vae_steps=800, vae_mix=StyleMix(), vae_perceptual=0.0,
                   vae_adversarial=0.0, vae_chroma=0.0, vae_vivid_chroma=0.0, vae_kl=1e-6,
                   unet_levels=2, unet_steps=1200, unet_ema_decay=0.99, unet_ema_warmup=False, unet_caption_noise=0.0,
                   clip_steps=1500, clip_mix=StyleMix()),
    # v2's step counts share the 90-minute build: the UNet's loss stops paying past about 2,400 steps, and the
    # VAE takes the time saved (textured shapes were its weakest content); docs/micro-world.md has the numbers.
    2: WorldRecipe(version=2, vae_downsampling=2, vae_steps=1600, vae_mix=StyleMix(styled_named=0.5),
                   vae_perceptual=1.0, vae_adversarial=0.0, vae_chroma=20.0, vae_vivid_chroma=4.0, vae_kl=1e-5,
                   unet_levels=3, unet_steps=2400, unet_ema_decay=0.999, unet_ema_warmup=True, unet_caption_noise=0.35,
                   clip_steps=2000, clip_mix=StyleMix(styled_named=0.3, partial=0.3)),
}
LATEST = max(WORLDS)


def world_recipe(version: int) -> WorldRecipe:
    if version not in WORLDS:
        raise BadInputError(f"--world {version}; accepted: {', '.join(map(str, WORLDS))}")
    return WORLDS[version]
