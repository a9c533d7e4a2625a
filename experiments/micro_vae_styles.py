"""Can a micro VAE keep each style's texture? The judge's style probability on VAE reconstructions of renders.

What any UNet trained on a VAE's latents can reach is bounded by how the judge reads that VAE's reconstructions.
This trains VAE variants (latent channels x share of styled renders in the training mix) and prints, for each and
for micro-base's own VAE, the judge's mean probability of the rendered style on reconstructions of fresh renders,
then the lowest content accuracy per style (`micro check`'s vae card).

    python experiments/micro_vae_styles.py --channels 4,8,16 --styled 0.5 --steps 800 --out vae-variants

Each variant takes about 12 minutes on one core; trained VAEs are saved in --out and reused.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from rpo_bench.micro.judge import MicroJudge
from rpo_bench.micro.render import render_batch
from rpo_bench.micro.scenes import STYLES, sample_scenes
from rpo_bench.micro.training_data import StyleMix
from rpo_bench.micro.vae_train import build_micro_vae, train_micro_vae
from rpo_bench.workflows.micro_check import vae_card

BASE_VAE = Path(__file__).resolve().parents[1] / "rpo_bench" / "micro" / "assets" / "micro-base"


def reconstruction_table(vae, judge: MicroJudge, renders_per_style: int, seed: int = 5) -> dict[str, float]:
    """Style -> the judge's mean probability of that style on reconstructions (latent means, decoded)."""
    rng = np.random.default_rng(seed)
    row = {}
    for style in STYLES:
        scenes = [replace(s, style=style) for s in sample_scenes(rng, renders_per_style, styles=("plain",))]
        pixels = torch.from_numpy(render_batch(scenes, list(range(renders_per_style)))).permute(0, 3, 1, 2)
        with torch.no_grad():
            images = pixels.float().div(127.5).sub(1)
            decoded = vae.decode(vae.encode(images).latent_dist.mean).sample.clamp(-1, 1)
        array = decoded.add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).numpy()
        row[style] = float(np.mean(judge.style_probability(array, style)))
    return row


def content_table(vae, judge: MicroJudge, renders_per_style: int, seed: int = 5) -> dict[str, str]:
    """Style -> the lowest content accuracy over the attributes on reconstructions, and which attribute."""
    card = vae_card(vae, judge, renders_per_style, seed)
    return {style: "{1:.3f} ({0})".format(*min(card[style]["content"].items(), key=lambda kv: kv[1]))
            for style in STYLES}


PERTURBATIONS = (0.0, 0.1, 0.2, 0.3)


def perturbed_table(vae, judge: MicroJudge, renders: int, seed: int = 5) -> dict[float, tuple[float, float]]:
    """Share of the latents' std added as Gaussian noise -> (background noise in 8-bit levels, the judge's lowest
    content accuracy) on decoded plain renders. A diffusion model's latents always miss the encoder's by some
    error; this is how much texture that error paints where the scene has none (micro check's
    `background_noise`, on the base's own images)."""
    from rpo_bench.micro.judge import TRAIN_SEED_FLOOR
    from rpo_bench.workflows.micro_check import background_noise, content_accuracy

    rng = np.random.default_rng(seed)
    scenes = sample_scenes(rng, renders, styles=("plain",))
    pixels = torch.from_numpy(render_batch(scenes, rng.integers(0, TRAIN_SEED_FLOOR, size=renders).tolist()))
    generator = torch.Generator().manual_seed(seed)
    row = {}
    with torch.no_grad():
        latents = vae.encode(pixels.permute(0, 3, 1, 2).float().div(127.5).sub(1)).latent_dist.mean
        for share in PERTURBATIONS:
            noisy = latents + share * latents.std() * torch.randn(latents.shape, generator=generator)
            decoded = vae.decode(noisy).sample.clamp(-1, 1)
            images = decoded.add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).numpy()
            row[share] = (background_noise(images), min(content_accuracy(judge, images, scenes).values()))
    return row


