"""`rpo-bench report` leads with what was asked last: the default store is evaluate's, the latest run's comparison
comes first (--run picks another), sections that compare nothing go to an appendix, folders are shown by short
unique names (full paths only in the provenance), compared tables get a differences chart, and the HTML image grid
is a table of every compared model with the prompts as escaped text."""

from __future__ import annotations

import html
import shutil
import sqlite3

import pytest

from rpo_bench.cli import main
from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate
from rpo_bench.models.location import tiny_models_dir
from rpo_bench.models.tiny import ensure_tiny_model
from rpo_bench.reporting.html import render_html
from rpo_bench.reporting.markdown import render_markdown
from rpo_bench.reporting.report import build_report, short_names

TRICKY = "a <b>bold</b> & red apple"  # a prompt that is HTML if not escaped
PROMPTS = [TRICKY, "a cat on a windowsill", "a bowl of ramen"]
EARLIER = ["a lighthouse at dusk", "a green tree"]


@pytest.fixture(scope="module")
def store(tmp_path_factory, session_home) -> dict:
    """Three evaluate runs into one store, oldest first:
    solo: tiny-sd15 alone under protocol micro (sections that compare nothing);
    pair: tiny-sd15-alt then tiny-sd15 on other prompts under protocol tiny;
    latest: tiny-sd15 and two copies of a pipeline folder, both called `run` (a/run, b/run), under tiny."""
    root = tmp_path_factory.mktemp("report-leads")
    prompts, earlier = root / "prompts.txt", root / "earlier.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    earlier.write_text("\n".join(EARLIER) + "\n", encoding="utf-8")
    path, cache = root / "r.sqlite", root / "images"
    runs = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("RPO_BENCH_HOME", str(session_home))
        folder = ensure_tiny_model("tiny-sd15", 1, tiny_models_dir())
        folders = [root / "a" / "run", root / "b" / "run"]
        for copy in folders:
            shutil.copytree(folder, copy)
        common = {"metrics": ("tiny-clip",), "seeds": (0,), "store": path, "image_cache": cache,
                  "show_progress": False}
        runs["solo"] = evaluate(EvaluateConfig(models=("tiny-sd15",), prompts=str(earlier), protocol="micro",
                                               **common)).run_id
        runs["pair"] = evaluate(EvaluateConfig(models=("tiny-sd15-alt", "tiny-sd15"), prompts=str(earlier),
                                               protocol="tiny", **common)).run_id
        runs["latest"] = evaluate(EvaluateConfig(models=("tiny-sd15", *map(str, folders)), prompts=str(prompts),
                                                 protocol="tiny", **common)).run_id
    return {"path": path, "cache": cache, "root": root, "folders": folders, "runs": runs}


@pytest.fixture(scope="module")
def report(store):
    return build_report(store["path"])


def _headings(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix) and "·" in line]


