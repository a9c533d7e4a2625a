"""What finer latents would cost the micro world: a micro UNet training step on 16x16 latents against today's 8x8.

Three 16x16 designs: today's UNet as it is, one with a third, attention-free level on top, so that attention
still runs at 8x8 and 4x4 only, and world v2's (the same with a wider middle level). Steps are timed alternately,
side by side, and the ratios printed.

    python experiments/micro_unet_cost.py [--batch 32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.common` when run as a file
from benchmarks.common import unet_step_seconds  # noqa: E402
from rpo_bench.micro.unet_train import build_micro_unet  # noqa: E402


def three_level_unet(cross_attention_dim: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of 5 steps each; medians reported")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    designs = {"today's UNet, 8x8 latents": (build_micro_unet(64), 8),
               "today's UNet, 16x16 latents": (build_micro_unet(64), 16),
               "three levels, 16x16 latents": (three_level_unet(64), 16),
               "world v2's UNet (three levels, widths 32/64/64), 16x16": (build_micro_unet(64, levels=3), 16)}
    for unet, side in designs.values():
        unet_step_seconds(unet, side, args.batch, steps=2)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in designs}
    for _ in range(args.rounds):
        for name, (unet, side) in designs.items():
            times[name].append(unet_step_seconds(unet, side, args.batch, steps=5))
    base = statistics.median(times["today's UNet, 8x8 latents"])
    print(f"| design (batch {args.batch}, one thread) | parameters | s per training step | ratio to today's |")
    print("|---|---|---|---|")
    for name, (unet, _) in designs.items():
        median = statistics.median(times[name])
        print(f"| {name} | {sum(p.numel() for p in unet.parameters()):,} | {median:.3f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
