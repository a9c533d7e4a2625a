"""Variants of a world's base UNet on that world's own judge, CLIP and VAE: what caption noise, the EMA warm-up
and the step count do to micro-base, measured by `micro check`'s card.

A build's UNet stage is most of its time (about 75 minutes on one core), so a variant starts from a build that
has finished its VAE stage and trains only the base: the judge and CLIP are linked, the VAE copied (a finished
build removes its own VAE folder), and `micro build`'s own code runs the stage with the changed recipe, which the
variant's build.json records.

    python experiments/micro_unet_variants.py --world-dir WORLD --out VARIANT --caption-noise 0.3
    rpo-bench micro check --world-dir VARIANT --seed 0 --n 64 --json > variant-card.json

`--vae FILE` puts another VAE of the same shape in the build's place: a state dict that
experiments/micro_vae_styles.py saved, its scaling factor calibrated as the build's VAE stage does.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

from rpo_bench.micro.build import build_micro
from rpo_bench.micro.world import world_recipe


def prepare(world_dir: Path, out: Path, vae_weights: Path | None = None) -> dict:
    """`out` holding `world_dir`'s judge and CLIP (linked) and VAE (copied, or its weights replaced by
    `vae_weights`); returns the world's build.json."""
    vae = world_dir / "micro-vae"
    if not vae.is_dir():
        raise SystemExit(f"{vae}: missing; a variant needs a build stopped after its VAE stage (or copy that "
                         "stage's folder there)")
    report = json.loads((world_dir / "build.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    for name in ("judge.safetensors", "judge.json", "micro-clip"):
        if not (out / name).exists():
            (out / name).symlink_to((world_dir / name).resolve())
    replaced = None
    if not (out / "micro-vae").exists() and not (out / "micro-base").exists():
        if vae_weights is None:
            shutil.copytree(vae, out / "micro-vae")
        else:
            replaced = _replace_vae(vae, vae_weights, out / "micro-vae", report)
    if not (out / "build.json").exists():
        kept = {k: report[k] for k in ("world", "judge", "micro-clip", "micro-vae") if k in report}
        if replaced is not None:
            kept["micro-vae"] = replaced
        (out / "build.json").write_text(json.dumps(kept, indent=2) + "\n")
    return report


def _replace_vae(vae: Path, weights: Path, target: Path, report: dict) -> dict:
    from diffusers import AutoencoderKL  # noqa: PLC0415 - diffusers loads in seconds: only for --vae
    from safetensors.torch import load_file  # noqa: PLC0415 - only for --vae

    from rpo_bench.micro.vae_train import calibrate  # noqa: PLC0415 - loads torch: only for --vae

    model = AutoencoderKL.from_pretrained(vae).eval()
    model.load_state_dict(load_file(weights))
    recipe = world_recipe(report.get("world", 1))
    calibration = calibrate(model, report.get("settings", {}).get("seed", 0), recipe.vae_mix)
    # atomic: a variant's folder is an experiment's scratch; a half-written one is deleted and made again
    model.save_pretrained(target)
    return {"weights": weights.name, **calibration}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-dir", type=Path, required=True, help="a `micro build --out` folder with micro-vae")
    parser.add_argument("--out", type=Path, required=True, help="the variant's world folder")
    parser.add_argument("--vae", type=Path, help="VAE weights (experiments/micro_vae_styles.py) to use instead")
    parser.add_argument("--caption-noise", type=float, help="the recipe's unet_caption_noise unless given")
    parser.add_argument("--ema-warmup", choices=("on", "off"), help="the recipe's unet_ema_warmup unless given")
    parser.add_argument("--unet-steps", type=int, help="the recipe's unet_steps unless given")
    parser.add_argument("--unet-pool", type=int, default=40000, help="latents encoded for the UNet (the build's)")
    args = parser.parse_args(argv)
    report = prepare(args.world_dir, args.out, args.vae)
    recipe = world_recipe(report.get("world", 1))
    if args.caption_noise is not None:
        recipe = replace(recipe, unet_caption_noise=args.caption_noise)
    if args.ema_warmup is not None:
        recipe = replace(recipe, unet_ema_warmup=args.ema_warmup == "on")
    settings = report.get("settings", {})
    result = build_micro(args.out, seed=settings.get("seed", 0), unet_steps=args.unet_steps, world=recipe.version,
                         unet_pool=args.unet_pool, recipe=recipe)
    print(json.dumps({"recipe": result["recipe"], "micro-base": result.get("micro-base")}, indent=2))


if __name__ == "__main__":
    main()
