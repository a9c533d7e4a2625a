"""`rpo-bench micro compare`: every method trained from micro-base on the same data, evaluated on held-out prompts,
compared with paired statistics; the numbers must be the ones rpo_bench.evaluation.stats gives on the stored scores."""

from __future__ import annotations

import json
import sqlite3

import pytest

from rpo_bench.cli import main
from rpo_bench.evaluation import stats
from rpo_bench.workflows.compare import BASE, CompareConfig, run_comparison
from tests.test_training import preference_folder  # noqa: F401 - the session's tiny preference pairs


@pytest.fixture
def few_micro_prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [("a small blue circle in the center, gray background", "unseen"),
            ("a large red square on the left, white background", "unseen"),
            ("a small orange circle on the left, white background", "unseen"),
            ("a small yellow circle on the left, black background", "seen")]
    path.write_text("".join(json.dumps({"prompt": p, "category": c}) + "\n" for p, c in rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_compare_trains_each_method_and_reports_paired_numbers(preference_folder, few_micro_prompts,  # noqa: F811
                                                               tmp_path):
    config = CompareConfig(out=tmp_path / "cmp", methods=("sft", "dpo"), train_seeds=(0, 1), preset=None,
                           overrides=dict(model=BASE, data=str(preference_folder), steps=2, pairs_per_device=2,
                                          lr=1e-3, beta=500.0, snapshot_every=1, heldout_pairs=1.0, log_every=0),
                           prompts=str(few_micro_prompts), eval_seeds=(0, 1), show_progress=False)
    rows, markdown = run_comparison(config)
    names = [row.name for row in rows]
    assert names == [BASE, "sft", "dpo", "sft seed 0", "sft seed 1", "dpo seed 0", "dpo seed 1", "dpo"]
    assert rows[-1].versus == "sft"  # dpo vs sft: the pairs of methods that were trained
    # only the 3 unseen prompts x 2 evaluation seeds enter the numbers
    assert all(row.mean.n_prompts == 3 and row.mean.n_samples == 6 for row in rows)
    # a method's scores are the mean of its runs', compared with the base sample by sample: recompute that from
    # the store's rows, independently of compare's own bookkeeping
    with sqlite3.connect(config.out / "results.sqlite") as db:
        stored = db.execute("SELECT model, prompt, seed, value FROM scored_samples "
                            "WHERE metric = 'micro-oracle'").fetchall()
    unseen = {json.loads(line)["prompt"] for line in few_micro_prompts.read_text().splitlines()
              if json.loads(line)["category"] == "unseen"}
    table: dict[str, dict] = {}
    for model, prompt, seed, value in stored:
        if prompt in unseen:
            table.setdefault(model, {})[(prompt, seed)] = value
    base = table[BASE]
    sft_runs = [table[str((config.out / f"sft-seed{s}").resolve())] for s in (0, 1)]
    sft = {k: (sft_runs[0][k] + sft_runs[1][k]) / 2 for k in base}
    assert rows[1].comparison.difference.estimate == pytest.approx(stats.paired_difference(sft, base).estimate)
    assert rows[1].comparison.win_rate.estimate == pytest.approx(stats.win_rate(sft, base).estimate)
    assert "| sft | micro-base |" in markdown
    assert (config.out / "comparison.json").is_file() and (config.out / "comparison.md").is_file()
    # every method's held-out diagnostics side by side, averaged over its runs' own records
    heldout = json.loads((config.out / "comparison.json").read_text())["heldout"]
    assert set(heldout) == {"sft", "dpo"} and heldout["dpo"]["runs"] == 2
    runs = [json.loads((config.out / f"dpo-seed{s}" / "rpo_bench.json").read_text())["heldout"]["last"]
            for s in (0, 1)]
    assert heldout["dpo"]["heldout_d_w"] == pytest.approx((runs[0]["heldout_d_w"] + runs[1]["heldout_d_w"]) / 2)
    assert "| method | held-out accuracy | margin | D^w | D^l | runs |" in markdown and "| dpo | " in markdown
    # the power table is read off the same rows: each method's spread between its two seeds' run means
    power = json.loads((config.out / "comparison.json").read_text())["power"]
    sft_run_means = [row.comparison.difference.estimate for row in rows if row.name.startswith("sft seed ")]
    assert power["seed_sd"]["sft"] == pytest.approx(abs(sft_run_means[0] - sft_run_means[1]) / 2**0.5)
    assert power["target"] == 0.01 and power["train_seeds"] == 2
    assert [(r["model"], r["versus"]) for r in power["rows"]] == [("sft", BASE), ("dpo", BASE), ("dpo", "sft")]
    assert "| model | vs | prompts' SE | detectable with 2 seeds |" in markdown
    record_rows = json.loads((config.out / "comparison.json").read_text())["rows"]
    split = next(r["variance"] for r in record_rows if r["model"] == "sft" and r["versus"] == BASE)
    assert split["prompts"] == 3 and split["seeds"] == 2  # the unseen prompts, each over both evaluation seeds
    curve = json.loads((config.out / "curve.json").read_text())
    assert [p["step"] for p in curve["dpo"]] == [0, 1, 2]  # micro-base, the step-1 snapshot, the final output
    assert (config.out / "curve.png").stat().st_size > 1000
    # a second run trains nothing and gives the same numbers
    again, _ = run_comparison(config)
    assert [r.mean for r in again] == [r.mean for r in rows]


def test_bad_settings_are_refused_before_any_folder_is_made(tmp_path, capsys):
    assert main(["micro", "compare", "--out", str(tmp_path / "c"), "--preset", "", "--set", "data=d",
                 "--set", "steps=0"]) == 2
    assert "--steps 0" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_style_compare_judges_style_beside_content_and_probe(tmp_path, monkeypatch, session_home):
    """--style: every run trains the style (reference pairs), the tables are the judge's style probability, then
    content (micro-oracle) and the probe, on the style's content prompts; probe agreement and a grid are written."""
    from rpo_bench.style.registry import STYLES

    home = tmp_path / "home"
    home.mkdir()
    (session_home / "models").mkdir(exist_ok=True)
    (home / "models").symlink_to(session_home / "models", target_is_directory=True)
    prompts = tmp_path / "content.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "category": "content"}) + "\n" for p in (
        "a small blue circle in the center, gray background", "a large red square on the left, white background")),
        encoding="utf-8")
    (home / "registry.toml").write_text(
        f'[styles.mini-sketch]\nmicro = "sketch"\nprompts = "{prompts}"\nreferences = 20\n'
        'judges = ["micro-style:sketch", "micro-oracle"]\ncsd = false\n', encoding="utf-8")
    monkeypatch.setenv("RPO_BENCH_HOME", str(home))
    STYLES.reset_plugins()
    config = CompareConfig(out=tmp_path / "cmp", methods=("sft", "dpo"), train_seeds=(0,), style="mini-sketch",
                           overrides=dict(steps=2, pairs_per_device=2, heldout_pairs=0, log_every=0),
                           eval_seeds=(0,), show_progress=False)
    rows, markdown = run_comparison(config)
    assert [row.name for row in rows][:3] == [BASE, "sft", "dpo"]
    tables = markdown.split("\n\n")
    assert tables[0].startswith("micro-style:sketch on") and "(content prompts)" in tables[0]
    assert any(t.startswith("micro-oracle on") for t in tables)
    assert any(t.startswith("style-prob:mini-sketch on") for t in tables)
    record = json.loads((config.out / "comparison.json").read_text())
    assert record["probe_agreement"]["images"] == 3 * 2  # micro-base and two runs, two prompts, one seed
    assert 0 <= record["probe_agreement"]["agreement"] <= 1
    assert record["probe_ceiling"] is None  # two prompts: too few to hold prompts out in five folds
    assert record["power"]["target"] == 0.03  # a style's difference to plan for, not a preference method's
    assert record["power"]["pooled_seed_sd"] is None and "one training seed per method" in markdown
    assert json.loads((config.out / "sft-seed0" / "rpo_bench.json").read_text())["style"]["name"] == "mini-sketch"
    assert (config.out / "grid.png").stat().st_size > 1000


