"""Power before claims: how large a difference a comparison of training runs can detect, and how many training
seeds it needs to detect a given one.

A comparison's interval (rpo_bench.evaluation.stats) resamples prompts; it holds the training runs fixed. A
second training seed of the same method lands somewhere else, so whether "RPO beats DPO" would hold for other
seeds depends on two spreads:
- between training seeds: the standard deviation of a run's mean score (all runs scored on the same prompts and
  evaluation seeds, so this is the training seed's own effect), pooled over the compared methods;
- between prompts: the standard error of the seed-averaged difference from resampling prompts, read off its
  bootstrap interval. Averaging more seeds does not shrink it; more prompts would. Keeping it fixed while
  projecting to more seeds is conservative: per-prompt noise of a run averages out a little too.

A difference d is detected at power P (two-sided, level L) when d >= (t_{(1+L)/2} + t_P) * SE, with
SE^2 = sides * seed_sd^2 / n + prompt_se^2, n training seeds per method, t on the pooled seeds' degrees of
freedom (sides * (n - 1)), and sides 2 for two trained methods or 1 for a method against the untrained base,
which has no seed spread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_POWER = 0.8
DEFAULT_LEVEL = 0.95
MOST_SEEDS = 1000  # past this, a target is out of reach of more seeds: only more prompts help
HEADLINE_SEEDS = 5  # the fewest training seeds a headline leaderboard uses (SFT, DPO, RPO)


def _t(quantile: float, df: float) -> float:
    from scipy.stats import t  # noqa: PLC0415 - scipy loads slowly: only for statistics

    return float(t.ppf(quantile, df))


def _z(quantile: float) -> float:
    from scipy.stats import norm  # noqa: PLC0415 - scipy loads slowly: only for statistics

    return float(norm.ppf(quantile))


def multiplier(df: float, level: float = DEFAULT_LEVEL, power: float = DEFAULT_POWER) -> float:
    """t_{(1+level)/2} + t_power on df degrees of freedom; infinite when there is nothing to estimate a spread
    from (df < 1)."""
    if df < 1:
        return math.inf
    return _t((1 + level) / 2, df) + _t(power, df)


def minimum_detectable_difference(seed_sd: float, prompt_se: float, seeds: int, sides: int = 2,
                                  level: float = DEFAULT_LEVEL, power: float = DEFAULT_POWER) -> float:
    """The smallest true difference detected with probability `power` by `seeds` training seeds per method."""
    se = math.sqrt(sides * seed_sd**2 / seeds + prompt_se**2)
    return multiplier(sides * (seeds - 1), level, power) * se


def seeds_needed(seed_sd: float, prompt_se: float, difference: float, sides: int = 2,
                 level: float = DEFAULT_LEVEL, power: float = DEFAULT_POWER) -> int | None:
    """The fewest training seeds per method (at least 2) that detect `difference`; None when no number of seeds
    does, because the prompts' own spread alone hides it."""
    if difference <= 0:
        raise ValueError(f"difference {difference}: accepted: a positive number")
    if _z((1 + level) / 2) * prompt_se + _z(power) * prompt_se >= difference:
        return None  # even infinitely many seeds leave SE = prompt_se, which hides this difference
    for seeds in range(2, MOST_SEEDS + 1):
        if minimum_detectable_difference(seed_sd, prompt_se, seeds, sides, level, power) <= difference:
            return seeds
    return None


def prompts_needed(seed_sd: float, prompt_se: float, prompts: int, difference: float, seeds: int,
                   sides: int = 2, level: float = DEFAULT_LEVEL, power: float = DEFAULT_POWER) -> int | None:
    """The prompts (scaling the prompts' SE as 1 / sqrt(prompts) from `prompts` now) that detect `difference`
    with `seeds` training seeds per method; None when the seeds' own spread alone hides it."""
    room = (difference / multiplier(sides * (seeds - 1), level, power)) ** 2 - sides * seed_sd**2 / seeds
    if room <= 0:
        return None
    return max(1, math.ceil(prompts * prompt_se**2 / room))


def fewest_seeds(seed_sd: float, difference: float, sides: int = 2, level: float = DEFAULT_LEVEL,
                 power: float = DEFAULT_POWER) -> int | None:
    """The training seeds per method below which no number of prompts detects `difference` (the seeds' own spread
    hides it); None past MOST_SEEDS."""
    for seeds in range(2, MOST_SEEDS + 1):
        if prompts_needed(seed_sd, 1.0, 1, difference, seeds, sides, level, power) is not None:
            return seeds
    return None


