"""The unpaired view of preference data, for a method that learns from single images labelled desirable or
undesirable (Diffusion-KTO): which images, their labels, and the class-balanced draw of each micro-batch.

Labels come from the pairs (an image that wins any pair is desirable, one that only loses is undesirable: the
official Diffusion-KTO default) or from a per-image utility with a threshold (the `score_0` / `score_1` columns:
the micro world's judge writes its utility there, a labelled set writes 0 / 1). An image is one item however many
pairs it appears in (by the hash of its bytes). Only the training pairs are read: the held-out prompts stay unseen.

Like the pairs' draws, everything is a function of (seed, micro-step, position in the global batch), so a resumed
run replays the same images, noise and timesteps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from rpo_bench.core.digest import digest
from rpo_bench.core.errors import BadInputError
from rpo_bench.training.batches import PairRandomness, draw_randomness, stream_slice

LABEL_SOURCES = ("pairs", "utility")
# The image streams' own sequences: the pairs' epoch permutations use -1, the held-out draws -2.
DESIRABLE_STREAM, UNDESIRABLE_STREAM = -3, -4


@dataclass(frozen=True)
class SingleImage:
    pair: int  # index of a pair holding it, in the preference data
    side: int  # 0: that pair's winner, 1: its loser
    desirable: bool


@dataclass
class UnpairedBatch:
    items: list[SingleImage]
    captions: list[str]
    images: list[Image.Image]
    randomness: PairRandomness  # one draw per image: its own timestep, noise and caption dropout


class SingleImages:
    """Every distinct image of the given pairs, labelled."""

    def __init__(self, data, pair_indices: Sequence[int], labels: str, threshold: float):
        if labels not in LABEL_SOURCES:
            raise BadInputError(f"--kto-labels {labels!r}; accepted: {', '.join(LABEL_SOURCES)}")
        self.data = data
        seen: dict[str, SingleImage] = {}
        winners = {data.image_ids[i][0] for i in pair_indices}
        for i in pair_indices:
            for side in (0, 1):
                image_id = data.image_ids[i][side]
                if image_id in seen:
                    continue
                if labels == "pairs":
                    desirable = image_id in winners
                else:
                    desirable = _utility(data, i, side) >= threshold
                seen[image_id] = SingleImage(i, side, desirable)
        self.desirable = [item for item in seen.values() if item.desirable]
        self.undesirable = [item for item in seen.values() if not item.desirable]
        if not self.desirable or not self.undesirable:
            how = "by the pairs" if labels == "pairs" else f"by utility >= --kto-threshold {threshold:g}"
            raise BadInputError(f"{data.source}: labelled {how}, its {len(seen)} training images are "
                                f"{len(self.desirable)} desirable and {len(self.undesirable)} undesirable; kto needs "
                                "both (accepted: a threshold between the lowest and the highest utility, or "
                                "--kto-labels pairs)")

    def fingerprint(self) -> str:
        """The labels, as a digest: the same data labelled otherwise (another utility column) gives another one."""
        labelled = sorted((self.data.image_ids[item.pair][item.side], item.desirable)
                          for item in (*self.desirable, *self.undesirable))
        return digest(labelled, 16)

    def batch(self, seed: int, micro_step: int, positions: Sequence[int], global_batch: int, ratio: float,
              latent_shape: tuple[int, int, int], num_train_timesteps: int,
              caption_dropout: float) -> UnpairedBatch:
        """The images at `positions` (this process's slice) of global micro-batch `micro_step`: desirable ones at
        the positions class_layout marks, taken in turn from an endless shuffled stream of each class."""
        layout = class_layout(global_batch, ratio)
        per_batch = sum(layout)
        items = []
        for position in positions:
            desirable = layout[position]
            before = sum(1 for p in range(position) if layout[p] == desirable)
            taken = per_batch if desirable else global_batch - per_batch
            pool = self.desirable if desirable else self.undesirable
            index = stream_slice(len(pool), seed, micro_step * taken + before, 1,
                                 DESIRABLE_STREAM if desirable else UNDESIRABLE_STREAM)[0]
            items.append(pool[index])
        randomness = draw_randomness(seed, micro_step, list(positions), latent_shape, num_train_timesteps,
                                     caption_dropout, "pair")
        return UnpairedBatch(items, [self.data.captions[item.pair] for item in items],
                             [self.data.image(item.pair, item.side) for item in items], randomness)


def class_layout(global_batch: int, ratio: float) -> list[bool]:
    """Which positions of a global micro-batch hold a desirable image: round(ratio * batch) of them (at least one
    of each class when the batch has two places), spread evenly so that every process's slice is balanced."""
    wanted = round(ratio * global_batch)
    if global_batch >= 2:
        wanted = min(max(wanted, 1), global_batch - 1)
    share = wanted / global_batch
    return [math.floor((p + 1) * share + 1e-9) - math.floor(p * share + 1e-9) == 1 for p in range(global_batch)]


def _utility(data, pair: int, side: int) -> float:
    value = data.scores[pair][side]
    if value is None:
        raise BadInputError(f"{data.source}: --kto-labels utility labels each image by its utility, and pair "
                            f"{data.sample_ids[pair][:12]} has none for its {('winner', 'loser')[side]}; "
                            "accepted: data with score_0 and score_1 on every row (micro-pickapic has the judge's), "
                            "or --kto-labels pairs")
    return value
