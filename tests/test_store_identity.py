"""E9: no result is ever attributed to the wrong prompt, prompt set or model; numbers that are not numbers are
refused where they are made and never ranked; a store of the first schema is migrated, not misread.

The evaluations use the tiny SD1.5 models (random weights, the real pipeline) under the `tiny` protocol, scored
by tiny-clip, so each takes seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from rpo_bench.cli import main
from rpo_bench.core.errors import BadInputError, RpoBenchError
from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate
from rpo_bench.evaluation.store import ResultsStore
from rpo_bench.metrics import METRICS
from rpo_bench.metrics.base import Metric
from rpo_bench.reporting.csv_export import export_csv
from rpo_bench.reporting.json_export import export_json, export_json_text, section_keys
from rpo_bench.reporting.markdown import render_markdown
from rpo_bench.reporting.report import build_report

PROMPTS_X = [("a red cat", "x-first"), ("a blue dog", "x-first"), ("a green bird", "x-second")]
PROMPTS_Y = [("a green bird", "y-only"), ("a yellow fish", "y-only")]  # shares "a green bird" with X
PROMPTS_Z = [("a purple cow", "z"), ("a white horse", "z")]


def _write_prompts(path: Path, prompts: Sequence[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"prompt": p, "category": c}) + "\n" for p, c in prompts), encoding="utf-8")
    return path


def _config(root: Path, prompts: Path | str, models: Sequence[str] = ("tiny-sd15",),
            metrics: Sequence[str] = ("tiny-clip",), seeds: Sequence[int] = (0, 1), **options) -> EvaluateConfig:
    return EvaluateConfig(models=tuple(models), prompts=str(prompts), metrics=tuple(metrics), seeds=tuple(seeds),
                          protocol="tiny", store=root / "r.sqlite", image_cache=root / "images", show_progress=False,
                          **options)


def _section(report, prompt_set: str, metric: str = "tiny-clip"):
    found = [s for s in report.sections if s.group.prompt_set == prompt_set and s.group.metric == metric]
    assert len(found) == 1, [s.group.prompt_set for s in report.sections]
    return found[0]


def _same_numbers(evaluated, reported) -> None:
    """Rows of evaluate's closing table against the report's rows: equal to the last bit."""
    mine = {(r.model, r.category): r for r in evaluated}
    theirs = {(r.model, r.category): r for r in reported}
    assert set(mine) == set(theirs)
    for key, row in mine.items():
        other = theirs[key]
        assert (row.n, row.n_prompts, row.seeds_per_prompt) == (other.n, other.n_prompts, other.seeds_per_prompt)
        assert row.interval == other.interval
        assert row.versus == other.versus


def test_a_prompt_two_sets_share_is_reported_under_both_sets(tmp_path):
    x = _write_prompts(tmp_path / "X.jsonl", PROMPTS_X)
    y = _write_prompts(tmp_path / "Y.jsonl", PROMPTS_Y)
    evaluate(_config(tmp_path, x))
    result = evaluate(_config(tmp_path, y, by="category"))
    assert result.summary[0].samples == "2x2"  # evaluate summarises both prompts of Y ...
    report = build_report(tmp_path / "r.sqlite", by="category")
    section = _section(report, str(y))
    assert [(r.category, r.samples) for r in section.rows] == [(None, "2x2"), ("y-only", "2x2")]  # ... so does report
    _same_numbers(result.summary, section.rows)
    # the shared prompt keeps X's category in X's section
    x_section = _section(report, str(x))
    assert {r.category for r in x_section.rows} == {None, "x-first", "x-second"}


def test_two_prompt_files_with_the_same_name_in_two_folders_are_two_prompt_sets(tmp_path, monkeypatch):
    _write_prompts(tmp_path / "a" / "p.jsonl", PROMPTS_X)
    _write_prompts(tmp_path / "b" / "p.jsonl", PROMPTS_Z)
    for folder in ("a", "b"):
        monkeypatch.chdir(tmp_path / folder)
        evaluate(_config(tmp_path, "p.jsonl"))
    report = build_report(tmp_path / "r.sqlite")
    sections = [s for s in report.sections if s.group.metric == "tiny-clip"]
    assert len(sections) == 2  # never one section holding both files' prompts
    assert sorted(s.rows[0].samples for s in sections) == ["2x2", "3x2"]
    assert all(s.group.prompt_set.startswith("p.jsonl #") for s in sections)  # told apart by their identity
    assert len({s.group.prompt_set for s in sections}) == 2


def test_report_export_and_evaluate_agree_number_for_number(tmp_path, monkeypatch):
    """The acceptance case: a base model under two prompt sets that share prompts, then a comparison under a third
    set whose file has the same name as the first in another folder."""
    x = _write_prompts(tmp_path / "X.jsonl", PROMPTS_X)
    y = _write_prompts(tmp_path / "Y.jsonl", PROMPTS_Y)
    z = _write_prompts(tmp_path / "other" / "X.jsonl", PROMPTS_Z + PROMPTS_X[:1])
    models = ("tiny-sd15", "tiny-sd15-alt")
    results = {}
    for prompts, chosen in ((x, models[:1]), (y, models[:1]), (z, models)):
        monkeypatch.chdir(prompts.parent)
        results[prompts] = evaluate(_config(tmp_path, prompts.name, models=chosen, by="category"))
    report = build_report(tmp_path / "r.sqlite", baseline="tiny-sd15", by="category")
    exported = export_json(report)
    by_key = dict(zip(section_keys(report), report.sections, strict=True))
    for prompts, result in results.items():
        labels = {s.group.prompt_set for s in report.sections if s.group.prompt_set.startswith(prompts.name)}
        assert len(labels) == 1 or prompts.name == "X.jsonl"
        section = next(s for s in report.sections if s.group.prompt_set_id
                       == _prompt_set_id(prompts) and s.group.metric == "tiny-clip")
        _same_numbers(result.summary, section.rows)
        key = next(k for k, s in by_key.items() if s is section)
        for row in result.summary:
            if row.category is None:
                numbers = exported["results"][key]["models"][row.model]
            else:
                numbers = exported["results"][key]["categories"][row.category][row.model]
            assert (numbers["n"], numbers["mean"], numbers["ci_low"], numbers["ci_high"]) == (
                row.n, row.mean, row.interval.low, row.interval.high)
            if row.versus is not None:
                assert numbers["diff"] == row.versus.difference.estimate
        samples = exported["samples"][key]
        assert len(samples) == sum(r.n for r in result.summary if r.category is None)


def _prompt_set_id(path: Path) -> str:
    from rpo_bench.evaluation.prompts import load_prompt_set

    return load_prompt_set(str(path)).identity


def test_an_alias_with_the_same_weights_is_reported_beside_the_model(tmp_path, rpo_home):
    (rpo_home / "registry.toml").write_text('[models.tiny-twin]\nfamily = "sd15"\ntiny = "tiny-sd15"\nseed = 0\n'
                                            'protocol = "tiny"\n', encoding="utf-8")
    x = _write_prompts(tmp_path / "X.jsonl", PROMPTS_X[:2])
    result = evaluate(_config(tmp_path, x, models=("tiny-sd15", "tiny-twin")))
    assert result.generated == 4 and result.scored == {"tiny-clip": 4}  # one image per (prompt, seed), scored once
    report = build_report(tmp_path / "r.sqlite")
    rows = {r.model: r for r in _section(report, str(x)).rows}
    assert set(rows) == {"tiny-sd15", "tiny-twin"}  # the alias does not vanish
    assert rows["tiny-sd15"].interval == rows["tiny-twin"].interval
    _same_numbers(result.summary, _section(report, str(x)).rows)
    (rpo_home / "registry.toml").unlink()


def test_an_edited_cached_png_is_regenerated_before_a_new_metric_scores_it(tmp_path):
    """A valid PNG whose bytes no longer match its sha256 name is never scored: adding a metric later first
    regenerates it, so the new metric scores the image the key stands for."""
    from PIL import Image

    from rpo_bench.evaluation.image_cache import ImageCache

    x = _write_prompts(tmp_path / "X.jsonl", PROMPTS_X[:1])
    evaluate(_config(tmp_path, x, seeds=(0,)))
    with ResultsStore(tmp_path / "r.sqlite") as store:
        (row,) = store.image_rows(list(store.existing_images(_keys(tmp_path))))
    cache = ImageCache(tmp_path / "images")
    path = cache.object_path(row["image_sha256"])
    cache.close()
    Image.new("RGB", (64, 64), (255, 0, 255)).save(path, format="PNG")  # a valid image, other bytes
    both = evaluate(_config(tmp_path, x, seeds=(0,), metrics=("tiny-clip", "tiny-clip:1")))
    assert both.rebuilt == 1
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    expected = evaluate(_config(fresh, x, seeds=(0,), metrics=("tiny-clip:1",)))
    assert both.tables[1].scores == expected.tables[0].scores


def _keys(root: Path) -> list[str]:
    return [k for (k,) in sqlite3.connect(root / "r.sqlite").execute("SELECT image_key FROM images")]


# -- numbers that are numbers ---------------------------------------------------------------------------------------
class NanAfterFirstBatch(Metric):
    """A scorer whose second batch gives NaN: what a broken checkpoint or an fp16 overflow produces."""

    name = "e9-nan"
    calls = 0
    bad: object = math.nan

    @property
    def version(self) -> str:
        return "1"

    def load(self, device, dtype) -> None:
        type(self).calls = 0

    def score(self, images, prompts) -> list[float]:
        type(self).calls += 1
        value = type(self).bad if type(self).calls == 2 else 0.5
        return [value] * len(images)


@pytest.fixture
def nan_metric():
    # registered as a plug-in is: the autouse home fixture forgets it after the test
    METRICS.register("e9-nan", f"{__name__}:NanAfterFirstBatch", summary="test scorer that gives NaN",
                     source="entry point tests")
    return "e9-nan"


@pytest.mark.parametrize("bad", [math.nan, math.inf, "n/a"], ids=["nan", "inf", "text"])
def test_a_metric_returning_nan_is_refused_naming_metric_image_and_value_and_keeps_earlier_batches(tmp_path,
                                                                                                    nan_metric, bad):
    x = _write_prompts(tmp_path / "X.jsonl", PROMPTS_X)
    NanAfterFirstBatch.bad = bad
    with pytest.raises(RpoBenchError, match=rf"metric e9-nan scored {re.escape(repr(bad))} for image [0-9a-f]{{16}} "
                                            r"\(prompt .*not a finite number"):
        evaluate(_config(tmp_path, x, metrics=(nan_metric,), batch_size=2))
    stored = sqlite3.connect(tmp_path / "r.sqlite").execute("SELECT value FROM scores").fetchall()
    assert stored == [(0.5,), (0.5,)]  # the first batch is kept, nothing of the bad one


def _store_with_values(tmp_path: Path, values: list) -> Path:
    x = _write_prompts(tmp_path / "X.jsonl", PROMPTS_X)
    evaluate(_config(tmp_path, x, models=("tiny-sd15", "tiny-sd15-alt"), seeds=(0,)))
    db = sqlite3.connect(tmp_path / "r.sqlite")
    keys = [k for (k,) in db.execute("SELECT image_key FROM scored_samples WHERE model = 'tiny-sd15-alt' "
                                     "ORDER BY prompt_index")]
    for key, value in zip(keys, values, strict=False):
        db.execute("UPDATE scores SET value = ? WHERE image_key = ?", (value, key))
    db.commit()
    db.close()
    return tmp_path / "r.sqlite"


@pytest.mark.parametrize("bad", [math.inf, "high"], ids=["inf", "text"])
def test_a_stored_value_that_is_not_a_number_is_left_out_with_a_note_and_never_ranked(tmp_path, bad):
    store = _store_with_values(tmp_path, [bad])
    report = build_report(store, baseline="tiny-sd15")
    rows = {r.model: r for r in report.sections[0].rows}
    assert rows["tiny-sd15-alt"].n == 2 and math.isfinite(rows["tiny-sd15-alt"].mean)
    assert any("not finite numbers" in note and "tiny-sd15-alt" in note for note in report.notes)
    text = export_json_text(report)
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the JSON export"))
    assert "not finite numbers" in render_markdown(report)


def test_json_export_is_strict_json_with_null_for_non_finite_numbers(tmp_path):
    store = _store_with_values(tmp_path, [])
    report = build_report(store, baseline="tiny-sd15")
    row = report.sections[0].rows[1]
    row.interval = dataclasses.replace(row.interval, low=-math.inf)  # a number the statistics could not give
    text = export_json_text(report)
    data = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the JSON export"))
    assert any("written as null" in note for note in data["notes"])


# -- outputs escaped for their format -------------------------------------------------------------------------------
def _renamed_store(tmp_path: Path, name: str) -> Path:
    x = _write_prompts(tmp_path / "X.jsonl", PROMPTS_X[:2])
    evaluate(_config(tmp_path, x, models=("tiny-sd15", "tiny-sd15-alt"), seeds=(0,)))
    with sqlite3.connect(tmp_path / "r.sqlite") as db:
        db.execute("UPDATE samples SET model = ? WHERE model = 'tiny-sd15-alt'", (name,))
        db.execute("UPDATE samples SET category = ?", (name,))
    return tmp_path / "r.sqlite"


@pytest.mark.parametrize("name", ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)"])
def test_csv_cells_that_spreadsheets_would_run_are_prefixed(tmp_path, name):
    import csv
    import io

    report = build_report(_renamed_store(tmp_path, name), baseline="tiny-sd15", by="category")
    rows = list(csv.DictReader(io.StringIO(export_csv(report))))
    assert {row["model"] for row in rows} == {"tiny-sd15", "'" + name}
    assert all(row["category"] in ("all", "'" + name) for row in rows)
    assert any(row["diff"].startswith("-") or row["diff"] for row in rows)  # numbers stay numbers


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>"])
def test_markdown_escapes_html_from_the_store(tmp_path, name):
    text = render_markdown(build_report(_renamed_store(tmp_path, name), baseline="tiny-sd15"))
    assert "<script" not in text and "<img" not in text
    assert "&lt;script&gt;" in text or "&lt;img" in text


def test_a_label_with_a_newline_is_refused_in_one_line(tmp_path, capsys):
    store = _renamed_store(tmp_path, "tiny-sd15-alt")
    assert main(["report", "--store", str(store), "--label", "tiny-sd15-alt=two\n## lines"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --label") and "single-line" in err and len(err.splitlines()) == 1


# -- stores of the first schema -------------------------------------------------------------------------------------
SCHEMA_1 = """
CREATE TABLE runs (run_id TEXT PRIMARY KEY, created_at REAL NOT NULL, updated_at REAL NOT NULL, config TEXT NOT NULL,
    versions TEXT NOT NULL, git_commit TEXT);
