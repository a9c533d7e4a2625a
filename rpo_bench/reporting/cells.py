"""The cells of a results table, formatted once: evaluate's closing table, the report's markdown and HTML tables
and its exports show the same text for the same number."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from rpo_bench.evaluation.summary import SummaryRow


def p_text(p: float | None) -> str:
    return "" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def ranks(rows: Sequence[SummaryRow]) -> dict[str, int]:
    """1 = best mean (competition ranking: equal means share a rank); models without samples get none."""
    scored = [r for r in rows if r.interval is not None]
    ordered = sorted(scored, key=lambda r: -r.mean if r.higher_is_better else r.mean)
    ranks: dict[str, int] = {}
    for i, row in enumerate(ordered):
        ranks[row.model] = ranks[ordered[i - 1].model] if i and ordered[i - 1].mean == row.mean else i + 1
    return ranks


def settings_text(settings: str) -> str:
    try:
        values = json.loads(settings)
    except ValueError:
        return settings
    if not isinstance(values, dict):
        return settings
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items()))


def mean_text(row: SummaryRow) -> str:
    return "-" if row.interval is None else f"{row.mean:.3f} [{row.interval.low:.3f}, {row.interval.high:.3f}]"


def comparison_cells(row: SummaryRow) -> list[str]:
    """diff [CI], win rate, Holm p against the baseline, as every table shows them; "(baseline)" on the
    baseline's own row."""
    if row.baseline is None:
        return ["(baseline)", "", ""]
    if row.versus is None:
        return ["no shared sample", "", ""]
    return [row.versus.difference.format(3), f"{100 * row.versus.win_rate.estimate:.0f}%", p_text(row.versus.p_holm)]


# -- the numbers of a row, for the machine-readable exports ---------------------------------------------------
def number(value: float | None) -> float | None:
    """NaN (a model without samples in a category) is not valid JSON: it becomes null."""
    return None if value is None or math.isnan(value) else value


def row_numbers(row: SummaryRow, rank: int | None, baseline: str | None) -> dict[str, Any]:
    interval, versus = row.interval, row.versus
    numbers: dict[str, Any] = {
        "n": row.n, "n_prompts": row.n_prompts, "mean": number(row.mean),
        "ci_low": interval.low if interval else None, "ci_high": interval.high if interval else None,
        "rank": rank, "baseline": baseline,
        # vs the baseline; null on the baseline's own row and for a model sharing no sample with it
        "diff": None, "diff_ci_low": None, "diff_ci_high": None, "win_rate": None, "win_rate_ci_low": None,
        "win_rate_ci_high": None, "p": None, "p_holm": None, "shared_samples": 0 if baseline else None,
    }
    if versus is not None and row.model != baseline:
        numbers.update(diff=versus.difference.estimate, diff_ci_low=versus.difference.low,
                       diff_ci_high=versus.difference.high, win_rate=versus.win_rate.estimate,
                       win_rate_ci_low=versus.win_rate.low, win_rate_ci_high=versus.win_rate.high, p=versus.p_value,
                       p_holm=versus.p_holm, shared_samples=versus.difference.n_samples)
    elif row.model == baseline:
        numbers["shared_samples"] = row.n
    return numbers


def table_numbers(rows: list[SummaryRow], baseline: str | None) -> dict[str, dict[str, Any]]:
    table_ranks = ranks(rows)
    return {row.model: row_numbers(row, table_ranks.get(row.model), baseline) for row in rows}
