"""evaluate's closing numbers: prompt-clustered means and paired comparisons with a baseline, equal to
rpo_bench.evaluation.stats computed directly from the store's rows; --baseline and --by category; byte-identical
output run after run."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from rpo_bench.cli import main, print_summary
from rpo_bench.evaluation import stats
from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate
from rpo_bench.evaluation.summary import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, ScoreTable, summarise_tables

MODELS = ("tiny-sd15", "tiny-sd15-alt", "tiny-sd15-seed2")
# A third tiny model, so that the Holm correction has two comparisons to adjust.
REGISTRY = """[models.tiny-sd15-seed2]
summary = "tiny-sd15 built from seed 2"
family = "sd15"
tiny = "tiny-sd15"
seed = 2
protocol = "tiny"
"""
PROMPTS = [("a red apple on a table", "seen"), ("a cat on a windowsill", "unseen"), ("a lighthouse at dusk", "seen"),
           ("a bowl of ramen", "unseen"), ("a fox in the snow", "unseen")]
OPTIONS = {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED}


@dataclass
class World:
    root: Path
    home: Path
    prompts: Path

    def config(self, **overrides) -> EvaluateConfig:
        values = dict(models=MODELS, prompts=str(self.prompts), metrics=("tiny-clip",), seeds=(0, 1),
                      protocol="tiny", store=self.root / "r.sqlite", image_cache=self.root / "images",
                      show_progress=False)
        return EvaluateConfig(**(values | overrides))

    def cli(self, *extra: str) -> list[str]:
        return ["evaluate", "--models", ",".join(MODELS), "--prompts", str(self.prompts), "--metrics", "tiny-clip",
                "--seeds", "0,1", "--protocol", "tiny", "--store", str(self.root / "r.sqlite"), "--image-cache",
                str(self.root / "images"), *extra]


def _use_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rpo_bench.models.catalog import MODELS as REGISTERED

    monkeypatch.setenv("RPO_BENCH_HOME", str(home))
    REGISTERED.reset_plugins()  # read the third model from this home's registry.toml


@pytest.fixture(scope="module")
def built(tmp_path_factory, session_home) -> World:
    """One evaluate of three tiny models on five prompts x two seeds; later runs in these tests reuse its store."""
    root = tmp_path_factory.mktemp("paired")
    home = root / "home"
    home.mkdir()
    (session_home / "models").mkdir(exist_ok=True)
    (home / "models").symlink_to(session_home / "models", target_is_directory=True)  # tiny models built once
    (home / "registry.toml").write_text(REGISTRY, encoding="utf-8")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "category": c}) + "\n" for p, c in PROMPTS), encoding="utf-8")
    world = World(root, home, prompts)
    with pytest.MonkeyPatch.context() as monkeypatch:
        _use_home(home, monkeypatch)
        evaluate(world.config())
    return world


@pytest.fixture
def world(built, monkeypatch) -> World:
    _use_home(built.home, monkeypatch)
    return built


def _store_tables(store: Path, metric: str = "tiny-clip") -> dict[str, dict[tuple[int, int], float]]:
    """{model: {(prompt index, seed): value}} straight from the store's rows, not through rpo_bench."""
    rows = sqlite3.connect(store).execute(
        "SELECT model, prompt_index, seed, value FROM scored_samples WHERE metric = ? "
        "ORDER BY model, prompt_index, seed", (metric,)).fetchall()
    tables: dict[str, dict[tuple[int, int], float]] = {}
    for model, prompt, seed, value in rows:
        tables.setdefault(model, {})[(prompt, seed)] = value
    return tables


def test_closing_numbers_equal_stats_computed_from_the_store_rows(world):
    result = evaluate(world.config())
    tables = _store_tables(world.root / "r.sqlite")
    assert sorted(tables) == sorted(MODELS) and all(len(t) == 10 for t in tables.values())
    expected = stats.compare_to_baseline(tables, "tiny-sd15", higher_is_better=True, **OPTIONS)
    rows = {row.model: row for row in result.summary}
    assert [row.model for row in result.summary] == list(MODELS) and len(result.summary) == 3
    for model, row in rows.items():
        assert row.interval == stats.cluster_bootstrap(tables[model], **OPTIONS)
        assert (row.n, row.n_prompts, row.samples) == (10, 5, "5x2")
        assert row.mean == pytest.approx(sum(tables[model].values()) / 10)
    assert rows["tiny-sd15"].baseline is None and rows["tiny-sd15"].versus is None
    for model in MODELS[1:]:
        assert rows[model].baseline == "tiny-sd15"
        assert rows[model].versus == expected[model]
    # Two models compared with one baseline: both p-values are Holm-adjusted together.
    raw = [expected[m].p_value for m in MODELS[1:]]
    assert [rows[m].versus.p_holm for m in MODELS[1:]] == stats.holm(raw)


def test_baseline_option_picks_the_reference_and_respects_lower_is_better(world):
    result = evaluate(world.config(baseline="tiny-sd15-alt", metrics=("tiny-clip",)))
    tables = _store_tables(world.root / "r.sqlite")
    rows = {row.model: row for row in result.summary}
    assert rows["tiny-sd15-alt"].versus is None and rows["tiny-sd15"].baseline == "tiny-sd15-alt"
    assert rows["tiny-sd15"].versus == stats.compare_to_baseline(tables, "tiny-sd15-alt", **OPTIONS)["tiny-sd15"]
    # A lower-is-better metric: a win is a lower score, so the win rate is the complement, ties counted half.
    flipped = [ScoreTable(m, "tiny", "tiny", "loss", False, tables[m], {}) for m in MODELS]
    loss_rows = {r.model: r for r in summarise_tables(flipped, "tiny-sd15")}
    higher = stats.win_rate(tables["tiny-sd15-alt"], tables["tiny-sd15"], True, **OPTIONS)
    assert loss_rows["tiny-sd15-alt"].versus.win_rate.estimate == pytest.approx(1 - higher.estimate)