CREATE TABLE images (image_key TEXT PRIMARY KEY, model TEXT NOT NULL, model_fingerprint TEXT NOT NULL,
    protocol TEXT NOT NULL, protocol_fingerprint TEXT NOT NULL, protocol_settings TEXT NOT NULL, dtype TEXT NOT NULL,
    prompt_set TEXT NOT NULL, prompt_index INTEGER NOT NULL, category TEXT NOT NULL, prompt TEXT NOT NULL,
    seed INTEGER NOT NULL, image_sha256 TEXT NOT NULL, run_id TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE scores (image_key TEXT NOT NULL REFERENCES images(image_key), metric TEXT NOT NULL,
    metric_version TEXT NOT NULL, value REAL NOT NULL, model TEXT NOT NULL, protocol_fingerprint TEXT NOT NULL,
    run_id TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (image_key, metric, metric_version));
"""  # the schema rpo-bench wrote up to c1f45d9


def _schema_1_store(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_1)
    config = {"models": [{"name": "m1"}, {"name": "m2"}], "prompt_set": {"name": "smoke", "fingerprint": "f" * 64,
                                                                         "size": 2}}
    db.execute("INSERT INTO runs VALUES ('run1', 1, 1, ?, '{\"torch\": \"2\"}', NULL)", (json.dumps(config),))
    for i, (model, prompt, value) in enumerate([("m1", 0, 0.25), ("m1", 1, 0.5), ("m2", 0, 0.75), ("m2", 1, 1.0)]):
        db.execute("INSERT INTO images VALUES (?, ?, ?, 'tiny', 'pfp', '{}', 'float32', 'smoke', ?, 'c', ?, 0, ?, "
                   "'run1', ?)", (f"k{i}", model, f"fp-{model}", prompt, f"prompt {prompt}", "a" * 64, i))
        db.execute("INSERT INTO scores VALUES (?, 'tiny-clip', '1', ?, ?, 'pfp', 'run1', ?)",
                   (f"k{i}", value, model, i))
    db.commit()
    db.close()
    return path


def test_a_schema_1_store_is_migrated_in_place_with_a_backup(tmp_path):
    store = _schema_1_store(tmp_path / "old.sqlite")
    ResultsStore(store).close()
    backup = tmp_path / "old.schema1-backup.sqlite"
    assert backup.is_file()
    with contextlib.closing(sqlite3.connect(backup)) as db:
        old_tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert old_tables == {"runs", "images", "scores"}  # the backup is the old file, whole
    report = build_report(store, baseline="m1")
    rows = {r.model: r for r in report.sections[0].rows}
    assert (rows["m1"].mean, rows["m2"].mean) == (0.375, 0.875)
    assert report.sections[0].group.prompt_set == "smoke"
    ResultsStore(store).close()  # a second open finds nothing to migrate
    assert sorted(p.name for p in tmp_path.iterdir() if "backup" in p.name and not p.name.endswith(("-wal", "-shm"))
                  ) == [backup.name]


def test_report_refuses_a_schema_1_store_with_the_command_that_migrates_it(tmp_path, capsys):
    store = _schema_1_store(tmp_path / "old.sqlite")
    before = store.read_bytes()
    assert main(["report", "--store", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"rpo-bench store migrate {store}" in err and len(err.splitlines()) == 1
    assert store.read_bytes() == before  # a report never migrates
    assert main(["store", "migrate", str(store)]) == 0
    assert "migrated; the old file is kept as" in capsys.readouterr().out
    assert main(["report", "--store", str(store)]) == 0


def test_store_migrate_of_a_missing_file_is_one_line(tmp_path, capsys):
    assert main(["store", "migrate", str(tmp_path / "none.sqlite")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "none.sqlite").exists()
    with pytest.raises(BadInputError):
        from rpo_bench.evaluation.store import migrate_store

        migrate_store(tmp_path / "none.sqlite")
