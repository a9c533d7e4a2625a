"""The closing numbers of an evaluate run: each model's mean with a prompt-clustered interval, and every other model
against a baseline on the (prompt, seed) samples both have (paired difference, win rate, Holm-corrected Wilcoxon p).

Pure functions of score tables, so they are tested without a store and reused by later commands (report).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rpo_bench.evaluation import stats
from rpo_bench.evaluation.store import is_number

# 2,000 resamples instead of stats' 10,000: a default micro evaluate summarises hundreds of (model, protocol,
# metric, category) rows, three bootstraps each, and at 2,000 the ends of a 95% interval move by about 1% of its
# width between generator seeds, well below the third decimal that is printed.
BOOTSTRAP_RESAMPLES = 2_000
BOOTSTRAP_SEED = 0  # fixed, so that the same scores give byte-identical intervals run after run
BY_ACCEPTED = ("category",)

# (prompt id, seed) -> score; the prompt id is the prompt's index in the prompt set.
Scores = dict[tuple[int, int], float]


@dataclass(frozen=True)
class ScoreTable:
    """One (model, protocol, metric)'s scores. `group` names the models that are compared with each other: the
    protocol when every model runs under the same protocols, one group for all when each runs its own."""

    model: str
    protocol: str
    group: str
    metric: str
    higher_is_better: bool
    scores: Scores
    categories: dict[int, str]  # prompt id -> category


@dataclass
class SummaryRow:
    model: str
    protocol: str
    metric: str
    higher_is_better: bool
    n: int  # scored (prompt, seed) samples
    mean: float
    n_prompts: int = 0
    seeds_per_prompt: int | None = None  # when every prompt has the same number of scored seeds
    interval: stats.Interval | None = None  # the mean with its 95% interval, resampling prompts (None: no samples)
    category: str | None = None  # None: all prompts; otherwise only the prompts of this category (--by category)
    baseline: str | None = None  # the model compared against; None on the baseline's own row
    versus: stats.Comparison | None = None  # None on the baseline's row or when no sample is shared with it
    baseline_n: int = 0  # the baseline's scored samples, to tell when a comparison used only part of them
    group: str = ""  # the compared models' protocol ("" when each model ran its own protocol: see ScoreTable)

    @property
    def samples(self) -> str:
        """'144x4' (prompts x seeds) when every prompt has the same seeds, else '570 over 144 prompts'."""
        if self.seeds_per_prompt is not None:
            return f"{self.n_prompts}x{self.seeds_per_prompt}"
        return f"{self.n} over {self.n_prompts} prompts"


def score_dict(samples: Iterable[Any]) -> tuple[Scores, dict[int, str], int]:
    """One model's scores in one section, from the store's ScoredSample rows: ({(prompt index, seed): value},
    {prompt index: category}, how many values were not finite numbers and were left out). Sorted by key, so that
    evaluate's closing table and the report, which both build their tables here, sum in the same order and agree
    to the last digit."""
    scores: dict[tuple[int, int], float] = {}
    categories: dict[int, str] = {}
    skipped = 0
    for sample in samples:
        if not is_number(sample.value):
            skipped += 1
            continue
        scores[(sample.prompt_index, sample.seed)] = float(sample.value)
        categories[sample.prompt_index] = sample.category
    return dict(sorted(scores.items())), dict(sorted(categories.items())), skipped


def _seeds_per_prompt(scores: Scores) -> int | None:
    counts: dict[int, int] = {}
    for prompt, _seed in scores:
        counts[prompt] = counts.get(prompt, 0) + 1
    distinct = set(counts.values())
    return distinct.pop() if len(distinct) == 1 else None


def _own_row(table: ScoreTable, scores: Scores, category: str | None) -> SummaryRow:
    options = {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED}
    interval = stats.cluster_bootstrap(scores, **options) if scores else None
    return SummaryRow(table.model, table.protocol, table.metric, table.higher_is_better, len(scores),
                      interval.estimate if interval else float("nan"), interval.n_prompts if interval else 0,
                      _seeds_per_prompt(scores), interval, category, group=table.group)


def _group_rows(tables: Sequence[ScoreTable], baseline: str, category: str | None) -> list[SummaryRow]:
    """The rows of one (group, metric, category): every model's own numbers, then the comparisons."""
    if category is None:
        scores = [t.scores for t in tables]
    else:
        scores = [{k: v for k, v in t.scores.items() if t.categories.get(k[0]) == category} for t in tables]
    rows = [_own_row(t, s, category) for t, s in zip(tables, scores, strict=True)]
    base = next((i for i, t in enumerate(tables) if t.model == baseline), None)
    if base is None:
        return rows
    # Only models that share a sample with the baseline are compared (and counted in the Holm correction).
    comparable = {t.model: s for i, (t, s) in enumerate(zip(tables, scores, strict=True))
                  if i != base and stats.shared_keys(s, scores[base])}
    if comparable:
        results = stats.compare_to_baseline({baseline: scores[base], **comparable}, baseline,
                                            tables[base].higher_is_better, resamples=BOOTSTRAP_RESAMPLES,
                                            seed=BOOTSTRAP_SEED)
    else:
        results = {}
    for i, row in enumerate(rows):
        if i != base:
            row.baseline, row.versus, row.baseline_n = baseline, results.get(row.model), rows[base].n
    return rows


def categories_in_order(tables: Sequence[ScoreTable]) -> list[str]:
    """Every category, in the order its first prompt comes in the prompt set."""
    seen: dict[str, None] = {}
    for table in tables:
        for prompt in sorted(table.categories):
            seen.setdefault(table.categories[prompt], None)
    return list(seen)


def summarise_tables(tables: Sequence[ScoreTable], baseline: str, by_category: bool = False) -> list[SummaryRow]:
    """Rows ordered by group, category (all prompts first), metric, then model in the order given."""
    groups: dict[tuple[str, str], list[ScoreTable]] = {}
    for table in tables:
        groups.setdefault((table.group, table.metric), []).append(table)
    categories: list[str | None] = [None, *(categories_in_order(tables) if by_category else [])]
    rows: list[SummaryRow] = []
    for group in dict.fromkeys(t.group for t in tables):
        for category in categories:
            for (table_group, _metric), members in groups.items():
                if table_group == group:
                    rows.extend(_group_rows(members, baseline, category))
    return rows
