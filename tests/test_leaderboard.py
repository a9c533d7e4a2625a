"""`rpo-bench leaderboard update NAME`: regenerates a leaderboard folder from what its leaderboard.toml records,
with the same numbers from a fresh run (CPU, same seeds, whatever the thread count), no machine path in what is
written, and an index that keeps published numbers apart."""

from __future__ import annotations

import json
import shutil
import signal

import pytest
import torch

from rpo_bench.cli import main
from rpo_bench.workflows.leaderboard import load_spec, work_dir

SPEC = """
title = "tiny check"
description = "A few steps of DPO and RPO on the quick demo's data."
next = "Nothing: this is a test."

[demo]
quick = true
methods = "dpo,rpo"
train_seeds = "0"
eval_seeds = "0"
set = ["steps=6"]
"""
WRITTEN = ("README.md", "results.json", "results.csv", "comparison.json", "grid.png", "differences.png")


@pytest.mark.slow
def test_update_twice_from_scratch_gives_identical_numbers(tmp_path, session_home, updated):
    root = tmp_path / "leaderboards"
    (root / "tiny").mkdir(parents=True)
    (root / "tiny" / "leaderboard.toml").write_text(SPEC, encoding="utf-8")
    project_readme = tmp_path / "README.md"
    project_readme.write_text("intro\n<!-- leaderboard:tiny -->\nold table\n<!-- /leaderboard:tiny -->\nrest\n",
                              encoding="utf-8")
    threads = torch.get_num_threads()
    try:
        # a machine with more cores must regenerate the same bytes: the first update is asked for two threads
        torch.set_num_threads(2)
        assert main(["leaderboard", "update", "tiny", "--root", str(root)]) == 0
        assert torch.get_num_threads() == 2  # given back after the update
        first = {name: (root / "tiny" / name).read_bytes() for name in WRITTEN}
        shutil.rmtree(work_dir("tiny"))  # retrain, regenerate and rescore everything
        torch.set_num_threads(1)
        assert main(["leaderboard", "update", "tiny", "--root", str(root)]) == 0
        second = {name: (root / "tiny" / name).read_bytes() for name in WRITTEN}
    finally:
        torch.set_num_threads(threads)
    for name in ("results.json", "results.csv", "comparison.json", "grid.png"):
        assert first[name] == second[name], name
    readme = second["README.md"].decode()
    assert "Reproduce: `rpo-bench leaderboard update tiny`" in readme
    assert "`rpo-bench demo --quick --methods dpo,rpo --train-seeds 0 --eval-seeds 0 --set steps=6 --out " \
           "$RPO_BENCH_HOME/leaderboards/tiny/work`" in readme
    assert "- rpo vs dpo on micro-oracle:" in readme and "## What would be tried next" in readme
    for name in ("README.md", "results.json", "results.csv", "comparison.json"):
        text = second[name].decode()
        assert str(session_home) not in text and str(tmp_path) not in text, name
    index = (root / "README.md").read_text(encoding="utf-8")
    assert "[tiny check](tiny/README.md)" in index
    measured, reported = index.split("## Reported (published numbers, not measured here)")
    assert "SD1.5 Diffusion-DPO" in reported and "SD1.5" not in measured
    assert json.loads(second["results.json"])["config"]["command"] == "rpo-bench leaderboard update tiny"
    block = project_readme.read_text(encoding="utf-8")
    assert block.startswith("intro\n<!-- leaderboard:tiny -->\n| model | micro-oracle mean [95% CI] |")
    assert "| rpo | " in block and "old table" not in block and block.endswith("<!-- /leaderboard:tiny -->\nrest\n")
    updated.update(root=root, second=second)


@pytest.fixture(scope="module")
def updated() -> dict:
    """What the update test made (the leaderboard folder and its files), for the E9 tests that follow it."""
    return {}


@pytest.mark.slow
def test_a_kill_while_the_leaderboard_readme_is_rewritten_leaves_it_whole(updated, tmp_path):
    """Not 0 bytes, as it was when the write was killed mid-way; a rerun mends it."""
    from tests.fault_harness import die_while_writing

    if not updated:
        pytest.skip("needs the update test's leaderboard")
    root = updated["root"]
    code = die_while_writing(lambda: main(["leaderboard", "update", "tiny", "--root", str(root)]), "README.md",
                             tmp_path / "child.log")
    assert code == -signal.SIGXFSZ
    assert (root / "tiny" / "README.md").read_bytes() == updated["second"]["README.md"]


@pytest.mark.slow
def test_a_leaderboard_toml_whose_set_changed_retrains_its_runs(updated):
    """`set = ["lr=3e-05"]` over runs trained at the preset's lr: every run is trained again (the old work folder is
    kept aside), so the README never claims settings its numbers were not made with."""
    if not updated:
        pytest.skip("needs the update test's leaderboard")
    root = updated["root"]
    (root / "tiny" / "leaderboard.toml").write_text(SPEC.replace('set = ["steps=6"]', 'set = ["steps=6", "lr=3e-05"]'),
                                                   encoding="utf-8")
    assert main(["leaderboard", "update", "tiny", "--root", str(root)]) == 0
    record = json.loads((work_dir("tiny") / "dpo-seed0" / "rpo_bench.json").read_text(encoding="utf-8"))
    assert record["config"]["lr"] == 3e-05
    assert (root / "tiny" / "comparison.json").read_bytes() != updated["second"]["comparison.json"]
    assert [p for p in work_dir("tiny").parent.iterdir() if p.name.startswith("work-before-")]