def test_by_category_splits_every_row_by_the_prompts_category(world, capsys):
    result = evaluate(world.config(by="category"))
    tables = _store_tables(world.root / "r.sqlite")
    seen = {i for i, (_, c) in enumerate(PROMPTS) if c == "seen"}
    assert [(r.category, r.model) for r in result.summary] == [(c, m) for c in (None, "seen", "unseen") for m in MODELS]
    for row in result.summary:
        if row.category is None:
            continue
        wanted = {k: v for k, v in tables[row.model].items() if (k[0] in seen) == (row.category == "seen")}
        assert row.interval == stats.cluster_bootstrap(wanted, **OPTIONS)
        assert row.n_prompts == (2 if row.category == "seen" else 3)
    code = main(world.cli("--by", "category"))
    out = capsys.readouterr().out
    assert code == 0
    assert [line.strip() for line in out.splitlines() if line.startswith("protocol")] == [
        "protocol tiny  ·  all prompts", "protocol tiny  ·  category seen", "protocol tiny  ·  category unseen"]


def test_a_model_missing_samples_is_compared_on_shared_samples_only(world, capsys):
    tables = _store_tables(world.root / "r.sqlite")
    partial = {k: v for k, v in tables["tiny-sd15-alt"].items() if k[0] != 0 and k != (1, 1)}  # 7 of 10 samples
    score_tables = [ScoreTable("tiny-sd15", "tiny", "tiny", "tiny-clip", True, tables["tiny-sd15"], {}),
                    ScoreTable("tiny-sd15-alt", "tiny", "tiny", "tiny-clip", True, partial, {})]
    base, alt = summarise_tables(score_tables, "tiny-sd15")
    assert (alt.n, alt.n_prompts, alt.seeds_per_prompt, alt.samples) == (7, 4, None, "7 over 4 prompts")
    difference = alt.versus.difference
    assert (difference.n_samples, difference.n_prompts) == (7, 4)
    assert difference.estimate == pytest.approx(sum(v - tables["tiny-sd15"][k] for k, v in partial.items()) / 7)
    assert alt.versus.win_rate == stats.win_rate(partial, {k: tables["tiny-sd15"][k] for k in partial}, **OPTIONS)
    print_summary([base, alt])
    out = capsys.readouterr().out
    assert ("note: tiny-sd15-alt vs tiny-sd15 (tiny) compared on the 7 (prompt, seed) samples both have, of 7 and 10"
            in " ".join(out.split()))


def test_a_model_sharing_no_sample_with_the_baseline_is_shown_and_left_out_of_holm(world, capsys):
    tables = _store_tables(world.root / "r.sqlite")
    score_tables = [ScoreTable("tiny-sd15", "tiny", "tiny", "tiny-clip", True, tables["tiny-sd15"], {}),
                    ScoreTable("tiny-sd15-alt", "tiny", "tiny", "tiny-clip", True,
                               {(p + 100, s): v for (p, s), v in tables["tiny-sd15-alt"].items()}, {}),
                    ScoreTable("tiny-sd15-seed2", "tiny", "tiny", "tiny-clip", True, tables["tiny-sd15-seed2"], {})]
    _, alt, seed2 = summarise_tables(score_tables, "tiny-sd15")
    assert alt.baseline == "tiny-sd15" and alt.versus is None
    only = stats.compare(tables["tiny-sd15-seed2"], tables["tiny-sd15"], **OPTIONS)
    assert seed2.versus.p_holm == only.p_value  # one comparison made: nothing to correct for
    print_summary([*summarise_tables(score_tables, "tiny-sd15")])
    assert "no shared sample" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--baseline", "tiny-sd16"], "error: --baseline 'tiny-sd16' is not among --models; accepted: one of tiny-sd15, "
                                  "tiny-sd15-alt, tiny-sd15-seed2"),
    (["--by", "prompt"], "error: --by 'prompt': accepted: category"),
])
def test_bad_summary_options_are_one_line_before_any_work(world, capsys, tmp_path, extra, message):
    args = world.cli(*extra)
    args[args.index("--store") + 1] = str(tmp_path / "new.sqlite")
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [message] and "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "new.sqlite").exists()


def test_by_category_of_a_prompt_set_without_categories_is_one_line(world, capsys, tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("a red apple\na blue cube\n", encoding="utf-8")
    args = world.cli("--by", "category")
    args[args.index("--prompts") + 1] = str(plain)
    args[args.index("--store") + 1] = str(tmp_path / "new.sqlite")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: --by category: the prompt set {str(plain)!r} gives no prompt a category; "
                                "accepted: a prompt set with categories (a .jsonl file's \"category\" field)"]
    assert not (tmp_path / "new.sqlite").exists()


def test_the_printed_table_is_byte_identical_across_runs(world, capsys):
    outputs = []
    for _ in range(2):
        assert main(world.cli()) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    tables = _store_tables(world.root / "r.sqlite")
    difference = stats.paired_difference(tables["tiny-sd15-alt"], tables["tiny-sd15"], **OPTIONS)
    assert difference.format(3) in outputs[0]
