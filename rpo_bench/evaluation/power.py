"""Power before claims: how large a difference a comparison of training runs can detect, and how many training
seeds it needs to detect a given one.

A comparison's interval (rpo_bench.evaluation.stats) resamples prompts; it holds the training runs fixed. A
second training seed of the same method lands somewhere else, so whether "RPO beats DPO" would hold for other
seeds depends on two spreads:
- between training seeds: the standard deviation of a run's mean score (all runs scored on the same prompts and
  evaluation seeds, so this is the training seed's own effect), pooled over the compared methods;
- between prompts: the standard error of the seed-averaged difference from resampling prompts, read off its
  bootstrap interval. More training seeds do not shrink it (keeping it fixed while projecting to more training
  seeds is conservative: per-prompt noise of a run averages out a little too). More evaluation seeds shrink its
  within-prompt part (stats.variance_components) but not its between-prompt part; in the micro world the held-out
  prompts are every held-out scene there is, so evaluation seeds, not prompts, are what can be added (`plan`).

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
MOST_SEEDS = 100  # training seeds per method a plan may ask for
MOST_EVAL_SEEDS = 64  # evaluation seeds per prompt a plan may ask for
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


def prompts_se(within: float, between: float, prompts: int, eval_seeds: float) -> float:
    """The prompts' SE of a paired difference at `eval_seeds` evaluation seeds per prompt (stats.VarianceComponents:
    the within-prompt part shrinks with seeds, the between-prompt part does not)."""
    return math.sqrt((between + within / eval_seeds) / prompts)


def plan(seed_sd: float, within: float, between: float, prompts: int, difference: float, sides: int = 2,
         level: float = DEFAULT_LEVEL, power: float = DEFAULT_POWER) -> tuple[int, int] | None:
    """(training seeds, evaluation seeds) that detect `difference` on these prompts: the fewest training seeds
    (from HEADLINE_SEEDS; they cost the most), then the fewest evaluation seeds; None when even MOST_SEEDS
    training seeds and MOST_EVAL_SEEDS evaluation seeds do not."""
    if (_z((1 + level) / 2) + _z(power)) * math.sqrt(between / prompts) >= difference:
        return None  # even unlimited seeds of both kinds leave the between-prompt part, which hides it
    for seeds in range(HEADLINE_SEEDS, MOST_SEEDS + 1):
        factor = multiplier(sides * (seeds - 1), level, power)  # once per seed count: t quantiles are slow
        for eval_seeds in range(1, MOST_EVAL_SEEDS + 1):
            se = prompts_se(within, between, prompts, eval_seeds)
            if factor * math.sqrt(sides * seed_sd**2 / seeds + se**2) <= difference:  # minimum_detectable_difference
                return seeds, eval_seeds
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
    seeds_for_target: int | None  # at these evaluation seeds; None: more training seeds alone cannot reach it
    plan_for_target: tuple[int, int] | None  # (training seeds, evaluation seeds) that reach it (`plan`)


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
        parts = row.get("variance")  # comparisons recorded before the split have none
        both = (plan(spread, parts["within"], parts["between"], parts["prompts"], target, sides, level, power)
                if df and parts else None)
        table.append(PowerRow(row["model"], row["versus"], sides, se, detectable, needed, both))
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
             f"| model | vs | prompts' SE | detectable with {table['train_seeds']} seeds | training seeds for "
             f"{table['target']:g} | training x evaluation seeds for {table['target']:g} |",
             "|---|---|---:|---:|---:|---:|"]
    for row in table["rows"]:
        detectable = f"{row['detectable']:.4f}" if row["detectable"] is not None else "-"
        needed = str(row["seeds_for_target"]) if row["seeds_for_target"] else "more evaluation seeds"
        both = f"{row['plan_for_target'][0]} x {row['plan_for_target'][1]}" if row["plan_for_target"] else "-"
        lines.append(f"| {row['model']} | {row['versus']} | {row['prompt_se']:.4f} | {detectable} | {needed} "
                     f"| {both} |")
    return "\n".join(lines) + "\n"
