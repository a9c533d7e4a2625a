"""`rpo-bench report`: sections split by protocol and metric version (never one averaged cell), numbers equal to
summarise_tables on the same scores, the shared-sample note, the provenance footer, and --out."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from rpo_bench.cli import main
from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate
from rpo_bench.evaluation.store import ResultsStore
from rpo_bench.evaluation.summary import summarise_tables
from rpo_bench.reporting.markdown import report_markdown
from rpo_bench.reporting.report import load_tables

MODELS = ("tiny-sd15", "tiny-sd15-alt")
PROMPTS = [("a red apple on a table", "seen"), ("a cat on a windowsill", "unseen"), ("a lighthouse at dusk", "seen"),
           ("a bowl of ramen", "unseen")]
OTHER_VERSION = "other-weights"


@pytest.fixture(scope="module")
def store(tmp_path_factory, session_home) -> Path:
    """Two tiny models x 4 prompts x 2 seeds under protocol tiny, again under protocol micro; a second version of
    tiny-clip on the tiny images; the baseline's tiny-protocol scores of prompt 0 removed."""
    root = tmp_path_factory.mktemp("report")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "category": c}) + "\n" for p, c in PROMPTS), encoding="utf-8")
    path = root / "r.sqlite"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("RPO_BENCH_HOME", str(session_home))
        for protocol in ("tiny", "micro"):
            evaluate(EvaluateConfig(models=MODELS, prompts=str(prompts), metrics=("tiny-clip",), seeds=(0, 1),
                                    protocol=protocol, store=path, image_cache=root / "images", show_progress=False))
    db = sqlite3.connect(path)
    rows = db.execute("SELECT s.image_key, s.value, s.run_id FROM scores s JOIN images i USING (image_key) "
                      "WHERE i.protocol = 'tiny'").fetchall()
    db.execute("DELETE FROM scores WHERE image_key IN (SELECT image_key FROM scored_samples WHERE protocol = 'tiny' "
               "AND model = 'tiny-sd15' AND prompt_index = 0)")
    db.commit()
    db.close()
    results = ResultsStore(path)
    results.add_scores("tiny-clip", OTHER_VERSION, rows[0][2], [(key, value + 1.0) for key, value, _ in rows])
    results.close()
    return path


def _sections(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("## ") and "·" in line]


