"""`rpo-bench report --json / --csv`: a Report (rpo_bench.report) as machine-readable files.

The JSON follows the layout lm-evaluation-harness users know: `config` (the full provenance of the runs that
wrote the store), `results` keyed by section (one per prompt set, protocol, metric and metric version, as in the
markdown), and `samples` (their `--log_samples`): every scored image behind each number, with hashes that tie it
to the image and the prompt. The CSV holds one row per (section, category, model) for spreadsheets and pandas.

Every number is the Report's (nothing is recomputed), and nothing depends on when or where the export runs, so two
exports of the same store are byte-identical.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from typing import Any

from rpo_bench.report import Report, Section, ranks
from rpo_bench.store import ResultsStore
from rpo_bench.summary import SummaryRow

CSV_COLUMNS = ("prompt_set", "protocol", "metric", "metric_version", "category", "model", "n", "mean", "ci_low",
               "ci_high", "rank", "baseline", "diff", "diff_ci_low", "diff_ci_high", "win_rate", "p_holm",
               "protocol_fingerprint")  # last: tells apart two sections of one protocol run with changed settings
ALL_PROMPTS = "all"  # the category column's value for the table over every prompt


# -- keys --------------------------------------------------------------------------------------------------------
def _base_key(section: Section) -> str:
    g = section.group
    return "|".join((g.prompt_set, g.protocol, g.metric, g.metric_version))


def section_keys(report: Report) -> list[str]:
    """One key per section, in the report's order: prompt_set|protocol|metric|metric_version, with the protocol's
    fingerprint appended where one protocol ran with changed settings (two sections would share the short key)."""
    bases = [_base_key(s) for s in report.sections]
    return [f"{base}|{s.group.protocol_fingerprint}" if bases.count(base) > 1 else base
            for base, s in zip(bases, report.sections, strict=True)]


# -- numbers -----------------------------------------------------------------------------------------------------
def _number(value: float | None) -> float | None:
    """NaN (a model without samples in a category) is not valid JSON: it becomes null."""
    return None if value is None or math.isnan(value) else value


def _row_numbers(row: SummaryRow, rank: int | None, baseline: str | None) -> dict[str, Any]:
    interval, versus = row.interval, row.versus
    numbers: dict[str, Any] = {
        "n": row.n, "n_prompts": row.n_prompts, "mean": _number(row.mean),
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


def _table_numbers(rows: list[SummaryRow], baseline: str | None) -> dict[str, dict[str, Any]]:
    table_ranks = ranks(rows)
    return {row.model: _row_numbers(row, table_ranks.get(row.model), baseline) for row in rows}


def _section_result(section: Section, by_category: bool) -> dict[str, Any]:
    g = section.group
    tables = section.tables()
    result: dict[str, Any] = {
        "prompt_set": g.prompt_set, "protocol": g.protocol, "protocol_fingerprint": g.protocol_fingerprint,
        "protocol_settings": _parsed(g.protocol_settings), "metric": g.metric, "metric_version": g.metric_version,
        "higher_is_better": g.tables[0].higher_is_better if g.tables else True, "baseline": section.baseline,
        "seeds": g.seeds, "models": {},
    }
    for category, rows in tables:
        if category is None:
            result["models"] = _table_numbers(rows, section.baseline)
    if by_category:
        result["categories"] = {category: _table_numbers(rows, section.baseline)
                                for category, rows in tables if category is not None}
    return result


def _parsed(text: str | None) -> Any:
    """A JSON column as its value; text that is not JSON (an older or hand-edited store) stays text."""
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return text


# -- store reads -------------------------------------------------------------------------------------------------
def _runs(report: Report) -> list[dict[str, Any]]:
    """Each run's recorded configuration and software. Not its timestamps: the same runs made again must export
    the same bytes, so that a regenerated leaderboard diffs clean when its numbers did not change."""
    with ResultsStore(report.store, readonly=True) as store:
        runs = store.runs()
    return [{"run_id": run.run_id, "config": _parsed(run.config), "versions": _parsed(run.versions),
             "git_commit": run.git_commit} for run in runs]


def _samples(report: Report, keys: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every scored image behind each section: the very rows the report's numbers were computed from."""
    samples: dict[str, list[dict[str, Any]]] = {}
    for key, section in zip(keys, report.sections, strict=True):
        kept: dict[tuple, dict[str, Any]] = {}
        for model, rows in section.group.samples.items():
            shown = report.labels.get(model, model)  # the name the report shows
            for row in rows:
                kept[(shown, row.prompt_index, row.seed)] = {
                    "model": shown, "image_key": row.image_key, "image_sha256": row.image_sha256,
                    "prompt_index": row.prompt_index,
                    "prompt_sha256": hashlib.sha256(row.prompt.encode("utf-8")).hexdigest(),
                    "category": row.category, "seed": row.seed, "score": row.value}
        samples[key] = [kept[k] for k in sorted(kept)]
    return samples


# -- exports -----------------------------------------------------------------------------------------------------
def export_json(report: Report) -> dict[str, Any]:
    """The report as one JSON-serialisable dict: config (provenance), results (per section), samples, notes.
    Serialise with json.dumps(..., sort_keys=True) for byte-identical files."""
    keys = section_keys(report)
    info = report.info
    runs, samples = _runs(report), _samples(report, keys)
    config = {
        "store": str(report.store), "command": report.command, "rpo_bench_version": report.version,
        "git_commits": info.commits, "versions": info.versions, "baseline": report.baseline, "by": report.by,
        "models": report.models, "runs": runs,
    }
    if report.labels:
        config["labels"] = dict(report.labels)  # store name -> label: the samples and results use the labels
    by_category = report.by == "category"
    results = {key: _section_result(section, by_category) for key, section in zip(keys, report.sections,
                                                                                   strict=True)}
    return {"config": config, "results": results, "samples": samples, "notes": list(report.notes)}


def export_json_text(report: Report) -> str:
    """export_json as strict JSON text (RFC 8259: no NaN or Infinity, which most parsers refuse): a number that is
    not finite is written as null, and a note says where."""
    data = export_json(report)
    places: list[str] = []
    data = _finite_or_null(data, "", places)
    if places:
        data["notes"] = [*data["notes"], f"{len(places)} value(s) that are not finite numbers are written as null: "
                                          f"{', '.join(places[:5])}{' ...' if len(places) > 5 else ''}"]
    return json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n"


def _finite_or_null(value: Any, where: str, places: list[str]) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        places.append(where or "(top)")
        return None
    if isinstance(value, dict):
        return {key: _finite_or_null(item, f"{where}.{key}" if where else str(key), places)
                for key, item in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(item, f"{where}[{i}]", places) for i, item in enumerate(value)]
    return value


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
            for model, numbers in _table_numbers(rows, section.baseline).items():
                cells = {"prompt_set": g.prompt_set, "protocol": g.protocol, "metric": g.metric,
                         "metric_version": g.metric_version, "category": ALL_PROMPTS if category is None else category,
                         "model": model, **numbers, "baseline": section.baseline,
                         "protocol_fingerprint": g.protocol_fingerprint}
                writer.writerow([_csv_cell(cells[c]) for c in CSV_COLUMNS])
    return out.getvalue()
