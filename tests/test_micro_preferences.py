"""micro-pickapic with a signal: a continuous utility (the judge's probability of the requested values), each
prompt's best images paired against its worst, Bradley-Terry labels, and a summary that says what the set is worth
(winners vs losers vs the base's average), printed and written beside pairs.jsonl."""

from __future__ import annotations

import json
import math
import random
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rpo_bench.cli import main
from rpo_bench.core.errors import BadInputError
from rpo_bench.metrics import make_metric
from rpo_bench.micro.judge import ANALYTIC, MicroJudge, fresh_renders
from rpo_bench.micro.scenes import scene_prompt
from rpo_bench.training.micro_pickapic import (
    DEFAULTS,
    NAME,
    build_micro_pickapic,
    micro_pickapic_dir,
    resolve_preference_source,
)
from rpo_bench.training.pairs import PairSettings, ScoredImage, _candidate_pairs, pick_pairs

PROMPTS = 8  # micro-train prompts in the small sets; k images each: a few seconds of micro-base on a CPU
K = 6


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory) -> Path:
    lines = (Path(__file__).resolve().parents[1] / "prompts" / "micro-train.jsonl").read_text().splitlines()
    path = tmp_path_factory.mktemp("prompts") / "train-few.jsonl"
    path.write_text("\n".join(lines[:PROMPTS]) + "\n")
    return path


@pytest.fixture(scope="module")
def built(session_home, prompt_file, tmp_path_factory) -> dict:
    """A noiseless and a noisy set over the same images (the second one generates nothing)."""
    root = tmp_path_factory.mktemp("micro-pickapic")
    with pytest.MonkeyPatch.context() as patch:  # module fixtures run before the per-test home is set
        patch.setenv("RPO_BENCH_HOME", str(session_home))
        common = dict(prompts=str(prompt_file), k=K, show_progress=False, device="cpu")
        clean = build_micro_pickapic(root / "clean", label_noise=0.0, **common)
        noisy = build_micro_pickapic(root / "noisy", label_noise=0.05, **common)
    return {"root": root, "common": common, "clean": clean, "noisy": noisy}


def _rows(folder: str | Path) -> list[dict]:
    return [json.loads(line) for line in (Path(folder) / "pairs.jsonl").read_text().splitlines()]


def _sides(row: dict) -> tuple[int, int]:
    winner = 0 if row["label_0"] == 1.0 else 1
    return winner, 1 - winner


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def test_summary_is_written_and_matches_pairs_jsonl(built):
    for name in ("clean", "noisy"):
        summary = built[name]
        folder = Path(summary["out_dir"])
        assert json.loads((folder / "summary.json").read_text()) == summary
        rows = _rows(folder)
        assert summary["pairs"] == len(rows) and summary["images"] == PROMPTS * K
        assert summary["prompts"] == PROMPTS and summary["prompts_with_pairs"] == len({r["caption"] for r in rows})
        winners = [row[f"score_{_sides(row)[0]}"] for row in rows]
        losers = [row[f"score_{_sides(row)[1]}"] for row in rows]
        assert summary["winners_mean"] == pytest.approx(_mean(winners), abs=1e-6)
        assert summary["losers_mean"] == pytest.approx(_mean(losers), abs=1e-6)
        assert summary["report_winners_mean"] == pytest.approx(
            _mean([row[f"report_score_{_sides(row)[0]}"] for row in rows]), abs=1e-6)
        assert summary["report_losers_mean"] == pytest.approx(
            _mean([row[f"report_score_{_sides(row)[1]}"] for row in rows]), abs=1e-6)
        disagree = sum(w < lo for w, lo in zip(winners, losers, strict=True))
        assert summary["labels_flipped"] == disagree
        assert summary["label_disagreement"] == pytest.approx(disagree / len(rows), abs=1e-6)
        assert summary["metric"] == "micro-oracle:prob" and summary["report_metric"] == "micro-oracle"
        assert summary["seconds"] > 0 and summary["pairs_per_second"] > 0
        assert all(r["metric"] == "micro-oracle:prob" and r["label_noise"] == summary["label_noise"] for r in rows)


def test_base_mean_is_the_mean_over_every_sample(built):
    summary = built["clean"]
    with sqlite3.connect(Path(summary["out_dir"]) / "generation.sqlite") as db:
        values = {metric: [v for (v,) in db.execute("SELECT value FROM scores WHERE metric = ?", (metric,))]
                  for metric in ("micro-oracle:prob", "micro-oracle")}
    assert len(values["micro-oracle:prob"]) == len(values["micro-oracle"]) == PROMPTS * K
    assert summary["base_mean"] == pytest.approx(_mean(values["micro-oracle:prob"]), abs=1e-6)
    assert summary["report_base_mean"] == pytest.approx(_mean(values["micro-oracle"]), abs=1e-6)


