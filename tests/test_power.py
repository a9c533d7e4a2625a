"""The power analysis plans the training seeds and prompts a comparison needs: the plan must deliver the power it
promises when runs really spread as measured, and the leaderboard's verdicts must say what a tie could have seen."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import t as student_t

from rpo_bench.evaluation import stats
from rpo_bench.evaluation.power import (
    minimum_detectable_difference,
    plan,
    pooled_seed_sd,
    power_table,
    prompts_se,
    seeds_needed,
)
from rpo_bench.workflows.leaderboard import verdict_lines


def _rejection_rate(difference: float, seed_sd: float, prompt_se: float, seeds: int, sides: int,
                    trials: int = 40_000) -> float:
    """Simulated comparisons: each method's runs spread by seed_sd around its true mean (the base, at sides 1,
    has no runs), the shared prompts add prompt_se; the test is the t-test the power analysis assumes."""
    rng = np.random.default_rng(0)
    a = rng.normal(difference, seed_sd, size=(trials, seeds))
    b = rng.normal(0.0, seed_sd, size=(trials, seeds)) if sides == 2 else np.zeros((trials, seeds))
    estimate = a.mean(1) - b.mean(1) + rng.normal(0.0, prompt_se, size=trials)
    spread = a.var(1, ddof=1) + (b.var(1, ddof=1) if sides == 2 else 0.0)
    se = np.sqrt(spread / seeds + prompt_se**2)
    critical = student_t.ppf(0.975, sides * (seeds - 1))
    return float(np.mean(np.abs(estimate) / se > critical))


@pytest.mark.parametrize(("seed_sd", "prompt_se", "seeds", "sides"),
                         [(0.01, 0.001, 5, 2), (0.003, 0.004, 5, 2), (0.02, 0.0, 8, 2), (0.01, 0.002, 5, 1)])
def test_the_detectable_difference_is_detected_at_the_promised_power(seed_sd, prompt_se, seeds, sides):
    detectable = minimum_detectable_difference(seed_sd, prompt_se, seeds, sides)
    assert 0.74 <= _rejection_rate(detectable, seed_sd, prompt_se, seeds, sides) <= 0.88
    # and half of it is missed most of the time: the number is not a loose upper bound
    assert _rejection_rate(detectable / 2, seed_sd, prompt_se, seeds, sides) < 0.45


def test_seeds_needed_is_the_fewest_that_detect_the_difference():
    needed = seeds_needed(0.01, 0.001, 0.015)
    assert minimum_detectable_difference(0.01, 0.001, needed) <= 0.015
    assert minimum_detectable_difference(0.01, 0.001, needed - 1) > 0.015
    assert needed > 5  # more seeds than a three-seed leaderboard has: that is what the table is for


def test_a_difference_the_prompts_alone_hide_needs_no_more_training_seeds():
    # the prompts' standard error alone (2.8 of it at 80% power) is bigger than the difference
    assert seeds_needed(0.001, 0.005, 0.01) is None


def test_the_plan_is_the_fewest_training_seeds_then_the_fewest_evaluation_seeds():
    seeds, eval_seeds = plan(0.003, within=0.0036, between=0.0008, prompts=108, difference=0.01)
    assert minimum_detectable_difference(0.003, prompts_se(0.0036, 0.0008, 108, eval_seeds), seeds) <= 0.01
    assert minimum_detectable_difference(0.003, prompts_se(0.0036, 0.0008, 108, eval_seeds - 1), seeds) > 0.01
    assert all(minimum_detectable_difference(0.003, prompts_se(0.0036, 0.0008, 108, k), seeds - 1) > 0.01
               for k in range(1, 65))
    # the between-prompt part is a floor that no number of seeds lowers
    assert plan(0.003, within=0.0036, between=0.005, prompts=108, difference=0.01) is None


def test_variance_components_recover_the_spreads_a_comparison_was_drawn_with():
    rng = np.random.default_rng(3)
    prompts, seeds, within, between = 400, 6, 0.004, 0.001
    effects = rng.normal(0.0, math.sqrt(between), prompts)
    model = {(p, s): float(effects[p] + rng.normal(0.0, math.sqrt(within))) for p in range(prompts)
             for s in range(seeds)}
    baseline = dict.fromkeys(model, 0.0)
    parts = stats.variance_components(model, baseline)
    assert parts.prompts == prompts and parts.seeds == seeds
    assert parts.within == pytest.approx(within, rel=0.1) and parts.between == pytest.approx(between, rel=0.3)
    # and they give the prompts' SE the bootstrap measures at the seeds the comparison had
    interval = stats.paired_difference(model, baseline)
    measured = (interval.high - interval.low) / (2 * 1.959964)
    assert prompts_se(parts.within, parts.between, prompts, seeds) == pytest.approx(measured, rel=0.1)
    assert stats.variance_components({(0, 0): 1.0, (1, 0): 0.0}, {(0, 0): 0.0, (1, 0): 0.0}) is None  # one seed


def test_spread_is_pooled_around_each_methods_own_mean():
    sd, df = pooled_seed_sd({"dpo": [0.1, 0.3], "rpo": [1.0, 1.0, 1.0], "sft": [0.5]})
    assert df == 3 and sd == pytest.approx(math.sqrt(0.02 / 3))  # the methods' different means add nothing


def _rows(run_differences: dict[str, list[float]]) -> list[dict]:
    def interval(estimate, half):
        return {"estimate": estimate, "low": estimate - half, "high": estimate + half, "n_prompts": 100, "n": 400}

    rows = [{"model": "micro-base", "versus": "", "mean": interval(0.7, 0.02)}]
    for method, values in run_differences.items():
        mean = sum(values) / len(values)
        rows.append({"model": method, "versus": "micro-base", "mean": interval(0.7 + mean, 0.02),
                     "difference": interval(mean, 0.01)})
        rows += [{"model": f"{method} seed {s}", "versus": "micro-base", "mean": interval(0.7 + v, 0.02),
                  "difference": interval(v, 0.01)} for s, v in enumerate(values)]
    rows.append({"model": "rpo", "versus": "dpo", "mean": interval(0.71, 0.02), "difference": interval(0.0, 0.008),
                 "variance": {"within": 0.0036, "between": 0.0008, "seeds": 4.0, "prompts": 100}})
    return rows


def test_power_table_and_verdicts_say_what_a_tie_could_have_seen():
    rows = _rows({"dpo": [0.0, 0.004, 0.002], "rpo": [0.01, 0.006, 0.008]})
    table = power_table(rows, ("dpo", "rpo"), (0, 1, 2), "micro-base", target=0.01)
    assert table["pooled_seed_sd"] == pytest.approx(0.002) and table["seed_df"] == 4
    by_pair = {(r["model"], r["versus"]): r for r in table["rows"]}
    assert set(by_pair) == {("dpo", "micro-base"), ("rpo", "micro-base"), ("rpo", "dpo")}
    tie = by_pair[("rpo", "dpo")]
    assert tie["prompt_se"] == pytest.approx(0.008 / 1.959964, rel=1e-5)
    assert tie["detectable"] == pytest.approx(minimum_detectable_difference(0.002, tie["prompt_se"], 3, 2))
    assert tie["plan_for_target"] == plan(0.002, 0.0036, 0.0008, 100, 0.01)
    assert by_pair[("dpo", "micro-base")]["plan_for_target"] is None  # no split recorded: no plan claimed
    comparison = {"config": {"metric": "micro-oracle"}, "metrics": {"micro-oracle": rows}, "power": table}
    lines = verdict_lines(comparison)
    assert any(line.startswith("- rpo vs dpo") and "no difference at 95%" in line
               and f"detects {tie['detectable']:.3f} or more at 80% power" in line for line in lines)
    del comparison["power"]  # a comparison recorded before the power table still reads
    assert all("detects" not in line for line in verdict_lines(comparison))