def _table_rows(text: str, header: str) -> dict[str, list[str]]:
    """{model: cells} of the first table after the section header line `header`."""
    lines = text.splitlines()
    start = lines.index(header)
    rows: dict[str, list[str]] = {}
    for line in lines[start + 1:]:
        if line.startswith("## ") or line.startswith("### reported"):
            break
        if line.startswith("| ") and not line.startswith("| model"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows.setdefault(cells[0], cells)
    return rows


def test_sections_split_by_protocol_and_metric_version(store):
    groups = load_tables(store)
    keys = {(g.protocol, g.metric, g.metric_version) for g in groups}
    assert len(groups) == len(keys) == 3
    assert {(p, v == OTHER_VERSION) for p, _m, v in keys} == {("tiny", False), ("micro", False), ("tiny", True)}
    for group in groups:  # no table mixes protocols or versions
        assert {t.protocol for t in group.tables} == {group.protocol}
        assert sorted(group.models) == sorted(MODELS)
    text = report_markdown(store, baseline="tiny-sd15")
    sections = _sections(text)
    assert len(sections) == 3
    assert sum("protocol tiny" in s for s in sections) == 2 and sum("protocol micro" in s for s in sections) == 1
    assert sum(f"version {OTHER_VERSION}" in s for s in sections) == 1
    assert "one per protocol / metric version" in text


def test_numbers_equal_summarise_tables_and_the_shared_sample_note(store):
    text = report_markdown(store, baseline="tiny-sd15")
    for group in load_tables(store):
        rows = {r.model: r for r in summarise_tables(group.tables, "tiny-sd15")}
        header = next(s for s in _sections(text) if f"version {group.metric_version})" in s
                      and f"protocol {group.protocol} " in s)
        cells = _table_rows(text, header)
        for model, row in rows.items():
            assert cells[model][2] == f"{row.mean:.3f} [{row.interval.low:.3f}, {row.interval.high:.3f}]"
            if model != "tiny-sd15":
                assert cells[model][4] == row.versus.difference.format(3)
                assert cells[model][5] == f"{100 * row.versus.win_rate.estimate:.0f}%"
        alt = rows["tiny-sd15-alt"]
        if group.protocol == "tiny" and group.metric_version != OTHER_VERSION:
            assert (alt.versus.difference.n_samples, alt.n, alt.baseline_n) == (6, 8, 6)
            assert "compared on the 6 (prompt, seed) samples both have, of 8 and 6" in text
        else:
            assert alt.versus.difference.n_samples == 8
    assert text.count("samples both have, of") == 1


def test_provenance_footer_names_version_commit_libraries_and_command(store):
    text = report_markdown(store, baseline="tiny-sd15")
    recorded = sqlite3.connect(store).execute("SELECT git_commit, versions FROM runs").fetchall()
    footer = text[text.index("## Provenance"):]
    assert "rpo-bench 0.1.0" in footer or "report made by rpo-bench" in footer
    for commit, versions in recorded:
        assert (commit or "unknown") in footer
        assert json.loads(versions)["torch"] in footer
    assert f"rpo-bench report --store {store} --baseline tiny-sd15 --markdown" in footer


def test_cli_prints_and_writes_the_same_report(store, tmp_path, capsys):
    assert main(["report", "--store", str(store), "--baseline", "tiny-sd15"]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "report.md"
    assert main(["report", "--store", str(store), "--baseline", "tiny-sd15", "--markdown", "--out", str(out)]) == 0
    written = out.read_text(encoding="utf-8")
    strip = lambda t: [line for line in t.splitlines() if not line.startswith("- reproduce:")]  # noqa: E731
    assert strip(written) == strip(printed)
    assert f"--out {out}" in written
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]  # no temporary file left
    assert not [p.name for p in store.parent.iterdir() if p.name.startswith(f"{store.name}-")]  # no -wal / -shm


def test_metrics_filter_and_by_category(store):
    text = report_markdown(store, baseline="tiny-sd15-alt", by="category", metrics="tiny-clip")
    assert "### category seen" in text and "### category unseen" in text
    assert "(baseline)" in text


def _copy_store(store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy.sqlite"
    with sqlite3.connect(store) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    return copy


def test_published_numbers_are_reported_rows_apart_from_measured_ones(store, tmp_path):
    """Scores made under the setting of METHOD.md's published table get its numbers as "reported" rows, in a
    table of their own: never ranked with, or compared to, the measured models."""
    copy = _copy_store(store, tmp_path)
    with sqlite3.connect(copy) as db:
        db.execute("UPDATE prompt_sets SET name = 'pickapic-val'")
        db.execute("UPDATE images SET protocol = 'spo-ddim20' WHERE protocol = 'tiny'")
        db.execute("UPDATE scores SET metric = 'hpsv2' WHERE metric = 'tiny-clip'")
    text = report_markdown(copy, baseline="tiny-sd15")
    measured = next(s for s in _sections(text) if "protocol spo-ddim20" in s)
    part = text[text.index(measured):]
    part = part[:part.index("\n## ", 1)]
    assert "### reported (published numbers, not measured here" in part
    assert "| SD1.5 Diffusion-DPO | 25.05 | SPO paper (arXiv 2406.04314), Table 1 |" in part
    ranked = _table_rows(text, measured)
    assert set(ranked) == set(MODELS)  # no published model among the ranked rows
    other = next(s for s in _sections(text) if "protocol micro" in s)
    other_part = text[text.index(other):]
    assert "SD1.5" not in other_part[:other_part.index("\n## ", 1)]  # another protocol: no published numbers


def test_style_section_pairs_style_gained_with_content_kept(store, tmp_path):
    copy = _copy_store(store, tmp_path)
    with sqlite3.connect(copy) as db:  # a style metric beside the content metric, on the same images
        db.execute("INSERT INTO scores SELECT image_key, 'style-prob:demo', metric_version, 0.5 * value, run_id, "
                   "created_at FROM scores WHERE metric = 'tiny-clip' AND metric_version != ?", (OTHER_VERSION,))
    from rpo_bench.reporting.report import build_report
    from rpo_bench.reporting.style_section import style_comparisons, style_plot_png

    report = build_report(copy, baseline="tiny-sd15")
    comparisons = style_comparisons(report)
    assert {(c.protocol, c.style_metric, c.content_metric) for c in comparisons} == {
        ("tiny", "style-prob:demo", "tiny-clip"), ("micro", "style-prob:demo", "tiny-clip")}
    for comparison in comparisons:
        (point,) = comparison.points
        assert point.model == "tiny-sd15-alt"
        assert point.style_gained.estimate == pytest.approx(0.5 * point.content_kept.estimate)
    text = report_markdown(copy, baseline="tiny-sd15")
    assert text.count("## Style gained vs content kept") == 2
    assert style_plot_png(comparisons[0]).startswith(b"\x89PNG")
    from rpo_bench.reporting.html import render_html

    page = render_html(report, image_cache=tmp_path / "no-cache")
    assert page.count("<h2>Style gained vs content kept") == 2
    assert 'alt="style gained against content kept' in page
    assert "Style gained" not in report_markdown(store, baseline="tiny-sd15")  # no style metric: no section


def test_cli_writes_every_format(store, tmp_path, capsys):
    """--json / --csv / --html through the command line: the files a user gets, with the reproducing command."""
    import csv
    import io

    assert main(["report", "--store", str(store), "--baseline", "tiny-sd15", "--json", "--out",
                 str(tmp_path / "r.json")]) == 0
    exported = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert exported["config"]["command"].endswith(f"--json --out {tmp_path / 'r.json'}")
    assert len(exported["results"]) == 3 and set(exported["samples"]) == set(exported["results"])
    capsys.readouterr()
    assert main(["report", "--store", str(store), "--baseline", "tiny-sd15", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {row["model"] for row in rows} == set(MODELS) and len(rows) == 3 * len(MODELS)
    assert main(["report", "--store", str(store), "--html", "--out", str(tmp_path / "r.html"),
                 "--image-cache", str(store.parent / "images")]) == 0
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert '<td class="image"><img src="data:image/png;base64,' in page  # the cached images, in the grid table


def test_labels_rename_models_in_every_format_with_the_same_numbers(store, tmp_path, capsys):
    """--label NAME=LABEL: a run evaluated by folder path is shown by a short name; numbers, samples and the image
    grid are those of the store name, and --baseline takes either name."""
    plain = report_markdown(store, baseline="tiny-sd15")
    assert main(["report", "--store", str(store), "--label", "tiny-sd15=base", "--label", "tiny-sd15-alt=alt",
                 "--baseline", "tiny-sd15"]) == 0
    labelled = capsys.readouterr().out
    body, provenance = labelled.split("## Provenance")
    assert "tiny-sd15" not in body  # only the provenance names the store's own names
    assert "- model base is `tiny-sd15` in the store" in provenance
    header = _sections(plain)[0]
    for store_name, label in (("tiny-sd15", "base"), ("tiny-sd15-alt", "alt")):
        assert _table_rows(labelled, header)[label][1:] == _table_rows(plain, header)[store_name][1:]
    assert "--label tiny-sd15=base --label tiny-sd15-alt=alt --baseline tiny-sd15 --markdown" in labelled
    assert main(["report", "--store", str(store), "--label", "tiny-sd15-alt=alt", "--baseline", "alt", "--json",
                 "--out", str(tmp_path / "r.json")]) == 0
    exported = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert exported["config"]["labels"] == {"tiny-sd15-alt": "alt"} and exported["config"]["baseline"] == "alt"
    assert {s["model"] for samples in exported["samples"].values() for s in samples} == {"tiny-sd15", "alt"}
    assert main(["report", "--store", str(store), "--label", "tiny-sd15-alt=alt", "--html", "--out",
                 str(tmp_path / "r.html"), "--image-cache", str(store.parent / "images")]) == 0
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert '<td class="image"><img src="data:image/png;base64,' in page  # images found by store name


@pytest.mark.parametrize(("labels", "message"), [
    (["tiny-sd15"], "--label 'tiny-sd15'; accepted: NAME=LABEL"),
    (["nope=x"], "--label nope=x: 'nope' has no scores in"),
    (["tiny-sd15=a", "tiny-sd15=b"], "'tiny-sd15' is labelled twice"),
    (["tiny-sd15=tiny-sd15-alt"], "two models would be shown as 'tiny-sd15-alt'"),
])
def test_a_bad_label_is_one_line(store, labels, message, capsys):
    argv = ["report", "--store", str(store)]
    for label in labels:
        argv += ["--label", label]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
