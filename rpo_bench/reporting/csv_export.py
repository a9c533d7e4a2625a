"""`rpo-bench report --csv`: a Report (reporting.report) as one row per (section, category, model), for
spreadsheets and pandas; the same numbers as the JSON export."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from rpo_bench.reporting.cells import table_numbers
from rpo_bench.reporting.report import Report

CSV_COLUMNS = ("prompt_set", "protocol", "metric", "metric_version", "category", "model", "n", "mean", "ci_low",
               "ci_high", "rank", "baseline", "diff", "diff_ci_low", "diff_ci_high", "win_rate", "p_holm",
               "protocol_fingerprint")  # last: tells apart two sections of one protocol run with changed settings
ALL_PROMPTS = "all"  # the category column's value for the table over every prompt


# Spreadsheets run a cell that starts with one of these as a formula (OWASP "CSV injection"): a model, prompt set
# or category name from the store is written with a leading apostrophe instead, which they show as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> Any:
    # The csv module writes floats with repr (the shortest text that reads back to the same float) and None as "".
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def export_csv(report: Report) -> str:
    """One row per (section, category, model); category 'all' for all prompts; empty cells where a number does not
    apply (the baseline's own comparison, a model without samples)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for section in report.sections:
        g = section.group
        for category, rows in section.tables():
            for model, numbers in table_numbers(rows, section.baseline).items():
                cells = {"prompt_set": g.prompt_set, "protocol": g.protocol, "metric": g.metric,
                         "metric_version": g.metric_version, "category": ALL_PROMPTS if category is None else category,
                         "model": model, **numbers, "baseline": section.baseline,
                         "protocol_fingerprint": g.protocol_fingerprint}
                writer.writerow([_csv_cell(cells[c]) for c in CSV_COLUMNS])
    return out.getvalue()
