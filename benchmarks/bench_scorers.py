"""Throughput of the preference scorers, and what our wrapper costs on top of the model's forward.

For each of hpsv2, pickscore, imagereward and aesthetic, on its tiny variant (the official code path and file
layout at tiny size): images/s scoring 16 images one at a time (batch 1) and in one batch of 16, alternated.
Then `wrapper / raw forward` (target <= 1.2): `metric.score(images, prompts)` (preprocessing, tokenising,
forward, conversion to floats) against `metric.forward(**inputs)` on inputs prepared beforehand, alternated,
ratio of medians. At tiny size the forward costs almost nothing, so that ratio is dominated by resizing
512 px images and is printed for information; the target applies at the FULL architecture size (ViT-H-14 for
HPS and PickScore, BLIP ViT-L + BERT-base for ImageReward, CLIP ViT-L/14 for aesthetic), measured with random
full-size weights swapped into the loaded metric (`--full-batch` images; skip with `--skip-full`).

One torch thread by default (see bench_train_step.py for why on a shared 2-core box).

    .venv/bin/python benchmarks/bench_scorers.py [--repeats 5] [--threads 1] [--full-batch 2] [--skip-full]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

HOME = Path(tempfile.mkdtemp(prefix="rpo-bench-bench-"))
os.environ["RPO_BENCH_HOME"] = str(HOME)  # before importing rpo_bench: tiny scorers build in the temp home
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from rpo_bench.metrics import make_metric  # noqa: E402

SCORERS = ("hpsv2", "pickscore", "imagereward", "aesthetic")
TARGET = 1.2
PROMPT = "a watercolor painting of a red fox in a snowy forest"


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)) for _ in range(n)]


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _alternate(calls: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each call, the calls alternated so a slow phase of the machine hits all of them."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call()  # warm-up
    for _ in range(repeats):
        for name, call in calls.items():
            times[name].append(_timed(call))
    return {name: statistics.median(values) for name, values in times.items()}


def _full_size_model(scorer: str):
    """The scorer's full architecture with random weights, in the module layout its metric's forward uses."""
    from rpo_bench.metrics.mlp_head import PreferenceMLP

    if scorer == "hpsv2":
        import open_clip

        return open_clip.model.CLIP(**open_clip.get_model_config("ViT-H-14"))
    if scorer == "pickscore":
        from transformers import CLIPConfig, CLIPModel

        text = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                "projection_dim": 1024, "hidden_act": "gelu"}
        vision = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16,
                  "patch_size": 14, "image_size": 224, "projection_dim": 1024, "hidden_act": "gelu"}
        return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=1024))
    if scorer == "imagereward":
        from transformers import BlipTextModel, BlipVisionConfig, BlipVisionModel

        from rpo_bench.metrics.blip_convert import text_config_from_med

        med = {"vocab_size": 30524, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
               "num_attention_heads": 12, "max_position_embeddings": 512}
        vision = BlipVisionModel(BlipVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                                  num_attention_heads=16, image_size=224, patch_size=16,
                                                  layer_norm_eps=1e-6))
        text = BlipTextModel(text_config_from_med(med, 1024), add_pooling_layer=False)
        return torch.nn.ModuleDict({"vision": vision, "text": text, "mlp": PreferenceMLP(768)})
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=1024, intermediate_size=4096,
                                                          num_hidden_layers=24, num_attention_heads=16, patch_size=14,
                                                          image_size=224, projection_dim=768))
    return torch.nn.ModuleDict({"clip": clip, "head": PreferenceMLP(768)})


def measure(scorer: str, repeats: int, full_batch: int | None) -> None:
    metric = make_metric(f"tiny-{scorer}")
    metric.load("cpu", torch.float32)
    images, prompts = _images(16), [PROMPT] * 16
    medians = _alternate({
        "batch 1": lambda: [metric.score([image], [PROMPT]) for image in images],
        "batch 16": lambda: metric.score(images, prompts),
    }, repeats)
    per_second = {name: 16 / seconds for name, seconds in medians.items()}
    inputs = metric.prepare(images, prompts)
    overhead = _alternate({"wrapper": lambda: metric.score(images, prompts),
                           "raw": lambda: torch.inference_mode()(metric.forward)(**inputs)}, repeats)
    print(f"{scorer:12s} tiny: {per_second['batch 1']:8.1f} images/s at batch 1, {per_second['batch 16']:8.1f} at "
          f"batch 16 ({per_second['batch 16'] / per_second['batch 1']:.1f}x); wrapper / raw forward = "
          f"{overhead['wrapper'] / overhead['raw']:.2f} (tiny: preprocessing-bound, information only)")
    if full_batch:
        metric.model = _full_size_model(scorer).eval()
        batch_images, batch_prompts = images[:full_batch], prompts[:full_batch]
        inputs = metric.prepare(batch_images, batch_prompts)
        full = _alternate({"wrapper": lambda: metric.score(batch_images, batch_prompts),
                           "raw": lambda: torch.inference_mode()(metric.forward)(**inputs)}, max(2, repeats // 2))
        ratio = full["wrapper"] / full["raw"]
        verdict = "ok" if ratio <= TARGET else "MISSED"
        print(f"{scorer:12s} full size, batch {full_batch}: wrapper {full['wrapper']:.2f} s, raw forward "
              f"{full['raw']:.2f} s: wrapper / raw forward = {ratio:.3f} (target <= {TARGET}) {verdict}")
    metric.unload()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 0: torch's default")
    parser.add_argument("--full-batch", type=int, default=2, help="images per full-size measurement")
    parser.add_argument("--skip-full", action="store_true", help="tiny variants only")
    parser.add_argument("--only", default=",".join(SCORERS), help="comma-separated subset of " + ",".join(SCORERS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); 16 random 512x512 images")
    for scorer in args.only.split(","):
        measure(scorer, args.repeats, None if args.skip_full else args.full_batch)


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(HOME, ignore_errors=True)