def pooled_seed_sd(run_means: Mapping[str, Sequence[float]]) -> tuple[float, int]:
    """The standard deviation of a run's mean between training seeds, pooled over methods (each method's runs
    around its own mean), and its degrees of freedom."""
    squares, df = 0.0, 0
    for values in run_means.values():
        if len(values) < 2:
            continue
        mean = sum(values) / len(values)
        squares += sum((v - mean) ** 2 for v in values)
        df += len(values) - 1
    return (math.sqrt(squares / df) if df else math.nan), df


@dataclass(frozen=True)
class PowerRow:
    model: str
    versus: str
    sides: int
    prompt_se: float
    detectable: float  # at the seeds the comparison has
    seeds_for_target: int | None  # None: more seeds cannot reach the target; more prompts would
    prompts: int  # the prompts the comparison resampled
    prompts_for_target: int | None  # at HEADLINE_SEEDS seeds; None: the seeds' spread hides it at that many
    fewest_seeds: int | None  # below this many seeds no number of prompts reaches the target


def prompt_se(low: float, high: float, level: float = DEFAULT_LEVEL) -> float:
    """The standard error a percentile bootstrap interval implies (its half width over z)."""
    return (high - low) / (2 * _z((1 + level) / 2))


def power_table(rows: Sequence[dict], methods: Sequence[str], train_seeds: Sequence[int], base: str,
                target: float, level: float = DEFAULT_LEVEL, power: float = DEFAULT_POWER) -> dict:
    """From a comparison's rows (workflows.compare.rows_to_json): each method's spread between training seeds,
    and for every comparison row the difference it can detect and the seeds per method `target` needs."""
    run_means = {m: [row["difference"]["estimate"] for row in rows for s in train_seeds
                     if row["model"] == f"{m} seed {s}" and "difference" in row] for m in methods}
    seed_sd, df = pooled_seed_sd(run_means)
    seeds = len(train_seeds)
    table = []
    for row in rows:
        if "difference" not in row or " seed " in row["model"]:
            continue
        sides = 1 if row["versus"] == base else 2
        se = prompt_se(row["difference"]["low"], row["difference"]["high"], level)
        spread = seed_sd if df else 0.0
        detectable = (minimum_detectable_difference(spread, se, seeds, sides, level, power) if df else math.inf)
        needed = seeds_needed(spread, se, target, sides, level, power) if df else None
        prompts = row["difference"]["n_prompts"]
        more = prompts_needed(spread, se, prompts, target, HEADLINE_SEEDS, sides, level, power) if df else None
        floor = fewest_seeds(spread, target, sides, level, power) if df else None
        table.append(PowerRow(row["model"], row["versus"], sides, se, detectable, needed, prompts, more, floor))
    return {"target": target, "power": power, "level": level, "train_seeds": seeds,
            "seed_sd": {m: (pooled_seed_sd({m: v})[0] if len(v) > 1 else None) for m, v in run_means.items()},
            "pooled_seed_sd": seed_sd if df else None, "seed_df": df,
            "rows": [vars(r) | {"detectable": (r.detectable if math.isfinite(r.detectable) else None)}
                     for r in table]}


def power_markdown(table: dict) -> str:
    """The power table under a comparison: what each verdict could have seen."""
    if table["pooled_seed_sd"] is None:
        return ("\nPower: one training seed per method, so the spread between seeds is unknown and no difference "
                "can be called detectable; train at least 2 (5 for a headline).\n")
    spreads = ", ".join(f"{m} {sd:.4f}" for m, sd in table["seed_sd"].items() if sd is not None)
    lines = ["", f"Power ({table['power']:.0%}, two-sided {table['level']:.0%}): spread of a run's mean between "
             f"training seeds, pooled {table['pooled_seed_sd']:.4f} ({spreads}); {table['train_seeds']} seeds per "
             f"method.", "",
             f"| model | vs | prompts' SE | detectable with {table['train_seeds']} seeds | seeds for "
             f"{table['target']:g} | prompts for {table['target']:g} at {HEADLINE_SEEDS} seeds |",
             "|---|---|---:|---:|---:|---:|"]
    for row in table["rows"]:
        detectable = f"{row['detectable']:.4f}" if row["detectable"] is not None else "-"
        needed = str(row["seeds_for_target"]) if row["seeds_for_target"] else "more prompts"
        floor = f">= {row['fewest_seeds']} seeds first" if row["fewest_seeds"] else "out of reach"
        more = f"{row['prompts_for_target']} (now {row['prompts']})" if row["prompts_for_target"] else floor
        lines.append(f"| {row['model']} | {row['versus']} | {row['prompt_se']:.4f} | {detectable} | {needed} "
                     f"| {more} |")
    return "\n".join(lines) + "\n"
