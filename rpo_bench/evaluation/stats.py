"""Statistics for comparing models that were scored on the same prompts and seeds.

Two facts shape every function here. Models share prompts, so a comparison is paired: the difference of two
models on the same (prompt, seed) removes the prompt's own difficulty, which is most of the variance. And the
seeds of one prompt are not independent draws, so intervals resample prompts (each with all its seeds), not
images: treating 4 seeds of 144 prompts as 576 independent images makes intervals too narrow.

Every random draw comes from a seeded generator, so the same inputs give byte-identical outputs.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# A score table: (prompt id, seed) -> value. The prompt id is whatever names a prompt uniquely (its index or hash).
Scores = Mapping[tuple[Hashable, int], float]

DEFAULT_RESAMPLES = 10_000
DEFAULT_LEVEL = 0.95
_TIE_TOLERANCE = 1e-9  # relative: differences below this are float rounding, not a difference in score
_CHUNK = 20_000_000  # index draws per chunk: bounds memory at ~160 MB however many prompts there are


@dataclass(frozen=True)
class Interval:
    """An estimate with its bootstrap interval; n_prompts and n_samples say what it was resampled over."""

    estimate: float
    low: float
    high: float
    n_prompts: int
    n_samples: int
    level: float = DEFAULT_LEVEL

    def excludes(self, value: float = 0.0) -> bool:
        return not (self.low <= value <= self.high)

    def format(self, digits: int = 3) -> str:
        return f"{self.estimate:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


@dataclass(frozen=True)
class Comparison:
    """A model against a baseline on their shared (prompt, seed) samples."""

    difference: Interval  # mean of model - baseline
    win_rate: Interval  # share of samples where the model is better, ties counted half
    p_value: float  # Wilcoxon signed-rank on per-prompt mean differences, two-sided
    p_holm: float | None = None  # set by compare_to_baseline when several models share the baseline


def _clusters(values: Scores) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt sums and counts, prompts in a fixed order so results do not depend on the input's order."""
    sums: dict[Hashable, float] = {}
    counts: dict[Hashable, int] = {}
    for (prompt, _seed), value in values.items():
        sums[prompt] = sums.get(prompt, 0.0) + float(value)
        counts[prompt] = counts.get(prompt, 0) + 1
    order = sorted(sums, key=repr)
    return np.array([sums[p] for p in order]), np.array([counts[p] for p in order], dtype=float)