def test_report_without_store_reads_the_default_store(store, session_home, tmp_path, capsys):
    """No --store: the store evaluate writes by default ($RPO_BENCH_HOME/results.sqlite), here a copy of the
    fixture's store put there. A store already at that path (another test's default evaluate) is set aside and put
    back."""
    default = session_home / "results.sqlite"
    aside = {default.with_name(default.name + suffix): tmp_path / f"aside{suffix}" for suffix in ("", "-wal", "-shm")}
    for path, kept in aside.items():
        if path.exists():
            path.replace(kept)
    try:
        with sqlite3.connect(store["path"]) as source, sqlite3.connect(default) as target:
            source.backup(target)
        target.close()
        assert main(["report", "--markdown"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("# rpo-bench report: results.sqlite")
        assert f"rpo-bench report --store {default} --markdown" in out
        assert f"run {store['runs']['latest']}" in out
    finally:
        for path, kept in aside.items():
            path.unlink(missing_ok=True)
            if kept.exists():
                kept.replace(path)


def test_a_missing_default_store_says_to_run_evaluate_first(tmp_path, monkeypatch, capsys):
    home = tmp_path / "fresh-home"
    monkeypatch.setenv("RPO_BENCH_HOME", str(home))
    assert main(["report", "--markdown"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(home / "results.sqlite") in err and "run `rpo-bench evaluate` first" in err
    monkeypatch.chdir(tmp_path)  # `--store results.sqlite` is relative: a folder without one
    home.mkdir()
    (home / "results.sqlite").write_bytes(b"")  # a default store is there: a wrong --store is the likely mix-up
    assert main(["report", "--store", "results.sqlite"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "results store results.sqlite does not exist" in err and f"default store {home / 'results.sqlite'}" in err
    assert "leave out --store" in err


def test_the_latest_comparison_comes_first_and_single_model_sections_are_in_the_appendix(store, report):
    runs = store["runs"]
    assert report.run.run_id == runs["latest"]
    assert report.baseline == "tiny-sd15"  # the latest run's first model, as evaluate compared them
    first = report.main_sections[0]
    assert first.lead and runs["latest"] in first.runs and first.group.prompt_set.endswith("/prompts.txt")
    assert first.group.models == ["tiny-sd15", "a/run", "b/run"]  # in the order evaluate was given them
    assert [s.group.prompt_set.rsplit("/", 1)[-1] for s in report.main_sections] == ["prompts.txt", "earlier.txt"]
    (alone,) = report.appendix
    assert alone.group.protocol == "micro" and alone.group.models == ["tiny-sd15"] and not alone.compared

    text = render_markdown(report)
    body, appendix = text.split("## Appendix: single-model sections")
    assert [h.split(" · ")[1] for h in _headings(body, "## ")] == ["protocol tiny", "protocol tiny"]
    assert _headings(body, "## ")[0].endswith("/prompts.txt")
    assert appendix.index("### tiny-clip") < appendix.index("## Provenance")
    assert [h.split(" · ")[1] for h in _headings(appendix, "### ")] == ["protocol micro"]

    page = render_html(report, image_cache=store["cache"])
    details = page[page.index('<details class="appendix">'):page.index("</details>")]
    assert "<summary>Appendix: single-model sections (1)</summary>" in details
    assert html.escape(alone.title) in details and html.escape(first.title) not in details
    lead, images = page.index(html.escape(first.title)), page.index("<h2>Images</h2>")
    assert lead < images < page.index(html.escape(report.main_sections[1].title))


def test_run_picks_the_evaluation_that_leads(store, capsys):
    pair = store["runs"]["pair"]
    chosen = build_report(store["path"], run=pair[:6])
    assert chosen.run.run_id == pair and chosen.baseline == "tiny-sd15-alt"
    assert chosen.main_sections[0].group.prompt_set.endswith("/earlier.txt") and chosen.main_sections[0].lead
    assert "--run " + pair[:6] in chosen.command
    assert main(["report", "--store", str(store["path"]), "--run", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "--run 'nope': no run of this id" in err and all(run in err for run in store["runs"].values())


def test_folders_are_shown_by_short_unique_names_with_full_paths_in_the_provenance(store, report):
    a, b = (str(folder) for folder in store["folders"])
    assert report.models[:3] == ["tiny-sd15", "a/run", "b/run"]
    assert report.labels == {a: "a/run", b: "b/run"}
    text = render_markdown(report)
    body, provenance = text.split("## Provenance")
    assert a not in body and b not in body
    assert f"- model a/run is `{a}` in the store" in provenance and f"`{b}`" in provenance
    page = render_html(report, image_cache=store["cache"])
    footer = page[page.index("<footer>"):]
    assert f"<code>{html.escape(a)}</code>" in footer
    assert html.escape(a) not in page[:page.index("<footer>")]


def test_short_names_take_a_registered_name_else_the_folder_name_made_unique(tmp_path, monkeypatch):
    from rpo_bench.core.registry import reset_all_user_entries
    from rpo_bench.training.output import register_model

    monkeypatch.setenv("RPO_BENCH_HOME", str(tmp_path / "home"))  # the user registry of a home of its own
    reset_all_user_entries()
    trained = tmp_path / "runs" / "rpo-seed0"
    register_model("my-rpo", {"family": "sd15", "tiny": "tiny-sd15", "seed": 0, "unet_repo": str(trained),
                              "unet_subfolder": "unet"})
    names = [str(trained), "/x/one/dpo-seed0", "/y/two/dpo-seed0", "/z/sft-seed0", "/w/micro-base", "micro-base"]
    assert short_names(names) == {str(trained): "my-rpo", "/x/one/dpo-seed0": "one/dpo-seed0",
                                  "/y/two/dpo-seed0": "two/dpo-seed0", "/z/sft-seed0": "sft-seed0",
                                  "/w/micro-base": "w/micro-base"}  # not shown like the registry's micro-base
    assert short_names(["/z/sft-seed0"], taken=["sft-seed0"]) == {"/z/sft-seed0": "z/sft-seed0"}  # a --label
    assert short_names(["micro-base", "tiny-sd15"]) == {}


def test_the_grid_is_a_table_of_every_compared_model_with_escaped_prompts(store, report):
    page = render_html(report, image_cache=store["cache"])
    grid = page[page.index('<table class="grid">'):]
    grid = grid[:grid.index("</table>")]
    header = grid[:grid.index("</thead>")]
    for model in ("tiny-sd15", "a/run", "b/run"):
        assert f'<th class="model">{model}</th>' in header
    assert f'<td class="prompt">{html.escape(TRICKY)}</td>' in grid and TRICKY not in page
    assert grid.count('<img src="data:image/png;base64,') == len(PROMPTS) * 3  # no cell missing
    # the earlier pair's tiny-sd15-alt is compared too: a grid of its own section shows it
    assert page.count('<table class="grid">') == 2 and '<th class="model">tiny-sd15-alt</th>' in page


def test_compared_tables_get_a_differences_chart(store, report):
    page = render_html(report, image_cache=store["cache"])
    body = page[:page.index('<details class="appendix">')]
    # one per compared table (the two comparisons), against the report's baseline
    assert body.count('alt="differences chart: each model&#39;s tiny-clip minus tiny-sd15&#39;s') == 2
    assert "bar chart: each model" not in page  # no chart of means where a comparison is drawn, none for one bar
