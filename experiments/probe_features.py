"""Which CLIP features could a linear style probe agree with the micro judge on? Probe and ceiling per feature set.

For the images of a `micro compare --style` store, and for each feature set of a micro CLIP's vision tower, this
prints two agreements with the judge's "in style" call (probability above one half): the probe fitted as
`style-prob` is (references against micro-base's images of their captions), and the ceiling (a probe fitted on the
judge's own calls, scored on prompts it did not see; rpo_bench/workflows/probe_ceiling.py).

    python experiments/probe_features.py --store runs/style-micro-sketch/results.sqlite --style micro-sketch
    python experiments/probe_features.py ... --clip clip-styled --train-clip 0.5   # a CLIP with more style captions
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from rpo_bench.workflows.probe_ceiling import cross_validated_agreement, judged_images, prompt_folds

MICRO_CLIP = Path(__file__).resolve().parents[1] / "rpo_bench" / "micro" / "assets" / "micro-clip"


def feature_sets(model, images) -> dict[str, np.ndarray]:
    """The projected embedding (what style-prob reads), per-layer statistics of the patch tokens, and pixels."""
    from rpo_bench.micro.clip_train import clip_pixels

    array = np.stack([np.asarray(image.convert("RGB").resize((32, 32), 4)) for image in images])  # 4: box filter
    pixels = torch.from_numpy(array).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    with torch.no_grad():
        out = model.vision_model(pixel_values=clip_pixels(pixels), output_hidden_states=True)
        embedding = torch.nn.functional.normalize(model.visual_projection(out.pooler_output), dim=-1)
    tokens = [h[:, 1:] for h in out.hidden_states]  # without the class token
    return {"projected embedding": embedding.numpy(),
            "patch-token means, every layer": torch.cat([t.mean(1) for t in tokens], 1).numpy(),
            "patch-token means and stds, every layer": torch.cat([torch.cat([t.mean(1), t.std(1)], 1)
                                                                  for t in tokens], 1).numpy(),
            "patch-token means and stds, first two layers": torch.cat([torch.cat([t.mean(1), t.std(1)], 1)
                                                                       for t in tokens[:2]], 1).numpy(),
            "raw pixels": pixels.flatten(1).numpy()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="results.sqlite of a micro compare --style")
    parser.add_argument("--style", default="micro-sketch")
    parser.add_argument("--image-cache", type=Path, default=None, help="default: the rpo-bench home's")
    parser.add_argument("--clip", type=Path, default=MICRO_CLIP, help="a micro CLIP folder")
    parser.add_argument("--train-clip", type=float, default=None, metavar="STYLED",
                        help="train a CLIP into --clip first (when missing), with this share of style-named captions")
    args = parser.parse_args(argv)
    from transformers import CLIPModel

    from rpo_bench.core.config import default_image_cache
    from rpo_bench.evaluation.image_cache import ImageCache
    from rpo_bench.style.probe import fit_logistic, probabilities
    from rpo_bench.style.registry import get_style, reference_images
    from rpo_bench.training.style_pairs import base_images_for_references

    torch.set_num_threads(1)
    if args.train_clip is not None and not (args.clip / "config.json").is_file():
        from rpo_bench.micro.clip_train import train_micro_clip
        from rpo_bench.micro.training_data import StyleMix

        train_micro_clip(args.clip, mix=StyleMix(styled_named=args.train_clip))
    style = get_style(args.style)
    judge = f"micro-style:{style.micro}"
    rows = judged_images(args.store, judge)
    cache = ImageCache(args.image_cache or default_image_cache())
    try:
        generated = [cache.open(sha) for sha, _, _ in rows]
    finally:
        cache.close()
    in_style = np.array([value > 0.5 for _, _, value in rows])
    folds = prompt_folds([prompt for _, prompt, _ in rows])
    model = CLIPModel.from_pretrained(args.clip, dtype=torch.float32).eval()
    negatives = [image for images in base_images_for_references(style, 1, show_progress=False) for image in images]
    references = [reference.image for reference in reference_images(style)]
    g, p, n = feature_sets(model, generated), feature_sets(model, references), feature_sets(model, negatives)
    print(f"{len(rows)} images, {in_style.mean():.1%} in style by {judge}; always answering the majority call agrees "
          f"on {max(in_style.mean(), 1 - in_style.mean()):.3f}")
    print("| features | dimension | probe (references vs base images) | ceiling (judge's calls, 5 folds) |")
    print("|---|---|---|---|")
    for name in g:
        weights, bias, _ = fit_logistic(np.concatenate([p[name], n[name]]),
                                        np.r_[np.ones(len(p[name])), np.zeros(len(n[name]))])
        probe = np.mean((probabilities(weights, bias, g[name]) > 0.5) == in_style)
        ceiling = cross_validated_agreement(g[name], in_style, folds)
        print(f"| {name} | {g[name].shape[1]} | {probe:.3f} | {ceiling:.3f} |")


if __name__ == "__main__":
    main()