def test_noiseless_winners_beat_the_base_and_losers_fall_below_it(built):
    summary = built["clean"]
    assert summary["labels_flipped"] == 0 and summary["label_disagreement"] == 0.0
    assert summary["winners_mean"] > summary["base_mean"] > summary["losers_mean"]
    assert summary["report_winners_mean"] >= summary["report_base_mean"] >= summary["report_losers_mean"]
    for row in _rows(summary["out_dir"]):
        winner, loser = _sides(row)
        assert row[f"score_{winner}"] > row[f"score_{loser}"]  # top-bottom: strictly better, never a tie


def test_same_settings_give_identical_pairs_and_the_label_seed_moves_the_noise(built):
    root, common = built["root"], built["common"]
    again = build_micro_pickapic(root / "noisy-again", label_noise=0.05, **common)
    assert again["generated"] == 0  # every image came from the cache
    assert (root / "noisy-again" / "pairs.jsonl").read_bytes() == (root / "noisy" / "pairs.jsonl").read_bytes()
    labels = {}
    for seed in (0, 1):  # a high temperature, so that many labels depend on the draw
        build_micro_pickapic(root / f"hot-{seed}", label_noise=0.3, label_seed=seed, **common)
        labels[seed] = [(r["caption"], {r["seed_0"], r["seed_1"]}, r[f"seed_{_sides(r)[0]}"])
                        for r in _rows(root / f"hot-{seed}")]
    assert [row[:2] for row in labels[0]] == [row[:2] for row in labels[1]]  # the same pairs...
    assert [row[2] for row in labels[0]] != [row[2] for row in labels[1]]  # ...with winners from another draw


def _images(scores: list[float]) -> list[ScoredImage]:
    return [ScoredImage(seed, score, f"{seed:064x}") for seed, score in enumerate(scores)]


def test_top_bottom_pairs_best_images_against_worst_closest_to_best_vs_worst_first():
    images = _images([0.5, 0.9, 0.1, 0.7, 0.3, 0.2])  # ranked: seeds 1, 3, 0, 4, 5, 2
    pairs = _candidate_pairs(images, PairSettings(k=6, mode="top-bottom", pairs_per_prompt=4), 1.0)
    assert [(w.seed, lo.seed) for w, lo in pairs] == [(1, 2), (1, 5), (3, 2), (3, 5)]
    every = _candidate_pairs(images, PairSettings(k=6, mode="top-bottom"), 1.0)
    assert len(every) == 9 and {w.seed for w, _ in every} == {1, 3, 0} and {lo.seed for _, lo in every} == {4, 5, 2}


def test_margin_drops_close_pairs_and_pairs_per_prompt_caps_the_kept_ones():
    scored = {"p": _images([0.50, 0.52, 0.51, 0.49, 0.95, 0.05])}
    picked = pick_pairs(["p"], scored, PairSettings(k=6, mode="top-bottom", margin=0.1), 1.0)
    assert all(abs(w.score - lo.score) > 0.1 for _, w, lo in picked.pairs)
    assert len(picked.pairs) + picked.dropped == 9 and picked.dropped > 0
    capped = pick_pairs(["p"], scored, PairSettings(k=6, mode="top-bottom", pairs_per_prompt=2, margin=0.1), 1.0)
    assert [(w.seed, lo.seed) for _, w, lo in capped.pairs] == [(4, 5), (4, 3)]


def test_label_noise_agrees_with_the_noiseless_ranking_as_bradley_terry_says():
    """Many synthetic prompts: the share of labels that agree with the utility must match the mean of
    sigmoid(gap / T) within 3 standard errors, at each temperature; T = 0 flips nothing."""
    rng = random.Random(0)
    prompts = [f"prompt {i}" for i in range(300)]
    scored = {p: _images([rng.random() for _ in range(8)]) for p in prompts}
    for temperature in (0.02, 0.1, 0.3):
        picked = pick_pairs(prompts, scored, PairSettings(k=8, mode="top-bottom", label_noise=temperature), 1.0)
        gaps = [abs(w.score - lo.score) for _, w, lo in picked.pairs]
        expected = [1 / (1 + math.exp(-gap / temperature)) for gap in gaps]
        observed = sum(w.score > lo.score for _, w, lo in picked.pairs) / len(gaps)
        standard_error = math.sqrt(sum(p * (1 - p) for p in expected)) / len(gaps)
        assert abs(observed - sum(expected) / len(gaps)) <= 3 * standard_error
        assert picked.flipped == round((1 - observed) * len(gaps))
    noiseless = pick_pairs(prompts, scored, PairSettings(k=8, mode="top-bottom"), 1.0)
    assert noiseless.flipped == 0


