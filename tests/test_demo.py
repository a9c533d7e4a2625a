"""`rpo-bench demo --quick`: the micro world end to end (pairs, SFT/DPO/RPO, held-out evaluation, the report in
every format), as a user runs it; and what a rerun reuses."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time

import pytest

from rpo_bench.cli import main


@pytest.fixture(scope="module")
def quick_demo(session_home):
    out = session_home / "demo" / "micro-quick"  # the default folder: the command exactly as the README shows it
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("RPO_BENCH_HOME", str(session_home))
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            code = main(["demo", "--quick"])
        seconds = time.perf_counter() - started
    return out, code, seconds, printed.getvalue()


@pytest.mark.slow
def test_quick_demo_trains_every_method_and_reports(quick_demo, capsys):
    out, code, _seconds, printed = quick_demo
    assert code == 0
    lines = [line for line in printed.splitlines() if line.strip()]
    # a smoke run says so before anything else and again under its results, naming the full demo
    assert lines[0].startswith("smoke run (--quick)") and "not evidence" in lines[0] and lines[-1] == lines[0]
    assert lines[0].endswith("The full demo: rpo-bench demo")
    for method in ("sft", "dpo", "rpo"):
        assert (out / f"{method}-seed0" / "rpo_bench.json").is_file()
    comparison = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    rows: dict[str, dict] = {}
    for row in comparison["rows"]:
        rows.setdefault(row["model"], row)  # each method against micro-base comes before RPO vs DPO
    assert {"sft", "dpo", "rpo"} <= set(rows) and rows["rpo"]["versus"] == "micro-base"
    assert rows["rpo"]["mean"]["n"] == 27 * 2  # the strided held-out prompts x 2 seeds
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| rpo-seed0 |" in report and "(baseline)" in report  # run names relative to the demo's folder
    assert str(out) not in report.split("- reproduce:")[0]
    assert report.rstrip().endswith(f"`rpo-bench demo --quick --train-seeds 0 --out {out}`")
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "rpo-seed0" in page and "data:image/png;base64," in page
    exported = json.loads((out / "results.json").read_text(encoding="utf-8"))
    (section,) = exported["results"].values()
    assert section["models"]["rpo-seed0"]["n"] == 27 * 2
    table = list(csv.DictReader(io.StringIO((out / "results.csv").read_text(encoding="utf-8"))))
    assert {row["model"] for row in table} == {"micro-base", "sft-seed0", "dpo-seed0", "rpo-seed0"}
    assert (out / "grid.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_a_rerun_reuses_the_runs_and_gives_the_same_report(quick_demo, capsys):
    out, code, seconds, _printed = quick_demo
    assert code == 0
    before = {name: (out / name).read_bytes() for name in ("comparison.json", "results.json", "results.csv")}
    stamps = {m: (out / f"{m}-seed0" / "rpo_bench.json").stat().st_mtime_ns for m in ("sft", "dpo", "rpo")}
    capsys.readouterr()
    started = time.perf_counter()
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert time.perf_counter() - started < seconds  # nothing retrained or regenerated
    assert stamps == {m: (out / f"{m}-seed0" / "rpo_bench.json").stat().st_mtime_ns for m in stamps}
    assert before == {name: (out / name).read_bytes() for name in before}
    printed = capsys.readouterr().out
    assert "| rpo | dpo |" in printed and f"report.html: {out / 'report.html'}" in printed
