"""Seed lists as users write them (`--seeds 0-3,10`), bounded before any list is built; light, so the command
line and the leaderboard read them without loading the generation code."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rpo_bench.core.errors import BadInputError

# Bounds that keep --seeds from building a list that exhausts memory: torch generators take any 64-bit seed,
# but numpy's and most published protocols' take 32 bits, and 100,000 images per prompt is beyond any benchmark.
MAX_SEED = 2**32 - 1
MAX_SEEDS = 100_000
SEEDS_ACCEPTED = (f"integers 0..{MAX_SEED} and ranges LOW-HIGH (LOW <= HIGH) separated by commas, e.g. 0,1,2 or "
                  f"0-3, at most {MAX_SEEDS:,} seeds in all")


def parse_seeds(text: str) -> list[int]:
    """"0,1,2" or inclusive ranges "0-3", or both: "0-3,10". Bounded before any list is built."""
    seeds: list[int] = []
    count = 0
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", part)
        if match is None:
            raise BadInputError(f"seed {part!r} in --seeds {text!r} is not a non-negative integer; accepted: "
                                f"{SEEDS_ACCEPTED}")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) else low
        if high < low or high > MAX_SEED:
            raise BadInputError(f"seed range {part!r} in --seeds {text!r}: accepted: {SEEDS_ACCEPTED}")
        count += high - low + 1
        if count > MAX_SEEDS:
            raise BadInputError(f"--seeds {text!r} names more than {MAX_SEEDS:,} seeds; accepted: {SEEDS_ACCEPTED}")
        seeds.extend(range(low, high + 1))
    return list(dict.fromkeys(seeds))


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """The same bounds for seeds given through the Python API."""
    if not seeds:
        raise BadInputError(f"no seeds given; accepted: {SEEDS_ACCEPTED}")
    if len(seeds) > MAX_SEEDS:
        raise BadInputError(f"{len(seeds):,} seeds given; accepted: {SEEDS_ACCEPTED}")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise BadInputError(f"seed {seed!r}: accepted: {SEEDS_ACCEPTED}")
    return list(dict.fromkeys(seeds))