@pytest.mark.slow
def test_micro_compare_set_lr_after_a_run_at_another_lr_never_reuses_it(preference_folder,  # noqa: F811
                                                                        few_micro_prompts, tmp_path, capsys):
    """A finished run is reused only when its recorded settings are the ones asked for: `--set lr=0.5` over runs
    trained at lr 1e-3 is refused in one line naming the setting, and nothing of the old runs is touched."""
    out = tmp_path / "cmp"
    args = ["micro", "compare", "--out", str(out), "--preset", "", "--methods", "sft", "--train-seeds", "0",
            "--eval-seeds", "0", "--prompts", str(few_micro_prompts), "--set", f"data={preference_folder}",
            "--set", "model=micro-base", "--set", "steps=2", "--set", "pairs_per_device=2", "--set", "heldout_pairs=0",
            "--set", "log_every=0"]
    assert main([*args, "--set", "lr=1e-3"]) == 0
    record = (out / "sft-seed0" / "rpo_bench.json").read_bytes()
    comparison = (out / "comparison.json").read_bytes()
    capsys.readouterr()
    assert main([*args, "--set", "lr=0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lr: 0.001 then, 0.5 now" in err and "another --out" in err
    assert (out / "sft-seed0" / "rpo_bench.json").read_bytes() == record  # not retrained over
    assert (out / "comparison.json").read_bytes() == comparison  # and no comparison claims lr 0.5
    assert main([*args, "--set", "lr=1e-3"]) == 0  # the same settings still reuse the run
    assert (out / "sft-seed0" / "rpo_bench.json").read_bytes() == record
