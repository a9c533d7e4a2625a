"""`rpo-bench evaluate --style S`: the configuration a style implies, the run end to end through the CLI with its
"style gained vs content kept" table and the probe's held-out accuracy, and the base-model refusal."""

from __future__ import annotations

import pytest

from rpo_bench.cli import main
from rpo_bench.style.registry import STYLES, get_style
from tests.test_style_metrics import build_style_world


@pytest.fixture(scope="module")
def style_home(tmp_path_factory):
    return build_style_world(tmp_path_factory, "style-eval", """
[styles.small-sketch]
micro = "sketch"
references = 40
prompts = "{prompts}"
base_model = "micro-base"
embedding = "micro-clip"
judges = ["micro-style:sketch", "micro-oracle"]
csd = false

[styles.small-sketch-csd]
micro = "sketch"
references = 40
prompts = "{prompts}"
base_model = "micro-base"
embedding = "micro-clip"
""")


@pytest.fixture(autouse=True)
def home(style_home, rpo_home, monkeypatch):
    monkeypatch.setenv("RPO_BENCH_HOME", str(style_home))
    STYLES.reset_plugins()
    return style_home


def test_a_style_sets_prompts_models_protocol_and_metrics(home):
    from rpo_bench.style.evaluate import style_config

    plan = style_config("small-sketch", ["micro-other", "micro-base"], ["micro-oracle:shape"])
    config = plan.config
    assert list(config.models) == ["micro-base", "micro-other"]  # the base first, once
    assert config.baseline == "micro-base" and config.protocol == "micro" and config.by == "category"
    assert config.prompts.endswith("prompts.jsonl")
    assert list(config.metrics) == ["style-prob:small-sketch", "style-sim:small-sketch", "micro-clip",
                                    "base-sim:small-sketch", "micro-style:sketch", "micro-oracle",
                                    "micro-oracle:shape"]
    assert plan.style_metrics == ["style-prob:small-sketch", "micro-style:sketch"]
    assert plan.content_metrics == ["micro-clip", "micro-oracle"] and plan.notes == []


def test_csd_is_left_out_with_a_note_when_its_weights_are_missing(home):
    from rpo_bench.style.evaluate import style_config

    plan = style_config("small-sketch-csd")
    assert not any(m.startswith("csd:") for m in plan.config.metrics)
    (note,) = plan.notes
    assert note.startswith("csd:small-sketch-csd skipped: ")


def test_evaluate_style_end_to_end(home, tmp_path, capsys):
    code = main(["evaluate", "--style", "small-sketch", "--models", "micro-other", "--store",
                 str(tmp_path / "r.sqlite"), "--image-cache", str(tmp_path / "images"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    table = out[out.index("style gained vs content kept"):]
    header = table.splitlines()[1]
    for column in ("Δ style-prob:small-sketch [95% CI]", "Δ micro-style:sketch [95% CI]", "Δ micro-clip [95% CI]",
                   "Δ micro-oracle [95% CI]", "base-sim:small-sketch [95% CI]"):
        assert column in header
    rows = [line.split() for line in table.splitlines()[2:] if line.strip().startswith("micro-other")]
    assert [row[1] for row in rows] == ["all", "content", "worded"]
    assert "micro-base " not in "\n".join(table.splitlines()[2:6])  # the base is the reference, not a row
    assert "style-prob:small-sketch: probe held-out accuracy " in out
    assert "(16 images; fitted on 32 references, 32 base images)" in out
    assert "category worded" in out  # --by category by default

    # a second run reuses every image and score, and still prints the probe's accuracy (from its cache)
    main(["evaluate", "--style", "small-sketch", "--models", "micro-other", "--store", str(tmp_path / "r.sqlite"),
          "--image-cache", str(tmp_path / "images"), "--device", "cpu"])
    again = capsys.readouterr().out
    assert "generated 0 images" in again and "style-prob:small-sketch: probe held-out accuracy " in again

    # the report of that store shows the style section and the probe's accuracy too
    from rpo_bench.reporting.markdown import report_markdown

    text = report_markdown(tmp_path / "r.sqlite", by="category")
    assert "## Style gained vs content kept" in text and "by micro-style:sketch, content by micro-oracle" in text
    assert "- style-prob:small-sketch: probe held-out accuracy " in text


def test_base_sim_without_the_base_model_is_one_line(home, tmp_path, capsys):
    code = main(["evaluate", "--models", "micro-other", "--metrics", "base-sim:small-sketch", "--protocol", "micro",
                 "--prompts", get_style("small-sketch").prompts, "--store", str(tmp_path / "r.sqlite")])
    err = capsys.readouterr().err
    assert code != 0
    assert err.strip().splitlines() == ["error: base-sim:small-sketch compares with small-sketch's base model "
                                        "micro-base: add micro-base to --models"]
    assert not (tmp_path / "r.sqlite").exists()


def test_prompts_without_categories_are_not_split(home, tmp_path):
    from rpo_bench.style.evaluate import gain_table, style_config

    prompts = tmp_path / "plain.txt"
    prompts.write_text("a large red square on the right, white background\n", encoding="utf-8")
    plan = style_config("small-sketch", prompts=str(prompts))
    assert plan.config.by is None and plan.config.prompts == str(prompts)
    assert gain_table(plan, []) == (["model", "prompts", "Δ style-prob:small-sketch [95% CI]",
                                     "Δ micro-style:sketch [95% CI]", "Δ micro-clip [95% CI]",
                                     "Δ micro-oracle [95% CI]", "base-sim:small-sketch [95% CI]"], [])