def test_the_committed_leaderboards_parse():
    for name in ("micro", "micro-style"):
        spec = load_spec(name)
        assert spec.demo["train_seeds"] == "0-2"  # at least three training seeds
        assert spec.description and spec.next


# -- E9: leaderboard.toml read through the one reader and checked key by key before any work --------------------------
GOOD = '[demo]\nquick = true\nmethods = "dpo"\ntrain_seeds = "0"\nset = ["steps=2"]\n'


def _root(tmp_path, **files: str):
    root = tmp_path / "leaderboards"
    for name, text in files.items():
        (root / name).mkdir(parents=True)
        (root / name / "leaderboard.toml").write_text(text, encoding="utf-8")
    return root


def _error(root, name: str, capsys) -> str:
    assert main(["leaderboard", "update", name, "--root", str(root)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in lines[0]
    return lines[0]


@pytest.mark.parametrize("text, fragment", [
    ("demo = 5\n", "leaderboard.toml demo = 5: accepted: a table [demo]"),
    ("[demo]\nstyle = 5\n", "leaderboard.toml [demo] style = 5: accepted: a string"),
])
def test_leaderboard_demo_or_style_number_is_one_line_naming_the_key(tmp_path, capsys, text, fragment):
    assert fragment in _error(_root(tmp_path, e9=text), "e9", capsys)


def test_leaderboard_set_string_is_refused_not_split_into_characters(tmp_path, capsys):
    line = _error(_root(tmp_path, e9='[demo]\nset = "lr=1e-4"\n'), "e9", capsys)
    assert "[demo] set = 'lr=1e-4': accepted: a list of \"KEY=VALUE\" training settings, e.g. set = [\"lr=1e-4\"]" \
        in line


def test_leaderboard_quick_string_is_refused_not_taken_as_true(tmp_path, capsys):
    assert "[demo] quick = 'false': accepted: true or false" in _error(
        _root(tmp_path, e9='[demo]\nquick = "false"\n'), "e9", capsys)


def test_leaderboard_train_seeds_toml_list_is_accepted_like_text(tmp_path):
    from rpo_bench.workflows.demo import command_line
    from rpo_bench.workflows.leaderboard import demo_config

    root = _root(tmp_path, text='[demo]\ntrain_seeds = "0,1"\neval_seeds = "0-2"\nmethods = "dpo,rpo"\n',
                 lists='[demo]\ntrain_seeds = [0, 1]\neval_seeds = [0, 1, 2]\nmethods = ["dpo", "rpo"]\n')
    as_text, as_lists = demo_config(load_spec("text", root)), demo_config(load_spec("lists", root))
    assert list(as_lists.train_seeds) == [0, 1] and list(as_lists.eval_seeds) == [0, 1, 2]
    assert tuple(as_lists.methods) == ("dpo", "rpo")
    assert command_line(as_lists, "W") == command_line(as_text, "W")


def test_leaderboard_bad_seed_in_a_list_is_blamed_on_the_key_not_on_seeds_flag(tmp_path, capsys):
    line = _error(_root(tmp_path, e9="[demo]\ntrain_seeds = [0, -1]\n"), "e9", capsys)
    assert "leaderboard.toml [demo] train_seeds = [0, -1]: seed -1" in line and "--seeds" not in line


@pytest.mark.parametrize("text, fragment", [
    ('[demo]\nset = ["lr=abc"]\n', "[demo] set item 'lr=abc': 'abc' is not a number"),
    ('[demo]\nset = ["lr=-1"]\n', "[demo]: --lr -1.0"),
    ('[demo]\nmethods = "dpo,ppo"\n', "[demo] methods = 'dpo,ppo': unknown method 'ppo'; did you mean rpo, dpo, mapo?"),
    ('[demo]\nstyle = "sketch"\n', "[demo] style = 'sketch': micro compare --style 'sketch': not a micro style"),
    ("[demo]\ncolour = 1\n", "[demo]: unknown key(s) colour"),
])
def test_leaderboard_every_demo_value_is_checked_before_any_work(tmp_path, capsys, text, fragment):
    assert fragment in _error(_root(tmp_path, e9=text), "e9", capsys)
    assert not work_dir("e9").exists()


def test_leaderboard_update_checks_every_leaderboard_before_any_work(tmp_path, capsys):
    root = _root(tmp_path, e9good=GOOD, e9other="[demo]\nquick = true\nset = [\"steps=2\"\n")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- leaderboard:e9good -->\nold\n<!-- /leaderboard:e9good -->\n", encoding="utf-8")
    line = _error(root, "e9good", capsys)
    assert f"leaderboard file {root / 'e9other' / 'leaderboard.toml'} is not valid TOML" in line
    assert not work_dir("e9good").exists()  # the demo did not run
    assert sorted(p.name for p in (root / "e9good").iterdir()) == ["leaderboard.toml"]
    assert not (root / "README.md").exists() and "old" in readme.read_text(encoding="utf-8")


def test_leaderboard_update_root_that_is_a_file_says_it_is_a_file(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x\n", encoding="utf-8")
    line = _error(afile, "micro", capsys)
    assert f"leaderboards folder {afile} is a file, not a folder; accepted: --root the folder that holds" in line