def test_requested_probabilities_rank_like_the_binary_judge():
    """The finer utility sides with the binary judge: an attribute with probability > 0.5 is judged shown; for
    colour and position (measured) the probability is above 0.5 exactly when the judge says shown."""
    judge = MicroJudge.load()
    images, scenes = fresh_renders(48, seed=5)
    prompts = [scene_prompt(scene) for scene in scenes]
    binary, soft = judge.score(images, prompts), judge.requested_probabilities(images, prompts)
    for hard, prob in zip(binary, soft, strict=True):
        assert set(prob) == {a for a in hard if not a.startswith("agree_")}
        for attribute, p in prob.items():
            if attribute == "overall":
                continue
            assert 0.0 <= p <= 1.0
            if p > 0.5:
                assert hard[attribute] == 1.0
            if attribute in ANALYTIC and hard[attribute] == 1.0:
                assert p >= 0.5
        assert prob["overall"] == pytest.approx(np.mean([v for a, v in prob.items() if a != "overall"]))
    assert len({round(row["overall"], 6) for row in soft}) > len({row["overall"] for row in binary})  # finer

    metric = make_metric("micro-oracle:prob")
    pil = [Image.fromarray(image) for image in images[:4]]
    assert metric.score(pil, prompts[:4]) == pytest.approx([row["overall"] for row in soft[:4]], abs=1e-6)
    assert make_metric("micro-oracle").score(pil, prompts[:4]) == [row["overall"] for row in binary[:4]]


def test_the_built_in_name_resolves_to_the_defaults_folder_keyed_by_its_settings(tmp_path, monkeypatch):
    rpo_home = tmp_path / "home"  # a private home: other tests check that the shared one has no preferences/
    monkeypatch.setenv("RPO_BENCH_HOME", str(rpo_home))
    folder = micro_pickapic_dir()
    assert folder.parent == rpo_home / "preferences" and folder.name.startswith(f"{NAME}-")
    assert micro_pickapic_dir({**DEFAULTS, "k": DEFAULTS["k"] + 2}) != folder
    assert micro_pickapic_dir({**DEFAULTS, "label_noise": DEFAULTS["label_noise"] + 0.1}) != folder
    assert micro_pickapic_dir(dict(DEFAULTS)) == folder  # stable
    old = rpo_home / "preferences" / NAME  # the layout before settings were part of the name
    old.mkdir(parents=True, exist_ok=True)
    (old / "pairs.jsonl").write_text("{}\n")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pairs.jsonl").write_text("{}\n")  # a finished set: resolving must not rebuild it
    (folder / "summary.json").write_text("{}\n")
    assert resolve_preference_source(NAME, show_progress=False) == str(folder)
    assert resolve_preference_source("some/folder") == "some/folder"


def test_cli_prints_what_the_set_is_worth(built, prompt_file, tmp_path, capsys):
    out = tmp_path / "prefs"
    code = main(["micro", "preferences", "--prompts", str(prompt_file), "--k", str(K), "--pairs-per-prompt", "4",
                 "--margin", "0.01", "--label-noise", "0.05", "--seed", "3", "--device", "cpu", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs_per_prompt"] == 4 and summary["margin"] == 0.01 and summary["label_seed"] == 3
    assert summary["generated"] == 0 and summary["pairs"] == len(_rows(out)) <= 4 * PROMPTS
    lines = printed.strip().splitlines()  # after the progress lines of generation and scoring
    assert f"pairs {summary['pairs']} from {summary['prompts_with_pairs']} of {PROMPTS} prompts (top-bottom, " \
           "margin 0.01: " in printed
    assert f"label noise 0.05: {summary['labels_flipped']} labels" in printed
    assert any(line.startswith("micro-oracle:prob  winners ") and "· base " in line for line in lines)
    assert any(line.startswith("micro-oracle       winners ") for line in lines)
    assert f"written: {out}" in printed


@pytest.mark.parametrize("args, message", [
    (["--pairs-per-prompt", "0"], "pairs per prompt = 0: accepted: an integer from 1 to 36"),
    (["--k", "4", "--pairs-per-prompt", "5"], "pairs per prompt = 5: accepted: an integer from 1 to 4"),
    (["--mode", "all", "--pairs-per-prompt", "3"], "accepted: pairs per prompt only with pair mode top-bottom"),
    (["--mode", "pairs"], "pair mode 'pairs'; accepted: best-worst, top-bottom, all"),
    (["--margin", "-0.5"], "margin = -0.5: accepted: a number >= 0"),
    (["--label-noise", "inf"], "label noise inf: accepted: a number >= 0"),
    (["--seed", "-1"], "label seed -1: accepted: an integer >= 0"),
    (["--k", "1"], "k = 1: accepted: an integer >= 2"),
    (["--prompts", "no-such-set"], "no-such-set"),
])
def test_bad_flags_give_one_line_and_leave_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "prefs"
    code = main(["micro", "preferences", "--out", str(out), *args])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in captured.err + captured.out, captured.err
    assert lines[0].startswith("error: ") and message in lines[0]
    assert not out.exists()


def test_unknown_setting_is_refused(tmp_path):
    with pytest.raises(BadInputError, match="micro-pickapic setting 'temperature'; accepted: prompts, k, mode"):
        build_micro_pickapic(tmp_path, temperature=0.1)
