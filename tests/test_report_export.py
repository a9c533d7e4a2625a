"""`rpo-bench report` exports (reporting.json_export, csv_export): the JSON's numbers are the Report's, its
samples are the store's rows (keys, hashes, scores, counts), two exports are byte-identical, and the CSV reads back
to the same numbers, model names with commas included."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import sqlite3
from pathlib import Path

import pytest

from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate
from rpo_bench.reporting.cells import ranks
from rpo_bench.reporting.csv_export import CSV_COLUMNS, export_csv
from rpo_bench.reporting.json_export import export_json, section_keys
from rpo_bench.reporting.report import build_report

MODELS = ("tiny-sd15", "tiny-sd15-alt")
BASELINE = "tiny-sd15"
PROMPTS = [("a red apple on a table", "seen"), ("a cat on a windowsill", "unseen"), ("a lighthouse at dusk", "seen"),
           ("a bowl of ramen", "unseen")]
COMMA_MODEL = "tiny, alt \"v2\""


@pytest.fixture(scope="module")
def store(tmp_path_factory, session_home) -> Path:
    """Two tiny models x 4 prompts x 2 seeds under protocol tiny, scored by tiny-clip; the baseline's scores of
    prompt 0 seed 0 removed, so that one comparison uses only part of the samples."""
    root = tmp_path_factory.mktemp("report-export")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "category": c}) + "\n" for p, c in PROMPTS), encoding="utf-8")
    path = root / "r.sqlite"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("RPO_BENCH_HOME", str(session_home))
        evaluate(EvaluateConfig(models=MODELS, prompts=str(prompts), metrics=("tiny-clip",), seeds=(0, 1),
                                protocol="tiny", store=path, image_cache=root / "images", show_progress=False))
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM scores WHERE image_key IN (SELECT image_key FROM scored_samples WHERE model = ? "
                   "AND prompt_index = 0 AND seed = 0)", (BASELINE,))
    db.close()
    return path


@pytest.fixture(scope="module")
def report(store):
    return build_report(store, baseline=BASELINE, by="category")


def _near(a: float | None, b: float | None) -> bool:
    """Equal, or both absent; CSV text goes through repr, which reads back to the same float exactly."""
    if a is None or b is None:
        return a is None and b is None
    return a == b or (math.isnan(a) and math.isnan(b))


def test_json_numbers_are_the_reports_rows(report):
    exported = export_json(report)
    g = report.sections[0].group
    assert list(exported["results"]) == section_keys(report) == [f"{g.prompt_set}|tiny|tiny-clip|{g.metric_version}"]
    for key, section in zip(section_keys(report), report.sections, strict=True):
        result = exported["results"][key]
        assert (result["protocol"], result["metric"], result["baseline"]) == ("tiny", "tiny-clip", BASELINE)
        assert result["protocol_settings"] == json.loads(section.group.protocol_settings)
        for category, rows in section.tables():
            table = result["models"] if category is None else result["categories"][category]
            assert list(table) == [r.model for r in rows]
            table_ranks = ranks(rows)
            for row in rows:
                numbers = table[row.model]
                assert (numbers["n"], numbers["n_prompts"], numbers["rank"]) == (row.n, row.n_prompts,
                                                                                 table_ranks[row.model])
                assert (numbers["mean"], numbers["ci_low"], numbers["ci_high"]) == (
                    row.mean, row.interval.low, row.interval.high)
                if row.model == BASELINE:
                    assert numbers["diff"] is None and numbers["shared_samples"] == row.n
                    continue
                diff = row.versus.difference
                assert (numbers["diff"], numbers["diff_ci_low"], numbers["diff_ci_high"]) == (diff.estimate, diff.low,
                                                                                              diff.high)
                assert (numbers["win_rate"], numbers["p_holm"]) == (row.versus.win_rate.estimate, row.versus.p_holm)
                assert numbers["shared_samples"] == diff.n_samples
        alt = result["models"]["tiny-sd15-alt"]
        assert (alt["n"], alt["shared_samples"], result["models"][BASELINE]["n"]) == (8, 7, 7)
    assert exported["notes"] == report.notes and any("7 (prompt, seed) samples" in n for n in report.notes)


def test_config_holds_the_runs_provenance(report, store):
    config = export_json(report)["config"]
    with sqlite3.connect(store) as db:
        runs = db.execute("SELECT run_id, config, versions, git_commit FROM runs").fetchall()
    db.close()
    assert [r["run_id"] for r in config["runs"]] == [r[0] for r in runs]
    assert config["runs"][0]["config"] == json.loads(runs[0][1])
    assert config["runs"][0]["versions"] == json.loads(runs[0][2])
    assert config["versions"]["torch"] == [json.loads(runs[0][2])["torch"]]
    assert (config["store"], config["command"], config["baseline"], config["by"]) == (
        str(store), report.command, BASELINE, "category")
    assert config["rpo_bench_version"] == report.version


def test_samples_are_the_stores_rows(report, store):
    exported = export_json(report)
    with sqlite3.connect(store) as db:
        stored = {(key, metric, version): (value, model, prompt, seed, sha, category)
                  for key, metric, version, value, model, prompt, seed, sha, category in db.execute(
                      "SELECT image_key, metric, metric_version, value, model, prompt, seed, image_sha256, category "
                      "FROM scored_samples")}
    db.close()
    for key, section in zip(section_keys(report), report.sections, strict=True):
        samples = exported["samples"][key]
        g = section.group
        for sample in samples:
            value, model, prompt, seed, sha, category = stored[(sample["image_key"], g.metric, g.metric_version)]
            assert (sample["score"], sample["model"], sample["seed"], sample["image_sha256"], sample["category"]) == (
                value, model, seed, sha, category)
            assert sample["prompt_sha256"] == hashlib.sha256(prompt.encode("utf-8")).hexdigest()
        order = [(s["model"], s["prompt_index"], s["seed"]) for s in samples]
        assert order == sorted(order) and len(set(order)) == len(order)
        for row in section.rows:
            if row.category is None:
                assert sum(s["model"] == row.model for s in samples) == row.n


def test_two_exports_are_byte_identical_and_round_trip(store):
    texts = [json.dumps(export_json(build_report(store, baseline=BASELINE, by="category")), indent=1, sort_keys=True)
             for _ in range(2)]
    assert texts[0] == texts[1]
    assert "NaN" not in texts[0]
    assert json.loads(texts[0]) == export_json(build_report(store, baseline=BASELINE, by="category"))


def _check_csv(text: str, report) -> None:
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(CSV_COLUMNS)
    expected = [(s, category, r) for s in report.sections for category, rows_ in s.tables() for r in rows_]
    assert len(rows) == len(expected)
    for got, (section, category, row) in zip(rows, expected, strict=True):
        g = section.group
        assert (got["prompt_set"], got["protocol"], got["metric"], got["metric_version"], got["model"]) == (
            g.prompt_set, g.protocol, g.metric, g.metric_version, row.model)
        assert got["category"] == ("all" if category is None else category)
        assert int(got["n"]) == row.n and got["baseline"] == report.baseline
        assert (float(got["mean"]), float(got["ci_low"]), float(got["ci_high"])) == (
            row.mean, row.interval.low, row.interval.high)
        if row.model == report.baseline:
            assert got["diff"] == got["win_rate"] == got["p_holm"] == ""
        else:
            diff = row.versus.difference
            assert (float(got["diff"]), float(got["diff_ci_low"]), float(got["diff_ci_high"])) == (
                diff.estimate, diff.low, diff.high)
            assert (float(got["win_rate"]), float(got["p_holm"])) == (row.versus.win_rate.estimate,
                                                                      row.versus.p_holm)
    keys = [(r["prompt_set"], r["protocol"], r["metric"], r["metric_version"], r["category"], r["model"])
            for r in rows]
    assert len(set(keys)) == len(keys)  # one row per (section, category, model)


def test_csv_reads_back_to_the_same_numbers(report):
    _check_csv(export_csv(report), report)


def test_a_model_name_with_a_comma_survives_the_csv(store, tmp_path):
    copy = tmp_path / "copy.sqlite"
    with sqlite3.connect(store) as source, sqlite3.connect(copy) as target:
        source.backup(target)
        target.execute("UPDATE samples SET model = ? WHERE model = 'tiny-sd15-alt'", (COMMA_MODEL,))
    source.close()
    target.close()
    renamed = build_report(copy, baseline=BASELINE, by="category")
    text = export_csv(renamed)
    _check_csv(text, renamed)
    assert sum(r["model"] == COMMA_MODEL for r in csv.DictReader(io.StringIO(text))) == 3  # all + 2 categories
    exported = export_json(renamed)
    assert {s["model"] for samples in exported["samples"].values() for s in samples} == {BASELINE, COMMA_MODEL}
