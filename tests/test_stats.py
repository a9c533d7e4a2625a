"""rpo_bench.evaluation.stats against values worked out by hand and against scipy computing the same thing directly."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from rpo_bench.evaluation import stats


def _table(values_by_prompt: dict[int, list[float]]) -> dict[tuple[int, int], float]:
    return {(p, s): v for p, vs in values_by_prompt.items() for s, v in enumerate(vs)}


def test_mean_is_over_samples_and_constant_differences_have_a_point_interval():
    a = _table({0: [1.0, 2.0], 1: [3.0, 4.0], 2: [5.0, 6.0]})
    b = {k: v - 0.5 for k, v in a.items()}
    diff = stats.paired_difference(a, b)
    assert diff.estimate == pytest.approx(0.5)
    assert (diff.low, diff.high) == pytest.approx((0.5, 0.5))
    assert (diff.n_prompts, diff.n_samples) == (3, 6)
    assert diff.excludes(0.0)


def test_cluster_bootstrap_matches_a_hand_written_loop_with_the_same_draws():
    rng = np.random.default_rng(3)
    table = _table({p: list(rng.normal(size=3)) for p in range(7)})
    got = stats.cluster_bootstrap(table, resamples=500, seed=11)
    # By hand: the same generator draws prompt indices; a resample's mean is over all seeds of the drawn prompts.
    prompts = sorted({p for p, _ in table})
    draws = np.random.default_rng(11).integers(0, len(prompts), size=(500, len(prompts)))
    means = [np.mean([table[(prompts[i], s)] for i in row for s in range(3)]) for row in draws]
    low, high = np.quantile(means, [0.025, 0.975])
    assert got.estimate == pytest.approx(np.mean(list(table.values())))
    assert (got.low, got.high) == pytest.approx((low, high))


def test_one_seed_per_prompt_agrees_with_scipys_percentile_bootstrap():
    rng = np.random.default_rng(0)
    values = rng.normal(loc=0.3, scale=1.0, size=200)
    ours = stats.cluster_bootstrap({(i, 0): v for i, v in enumerate(values)}, resamples=20_000, seed=1)
    theirs = scipy_stats.bootstrap((values,), np.mean, n_resamples=20_000, method="percentile",
                                   random_state=np.random.default_rng(2)).confidence_interval
    assert ours.low == pytest.approx(theirs.low, abs=0.01)
    assert ours.high == pytest.approx(theirs.high, abs=0.01)


def test_seeds_of_one_prompt_are_not_counted_as_independent():
    # Each prompt has a large shared offset; 8 near-identical seeds must not shrink the interval 8-fold.
    rng = np.random.default_rng(5)
    offsets = rng.normal(size=30)
    clustered = {(p, s): offsets[p] + 1e-3 * rng.normal() for p in range(30) for s in range(8)}
    one_seed = {(p, 0): offsets[p] for p in range(30)}
    width = lambda i: i.high - i.low  # noqa: E731
    assert width(stats.cluster_bootstrap(clustered)) == pytest.approx(width(stats.cluster_bootstrap(one_seed)),
                                                                      rel=0.1)


def test_pairing_removes_the_prompt_difficulty():
    rng = np.random.default_rng(1)
    difficulty = rng.normal(scale=5.0, size=50)
    base = {(p, 0): difficulty[p] for p in range(50)}
    model = {(p, 0): difficulty[p] + 0.2 + 0.1 * rng.normal() for p in range(50)}
    paired = stats.paired_difference(model, base)
    unpaired_width = 2 * 1.96 * np.sqrt(np.var(list(model.values()), ddof=1) / 50 * 2)
    assert paired.excludes(0.0)
    assert paired.high - paired.low < unpaired_width / 10


def test_win_rate_counts_ties_half_and_respects_direction():
    model = {(0, 0): 2.0, (1, 0): 1.0, (2, 0): 0.0, (3, 0): 5.0}
    base = {(0, 0): 1.0, (1, 0): 1.0, (2, 0): 1.0, (3, 0): 4.0}
    assert stats.win_rate(model, base).estimate == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert stats.win_rate(model, base, higher_is_better=False).estimate == pytest.approx((0 + 0.5 + 1 + 0) / 4)


def test_only_shared_samples_are_compared():
    model = {(0, 0): 1.0, (1, 0): 2.0, (2, 0): 3.0}
    base = {(1, 0): 1.0, (2, 0): 1.0, (9, 0): 100.0}
    diff = stats.paired_difference(model, base)
    assert diff.estimate == pytest.approx(1.5) and diff.n_prompts == 2
    with pytest.raises(ValueError, match="share no"):
        stats.paired_difference({(0, 0): 1.0}, {(1, 0): 1.0})


def test_wilcoxon_uses_per_prompt_means_like_scipy():
    rng = np.random.default_rng(2)
    model = _table({p: list(rng.normal(0.2, 1, size=3)) for p in range(25)})
    base = _table({p: list(rng.normal(0.0, 1, size=3)) for p in range(25)})
    per_prompt = [np.mean([model[(p, s)] - base[(p, s)] for s in range(3)]) for p in range(25)]
    assert stats.wilcoxon_p(model, base) == pytest.approx(scipy_stats.wilcoxon(per_prompt).pvalue)
    assert stats.wilcoxon_p(base, base) == 1.0


def test_holm_by_hand():
    # sorted: 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.03, 0.06, 0.06
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []


def test_compare_to_baseline_applies_holm_across_models():
    rng = np.random.default_rng(4)
    base = {(p, 0): rng.normal() for p in range(40)}
    models = {"base": base,
              "better": {k: v + 0.5 + 0.3 * rng.normal() for k, v in base.items()},
              "same": {k: v + 0.3 * rng.normal() for k, v in base.items()}}
    results = stats.compare_to_baseline(models, "base")
    assert set(results) == {"better", "same"}
    raw = [results["better"].p_value, results["same"].p_value]
    assert [results["better"].p_holm, results["same"].p_holm] == pytest.approx(stats.holm(raw))
    assert results["better"].difference.excludes(0.0) and results["better"].win_rate.low > 0.5


def test_reruns_are_byte_identical_and_order_independent():
    rng = np.random.default_rng(6)
    table = _table({p: list(rng.normal(size=2)) for p in range(20)})
    shuffled = dict(reversed(list(table.items())))
    assert stats.cluster_bootstrap(table, seed=7) == stats.cluster_bootstrap(shuffled, seed=7)
    assert stats.cluster_bootstrap(table, seed=7) != stats.cluster_bootstrap(table, seed=8)


def test_rounding_noise_of_averaged_scores_is_a_tie():
    base = {(p, 0): 0.8 for p in range(10)}
    averaged = {(p, 0): (0.8 + 0.8 + 0.8) / 3 for p in range(10)}  # 0.8000000000000002
    assert averaged[(0, 0)] != 0.8
    assert stats.win_rate(averaged, base).estimate == 0.5
    assert stats.wilcoxon_p(averaged, base) == 1.0
