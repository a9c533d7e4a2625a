"""`rpo-bench report --json`: a Report (reporting.report) as the export a user can diff and publish.

It follows the layout lm-evaluation-harness users know: `config` (the full provenance of the runs that wrote the
store), `results` keyed by section (one per prompt set, protocol, metric and metric version, as in the markdown),
and `samples` (their `--log_samples`): every scored image behind each number, with hashes that tie it to the
image and the prompt. Every number is the Report's (nothing is recomputed), and nothing depends on when or where
the export runs, so two exports of the same store are byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from rpo_bench.evaluation.store import ResultsStore
from rpo_bench.reporting.cells import table_numbers
from rpo_bench.reporting.report import Report, Section


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
            result["models"] = table_numbers(rows, section.baseline)
    if by_category:
        result["categories"] = {category: table_numbers(rows, section.baseline)
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


