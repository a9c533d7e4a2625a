"""Variants of a world's base UNet on that world's own judge, CLIP and VAE: what caption noise, the EMA warm-up
and the step count do to micro-base, measured by `micro check`'s card.

A build's UNet stage is most of its time (about 75 minutes on one core), so a variant starts from a build that
has finished its VAE stage and trains only the base: the judge and CLIP are linked, the VAE copied (a finished
build removes its own VAE folder), and `micro build`'s own code runs the stage with the changed recipe, which the
variant's build.json records.

    python experiments/micro_unet_variants.py --world-dir WORLD --out VARIANT --caption-noise 0.3
    rpo-bench micro check --world-dir VARIANT --seed 0 --n 64 --json > variant-card.json
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

from rpo_bench.micro.build import build_micro
from rpo_bench.micro.world import world_recipe


def prepare(world_dir: Path, out: Path) -> dict:
    """`out` holding `world_dir`'s judge and CLIP (linked) and VAE (copied); returns the world's build.json."""
    vae = world_dir / "micro-vae"
    if not vae.is_dir():
        raise SystemExit(f"{vae}: missing; a variant needs a build stopped after its VAE stage (or copy that "
                         "stage's folder there)")
    report = json.loads((world_dir / "build.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    for name in ("judge.safetensors", "judge.json", "micro-clip"):
        if not (out / name).exists():
            (out / name).symlink_to((world_dir / name).resolve())
    if not (out / "micro-vae").exists() and not (out / "micro-base").exists():
        shutil.copytree(vae, out / "micro-vae")
    if not (out / "build.json").exists():
        kept = {k: report[k] for k in ("world", "judge", "micro-clip", "micro-vae") if k in report}
        (out / "build.json").write_text(json.dumps(kept, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-dir", type=Path, required=True, help="a `micro build --out` folder with micro-vae")
    parser.add_argument("--out", type=Path, required=True, help="the variant's world folder")
    parser.add_argument("--caption-noise", type=float, help="the recipe's unet_caption_noise unless given")
    parser.add_argument("--ema-warmup", choices=("on", "off"), help="the recipe's unet_ema_warmup unless given")
    parser.add_argument("--unet-steps", type=int, help="the recipe's unet_steps unless given")
    parser.add_argument("--unet-pool", type=int, default=40000, help="latents encoded for the UNet (the build's)")
    args = parser.parse_args(argv)
    report = prepare(args.world_dir, args.out)
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
