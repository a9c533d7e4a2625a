"""Throughput of the preference scorers, and what our wrapper costs on top of the model's forward.

For each of hpsv2, pickscore, imagereward and aesthetic, on its tiny variant (the official code path and file
layout at tiny size): images/s scoring 16 images one at a time (batch 1) and in one batch of 16, alternated.
Then `wrapper / raw forward` (target <= 1.2): `metric.score(images, prompts)` (preprocessing, tokenising,
forward, conversion to floats) against `metric.forward(**inputs)` on inputs prepared beforehand, alternated,
ratio of medians. At tiny size the forward costs almost nothing, so that ratio is dominated by resizing
512 px images and is printed for information; the target applies at the FULL architecture size (ViT-H-14 for
HPS and PickScore, BLIP ViT-L + BERT-base for ImageReward, CLIP ViT-L/14 for aesthetic), measured with random
full-size weights swapped into the loaded metric (`--full-batch` images; skip with `--skip-full`).

One torch thread by default (see bench_train_step.py for why on a shared 2-core box). With `--device cuda` the
scorers run in fp16 and the full-size measurement takes a batch of 16 (its images/s is the GPU throughput).

    .venv/bin/python benchmarks/bench_scorers.py [--repeats 5] [--threads 1] [--full-batch 2 (cuda: 16)]
        [--skip-full] [--only hpsv2,...] [--device cpu|cuda] [--json FILE]
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HOME = Path(tempfile.mkdtemp(prefix="rpo-bench-bench-"))
atexit.register(shutil.rmtree, HOME, ignore_errors=True)  # also when an import below fails
os.environ["RPO_BENCH_HOME"] = str(HOME)  # before importing rpo_bench: tiny scorers build in the temp home
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.common` when run as a file
from benchmarks.common import add_common_options, build_on, dtype_for, positive, row, run_script  # noqa: E402
from benchmarks.common import synchronize as _sync  # noqa: E402
from rpo_bench.core.errors import BadInputError  # noqa: E402
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


def _full_size_on(scorer: str, device: str, dtype):
    """The full-size random model built on the device in its dtype; the heads stay float32 as load() keeps them."""
    model = build_on(device, dtype, lambda: _full_size_model(scorer))
    for head in ("mlp", "head"):
        if isinstance(model, torch.nn.ModuleDict) and head in model:
            model[head].float()
    return model.eval()


def measure(scorer: str, repeats: int, full_batch: int | None, device: str) -> list[dict]:
    dtype = dtype_for(device)
    metric = make_metric(f"tiny-{scorer}")
    metric.load(device, dtype)
    images, prompts = _images(16), [PROMPT] * 16

    def raw_forward(inputs: dict) -> None:
        torch.inference_mode()(metric.forward)(**inputs)
        _sync(device)  # score() returns floats (a sync); the raw forward must wait for the GPU too

    medians = _alternate({
        "batch 1": lambda: [metric.score([image], [PROMPT]) for image in images],
        "batch 16": lambda: metric.score(images, prompts),
    }, repeats)
    per_second = {name: 16 / seconds for name, seconds in medians.items()}
    inputs = metric.prepare(images, prompts)
    overhead = _alternate({"wrapper": lambda: metric.score(images, prompts),
                           "raw": lambda: raw_forward(inputs)}, repeats)
    tiny_ratio = overhead["wrapper"] / overhead["raw"]
    print(f"{scorer:12s} tiny: {per_second['batch 1']:8.1f} images/s at batch 1, {per_second['batch 16']:8.1f} at "
          f"batch 16 ({per_second['batch 16'] / per_second['batch 1']:.1f}x); wrapper / raw forward = "
          f"{tiny_ratio:.2f} (tiny: preprocessing-bound, information only)")
    rows = [row(f"scorer {scorer} tiny, batch 16", per_second["batch 16"], "images/s",
                batch_1_images_per_s=per_second["batch 1"], wrapper_over_raw=tiny_ratio, device=device)]
    if full_batch:
        start = time.perf_counter()
        metric.model = _full_size_on(scorer, device, dtype)
        params = sum(p.numel() for p in metric.model.parameters())
        print(f"{scorer:12s} full size: {params / 1e6:.0f}M parameters, built in {time.perf_counter() - start:.1f} s "
              "(excluded)")
        batch_images = (images * (full_batch // len(images) + 1))[:full_batch]
        batch_prompts = [PROMPT] * full_batch
        inputs = metric.prepare(batch_images, batch_prompts)
        full = _alternate({"wrapper": lambda: metric.score(batch_images, batch_prompts),
                           "raw": lambda: raw_forward(inputs)}, max(2, repeats // 2))
        ratio = full["wrapper"] / full["raw"]
        verdict = "ok" if ratio <= TARGET else "MISSED"
        print(f"{scorer:12s} full size, batch {full_batch}: wrapper {full['wrapper']:.2f} s, raw forward "
              f"{full['raw']:.2f} s: wrapper / raw forward = {ratio:.3f} (target <= {TARGET}) {verdict}")
        label = f"scorer {scorer} full size {str(dtype).removeprefix('torch.')}, batch {full_batch}"
        rows += [row(label, full_batch / full["wrapper"], "images/s", parameters=params),
                 row(f"{label}: wrapper / raw forward", ratio, "ratio", ratio, f"<= {TARGET}",
                     wrapper_s=full["wrapper"], raw_s=full["raw"])]
    metric.unload()
    metric.model = None
    return rows


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 0: torch's default")
    parser.add_argument("--full-batch", type=int, default=None,
                        help="images per full-size measurement (default 2 on cpu, 16 on cuda)")
    parser.add_argument("--skip-full", action="store_true", help="tiny variants only")
    parser.add_argument("--only", default=",".join(SCORERS), help="comma-separated subset of " + ",".join(SCORERS))
    add_common_options(parser)
    return parser


def main(args: argparse.Namespace) -> list[dict]:
    repeats = positive("--repeats", args.repeats)
    scorers = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in scorers if name not in SCORERS]
    if unknown or not scorers:
        raise BadInputError(f"--only {args.only!r}: unknown scorer {', '.join(unknown) or '(none given)'}; "
                            f"accepted: {', '.join(SCORERS)}")
    full_batch = None if args.skip_full else positive(
        "--full-batch", args.full_batch or (16 if args.device == "cuda" else 2))
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} thread(s); "
          "16 random 512x512 images")
    rows = []
    for scorer in scorers:
        rows += measure(scorer, repeats, full_batch, args.device)
    return rows


if __name__ == "__main__":
    try:
        raise SystemExit(run_script(main, parser()))
    finally:
        shutil.rmtree(HOME, ignore_errors=True)
