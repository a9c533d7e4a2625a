"""The held-out diagnostics of a comparison's runs side by side: for each method, the last held-out measurement
of its runs (implicit accuracy, margin, D^w, D^l), averaged over its training seeds.

Read from each run's rpo_bench.json, so a comparison that reuses finished runs shows what they measured. D^w > 0
means the winners' error rose against the starting weights: the failure that docs/micro-recipe.md found behind
"the reward accuracy rises but the samples do not improve", now visible for every method in one table.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

COLUMNS = ("heldout_acc", "heldout_margin", "heldout_d_w", "heldout_d_l")


def _last_heldout(output: Path) -> dict | None:
    try:
        record = json.loads((output / "rpo_bench.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    last = (record.get("heldout") or {}).get("last") if isinstance(record, dict) else None
    return last if isinstance(last, dict) and all(key in last for key in COLUMNS) else None


def heldout_table(runs: Mapping[str, Sequence[Path]]) -> dict[str, dict[str, float]]:
    """method -> {column: mean over its runs, "runs": how many measured}; methods without a measurement left out."""
    table = {}
    for method, outputs in runs.items():
        lasts = [last for last in map(_last_heldout, outputs) if last is not None]
        if lasts:
            table[method] = {key: statistics.fmean(last[key] for last in lasts) for key in COLUMNS}
            table[method]["runs"] = len(lasts)
            table[method]["pairs"] = lasts[0].get("heldout_pairs")
    return table


def heldout_markdown(table: Mapping[str, Mapping[str, float]]) -> str:
    if not table:
        return ""
    pairs = next(iter(table.values())).get("pairs")
    lines = [f"Held-out pairs ({pairs} pairs of prompts no run trained on) at the last step, mean over training seeds: "
             "implicit accuracy against the starting weights (ties count half), margin, and the change of the "
             "winners' (D^w) and losers' (D^l) denoising error against the starting weights (D^w > 0: the winners' "
             "error rose)",
             "",
             "| method | held-out accuracy | margin | D^w | D^l | runs |",
             "|---|---|---|---|---|---|"]
    for method, v in table.items():
        lines.append(f"| {method} | {v['heldout_acc']:.2f} | {v['heldout_margin']:+.1f} | {v['heldout_d_w']:+.2e} | "
                     f"{v['heldout_d_l']:+.2e} | {v['runs']} |")
    return "\n".join(lines) + "\n"