def variant(out: Path, channels: int, styled: float, steps: int, downsampling: int = 4, perceptual: float = 0.0,
            adversarial: float = 0.0, lowpass: float = 0.0, chroma: float = 0.0, vivid: float = 0.0,
            kl: float = 1e-6, latent_noise: float = 0.0):
    from safetensors.torch import load_file, save_file

    finer = "" if downsampling == 4 else f"-down{downsampling}"
    losses = "" if perceptual == adversarial == 0 else f"-perc{perceptual}-adv{adversarial}"
    losses += f"-lowpass{lowpass}" if lowpass else ""
    losses += f"-chroma{chroma}" if chroma else ""
    losses += f"-vivid{vivid}" if vivid else ""
    losses += f"-kl{kl:g}" if kl != 1e-6 else ""
    losses += f"-noise{latent_noise}" if latent_noise else ""
    path = out / f"vae-c{channels}{finer}-styled{styled}-steps{steps}{losses}.safetensors"
    vae = build_micro_vae(channels, downsampling)
    if path.is_file():
        vae.load_state_dict(load_file(path))
    else:
        mix = StyleMix(styled_named=styled, styled_unnamed=StyleMix().styled_unnamed)
        vae, _ = train_micro_vae(steps=steps, mix=mix, latent_channels=channels, downsampling=downsampling,
                                 perceptual_weight=perceptual, adversarial_weight=adversarial, lowpass_weight=lowpass,
                                 chroma_weight=chroma, vivid_chroma_weight=vivid, kl_weight=kl,
                                 latent_noise=latent_noise)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, path)
    return vae.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", default="4,8,16", help="latent channels of each variant, comma-separated")
    parser.add_argument("--styled", type=float, default=0.5, help="share of renders styled (and named) in training")
    parser.add_argument("--steps", type=int, default=800, help="training steps (micro build uses 800)")
    parser.add_argument("--downsampling", type=int, choices=(2, 4), default=4,
                        help="4: 8x8 latents, as micro-base; 2: 16x16 latents")
    parser.add_argument("--perceptual", type=float, default=0.0,
                        help="weight of the random-feature perceptual loss (rpo_bench/micro/vae_losses.py)")
    parser.add_argument("--adversarial", type=float, default=0.0, help="weight of the patch discriminator's loss")
    parser.add_argument("--lowpass", type=float, default=0.0, help="weight of MSE on 4x4-pooled images")
    parser.add_argument("--chroma", type=float, default=0.0, help="weight of MSE on 2x2-pooled chroma (YIQ I, Q)")
    parser.add_argument("--vivid", type=float, default=0.0, help="weight of the vivid pixels' chroma error "
                        "(vae_losses.vivid_chroma_loss)")
    parser.add_argument("--kl", type=float, default=1e-6, help="weight of the posterior's KL term (v1: 1e-6, v2: 1e-5)")
    parser.add_argument("--latent-noise", type=float, default=0.0,
                        help="decode training latents with noise up to this share of their std (train_micro_vae)")
    parser.add_argument("--renders", type=int, default=128, help="renders per style to reconstruct")
    parser.add_argument("--out", type=Path, default=Path("vae-variants"), help="where trained variants are kept")
    args = parser.parse_args(argv)
    from diffusers import AutoencoderKL

    torch.set_num_threads(1)
    judge = MicroJudge.load()
    shipped = AutoencoderKL.from_pretrained(BASE_VAE, subfolder="vae").float().eval()
    rows = {"micro-base's VAE": reconstruction_table(shipped, judge, args.renders)}
    content = {"micro-base's VAE": content_table(shipped, judge, args.renders)}
    perturbed = {"micro-base's VAE": perturbed_table(shipped, judge, args.renders)}
    for channels in (int(c) for c in args.channels.split(",")):
        vae = variant(args.out, channels, args.styled, args.steps, args.downsampling, args.perceptual,
                      args.adversarial, args.lowpass, args.chroma, args.vivid, args.kl, args.latent_noise)
        side = 32 // args.downsampling
        losses = "" if args.perceptual == args.adversarial == 0 else (
            f", perceptual {args.perceptual:g}, adversarial {args.adversarial:g}")
        losses += f", low-pass {args.lowpass:g}" if args.lowpass else ""
        losses += f", chroma {args.chroma:g}" if args.chroma else ""
        losses += f", vivid chroma {args.vivid:g}" if args.vivid else ""
        losses += f", KL {args.kl:g}" if args.kl != 1e-6 else ""
        losses += f", latent noise {args.latent_noise:g}" if args.latent_noise else ""
        name = f"{side}x{side}x{channels} latents, {args.styled:.0%} styled, {args.steps} steps{losses}"
        rows[name] = reconstruction_table(vae, judge, args.renders)
        content[name] = content_table(vae, judge, args.renders)
        perturbed[name] = perturbed_table(vae, judge, args.renders)
    print("| VAE | " + " | ".join(STYLES) + " |")
    print("|---|" + "---|" * len(STYLES))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[s]:.3f}" for s in STYLES) + " |")
    print("\nLowest content accuracy on reconstructions (attribute):\n")
    print("| VAE | " + " | ".join(STYLES) + " |")
    print("|---|" + "---|" * len(STYLES))
    for name, row in content.items():
        print(f"| {name} | " + " | ".join(row[s] for s in STYLES) + " |")
    print("\nPlain renders decoded from latents plus noise (share of the latents' std): background noise in 8-bit "
          "levels / lowest content accuracy:\n")
    print("| VAE | " + " | ".join(f"noise {share:g}" for share in PERTURBATIONS) + " |")
    print("|---|" + "---|" * len(PERTURBATIONS))
    for name, row in perturbed.items():
        print(f"| {name} | " + " | ".join(f"{row[s][0]:.1f} / {row[s][1]:.3f}" for s in PERTURBATIONS) + " |")


if __name__ == "__main__":
    main()