def cluster_bootstrap(values: Scores, level: float = DEFAULT_LEVEL, resamples: int = DEFAULT_RESAMPLES,
                      seed: int = 0) -> Interval:
    """Mean over samples with a percentile interval from resampling prompts with replacement (all their seeds)."""
    if not values:
        raise ValueError("no samples to summarise")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    sums, counts = _clusters(values)
    estimate = float(sums.sum() / counts.sum())
    n = len(sums)
    if n == 1:  # one prompt: nothing to resample over, the interval is the point
        return Interval(estimate, estimate, estimate, 1, int(counts.sum()), level)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    per_chunk = max(1, _CHUNK // n)
    for start in range(0, resamples, per_chunk):
        stop = min(resamples, start + per_chunk)
        draws = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Interval(estimate, float(low), float(high), n, int(counts.sum()), level)


def _differences(model: Scores, baseline: Scores, keys) -> dict:
    """model - baseline per sample, with rounding noise counted as a tie: a mean over runs such as (0.8 + 0.8 + 0.8)
    / 3 is 0.8000000000000002, which must tie with 0.8, not beat it."""
    out = {}
    for k in keys:
        a, b = float(model[k]), float(baseline[k])
        out[k] = 0.0 if abs(a - b) <= _TIE_TOLERANCE * max(1.0, abs(a), abs(b)) else a - b
    return out


def shared_keys(a: Scores, b: Scores) -> list[tuple[Hashable, int]]:
    """The (prompt, seed) samples both tables have: a comparison only ever uses those."""
    return sorted(set(a) & set(b), key=repr)


def paired_difference(model: Scores, baseline: Scores, **options) -> Interval:
    """Mean of model - baseline over shared samples, with a prompt-clustered bootstrap interval."""
    keys = shared_keys(model, baseline)
    if not keys:
        raise ValueError("the two score tables share no (prompt, seed) sample")
    return cluster_bootstrap({k: model[k] - baseline[k] for k in keys}, **options)


def win_rate(model: Scores, baseline: Scores, higher_is_better: bool = True, **options) -> Interval:
    """Share of shared samples where the model beats the baseline; a tie counts as half a win."""
    keys = shared_keys(model, baseline)
    if not keys:
        raise ValueError("the two score tables share no (prompt, seed) sample")
    sign = 1.0 if higher_is_better else -1.0
    outcomes = {k: 0.5 + 0.5 * float(np.sign(sign * d)) for k, d in _differences(model, baseline, keys).items()}
    return cluster_bootstrap(outcomes, **options)


def wilcoxon_p(model: Scores, baseline: Scores) -> float:
    """Two-sided Wilcoxon signed-rank p-value on per-prompt mean differences (seeds of a prompt averaged first,
    since they are not independent). 1.0 when every difference is zero."""
    from scipy.stats import wilcoxon  # noqa: PLC0415 - scipy loads slowly: only for statistics

    keys = shared_keys(model, baseline)
    sums, counts = _clusters(_differences(model, baseline, keys))
    per_prompt = sums / counts
    if len(per_prompt) == 0 or not np.any(per_prompt != 0):
        return 1.0
    return float(wilcoxon(per_prompt, zero_method="wilcox", alternative="two-sided").pvalue)


@dataclass(frozen=True)
class VarianceComponents:
    """A paired difference's variance split over prompts: `within` a prompt (between its evaluation seeds: what
    more seeds average away) and `between` prompts (how differently two models treat different prompts: what no
    number of seeds removes), one-way random effects; `seeds` per prompt on average."""

    within: float
    between: float
    seeds: float
    prompts: int


def variance_components(model: Scores, baseline: Scores) -> VarianceComponents | None:
    """The split of model - baseline over shared samples; None with fewer than 2 prompts or seeds per prompt."""
    per_prompt: dict[Hashable, list[float]] = {}
    for (prompt, _seed), value in _differences(model, baseline, shared_keys(model, baseline)).items():
        per_prompt.setdefault(prompt, []).append(value)
    groups = [np.asarray(values) for _, values in sorted(per_prompt.items(), key=lambda item: repr(item[0]))]
    if len(groups) < 2 or min(len(g) for g in groups) < 2:
        return None
    within = float(np.mean([g.var(ddof=1) for g in groups]))
    seeds = float(np.mean([len(g) for g in groups]))
    means = np.array([g.mean() for g in groups])
    between = max(float(means.var(ddof=1)) - within / seeds, 0.0)  # the method of moments, floored at 0
    return VarianceComponents(within, between, seeds, len(groups))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def compare(model: Scores, baseline: Scores, higher_is_better: bool = True, **options) -> Comparison:
    return Comparison(paired_difference(model, baseline, **options),
                      win_rate(model, baseline, higher_is_better, **options),
                      wilcoxon_p(model, baseline))


def compare_to_baseline(models: Mapping[str, Scores], baseline: str, higher_is_better: bool = True,
                        **options) -> dict[str, Comparison]:
    """Every other model against one baseline, with Holm-corrected p-values across those comparisons."""
    others = [name for name in models if name != baseline]
    results = {name: compare(models[name], models[baseline], higher_is_better, **options) for name in others}
    adjusted = holm([results[name].p_value for name in others])
    return {name: Comparison(r.difference, r.win_rate, r.p_value, p)
            for (name, r), p in zip(results.items(), adjusted, strict=True)}

