"""Can a linear probe on a micro CLIP's image embedding read the judge's "in style" call on partly styled images?

A style-trained model draws partial styles, and `style-prob` (a logistic probe on the micro CLIP's embedding) must
agree with the judge on them (E7 measured 87.7% for sketch and 90.1% for vangogh with world v1's CLIP). This renders
fresh scenes blended with their own style render at strengths uniform in [0, 1] (what a partly aligned model
draws), takes the judge's call (style probability above one half), and prints per style the cross-validated
agreement of a logistic probe fitted on the judge's calls (5 folds over scenes), for world v1's shipped CLIP and for
a CLIP trained with a given mix (world v2's by default: style-rich captions with partial and mixed styles).

    python experiments/micro_clip_partial_styles.py --out clip-v2 [--steps 2000] [--n 400]

Training the CLIP takes about 7 minutes on one core; it is saved in --out and reused.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from rpo_bench.micro.clip_train import clip_pixels, train_micro_clip
from rpo_bench.micro.judge import TRAIN_SEED_FLOOR, MicroJudge
from rpo_bench.micro.render import render_batch
from rpo_bench.micro.scenes import STYLES, sample_scenes
from rpo_bench.micro.world import WORLDS
from rpo_bench.workflows.probe_ceiling import cross_validated_agreement

SHIPPED_CLIP = Path(__file__).resolve().parents[1] / "rpo_bench" / "micro" / "assets" / "micro-clip"


def partial_renders(style: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n renders blended with their plain render at strengths uniform in [0, 1], and each one's scene index."""
    rng = np.random.default_rng(seed)
    scenes = sample_scenes(rng, n, styles=("plain",))
    seeds = rng.integers(0, TRAIN_SEED_FLOOR, size=n).tolist()
    plain = render_batch(scenes, seeds).astype(np.float32)
    styled = render_batch([replace(s, style=style) for s in scenes], seeds).astype(np.float32)
    strength = rng.uniform(0, 1, size=(n, 1, 1, 1)).astype(np.float32)
    blended = np.clip(np.rint(plain + strength * (styled - plain)), 0, 255).astype(np.uint8)
    return blended, np.arange(n)


@torch.no_grad()
def embeddings(clip, images: np.ndarray) -> np.ndarray:
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    out = clip.visual_projection(clip.vision_model(pixel_values=clip_pixels(pixels)).pooler_output)
    return torch.nn.functional.normalize(out, dim=-1).double().numpy()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("clip-v2"), help="where the trained CLIP is kept")
    parser.add_argument("--steps", type=int, default=WORLDS[2].clip_steps)
    parser.add_argument("--n", type=int, default=400, help="partly styled renders per style")
    parser.add_argument("--partial", type=float, default=WORLDS[2].clip_mix.partial,
                        help="share of partial and mixed renders in the CLIP's mix")
    args = parser.parse_args(argv)
    from transformers import CLIPModel

    torch.set_num_threads(1)
    if not (args.out / "config.json").is_file():
        print(train_micro_clip(args.out, steps=args.steps, mix=replace(WORLDS[2].clip_mix, partial=args.partial)))
    judge = MicroJudge.load()
    trained = f"v2 mix ({args.partial:.0%} partial), {args.steps} steps"
    clips = {"world v1's CLIP (shipped)": CLIPModel.from_pretrained(SHIPPED_CLIP, dtype=torch.float32).eval(),
             trained: CLIPModel.from_pretrained(args.out, dtype=torch.float32).eval()}
    styled = [s for s in STYLES if s != "plain"]
    print("| CLIP | " + " | ".join(styled) + " |")
    print("|---|" + "---|" * len(styled))
    data = {s: partial_renders(s, args.n, seed=900 + i) for i, s in enumerate(styled)}
    calls = {s: np.array(judge.style_probability(data[s][0], s)) > 0.5 for s in styled}
    for name, clip in clips.items():
        cells = []
        for style in styled:
            images, scenes = data[style]
            agreement = cross_validated_agreement(embeddings(clip, images), calls[style], scenes % 5)
            cells.append(f"{agreement:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("judged in style: " + ", ".join(f"{s} {calls[s].mean():.2f}" for s in styled))


if __name__ == "__main__":
    main()
