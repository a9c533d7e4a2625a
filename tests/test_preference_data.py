"""Preference data: AI-feedback pairs from tiny models, the Pick-a-Pic layout in jsonl and parquet, validation."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rpo_bench.core.errors import BadInputError, MissingWeightsError
from rpo_bench.training.data import PAIRS_FILE, load_preference_data, write_preference_folder
from rpo_bench.training.pairs import make_pairs


@pytest.fixture(scope="module")
def pair_sets(session_home, tmp_path_factory):
    """Best-worst and all-pairs sets of tiny-sd15 images judged by tiny-clip, built once for the module."""
    root = tmp_path_factory.mktemp("pairs")
    with pytest.MonkeyPatch.context() as patch:  # module fixtures run before the per-test home is set
        patch.setenv("RPO_BENCH_HOME", str(session_home))
        common = dict(model="tiny-sd15", prompts="smoke", metric="tiny-clip", k=3, store=root / "gen.sqlite",
                      show_progress=False)
        best = make_pairs(out_dir=root / "best-worst", **common)
        every = make_pairs(out_dir=root / "all", mode="all", **common)
    return {"root": root, "common": common, "best": best, "all": every}


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / PAIRS_FILE).read_text().splitlines()]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _absolute(folder: Path, rows: list[dict]) -> list[dict]:
    return [{**row, "jpg_0": str(folder / row["jpg_0"]), "jpg_1": str(folder / row["jpg_1"])} for row in rows]


def test_pairs_follow_the_scores_and_load_winner_first(pair_sets):
    folder = Path(pair_sets["all"]["out_dir"])
    rows = _rows(folder)
    data = load_preference_data(str(folder))
    assert len(data) == len(rows) == pair_sets["all"]["pairs"] == 12
    assert data.stats == {"rows": 12, "kept": 12, "ties_dropped": 0, "undecodable_skipped": 0, "missing_skipped": 0}
    assert {row["label_0"] for row in rows} == {0.0, 1.0}  # the winner is not always on the same side
    for index, row in enumerate(rows):
        winner_side = 0 if row["label_0"] == 1.0 else 1
        assert row[f"score_{winner_side}"] > row[f"score_{1 - winner_side}"]  # tiny-clip: higher is better
        assert row["label_1"] == 1.0 - row["label_0"] and row["model_0"] == row["model_1"] == "tiny-sd15"
        assert row["metric"] == "tiny-clip" and row["metric_version"].startswith("1+tiny-clip")
        winner, loser = data.image_bytes(index)
        assert winner == (folder / row[f"jpg_{winner_side}"]).read_bytes()
        assert loser == (folder / row[f"jpg_{1 - winner_side}"]).read_bytes()
        pair = data[index]
        assert pair.caption == row["caption"] and pair.winner.mode == "RGB" and pair.winner.size == (64, 64)
    assert data.captions == [row["caption"] for row in rows] and len(data.fingerprint) == 64


def test_all_mode_gives_more_pairs_and_a_margin_drops_small_gaps(pair_sets):
    best, every = pair_sets["best"], pair_sets["all"]
    assert best["prompts"] == every["prompts"] == 8 and best["images"] == every["images"] == 24
    assert every["pairs"] > best["pairs"] > 0
    assert best["pairs"] + best["dropped_for_margin"] == 8 and every["pairs"] + every["dropped_for_margin"] == 24
    gaps = sorted(abs(r["score_0"] - r["score_1"]) for r in _rows(Path(every["out_dir"])))
    margin = gaps[len(gaps) // 2]
    out = pair_sets["root"] / "margin"
    summary = make_pairs(out_dir=out, mode="all", margin=margin, **pair_sets["common"])
    assert summary["generated"] == 0  # images come from the cache
    kept = _rows(out)
    assert summary["pairs"] == len(kept) == sum(g > margin for g in gaps) < every["pairs"]
    assert summary["dropped_for_margin"] == 24 - len(kept)
    assert all(abs(r["score_0"] - r["score_1"]) > margin for r in kept)
    with pytest.raises(BadInputError, match="no pair has a tiny-clip score gap above margin"):
        make_pairs(out_dir=pair_sets["root"] / "none", margin=1e6, **pair_sets["common"])


@pytest.mark.parametrize("bad, match", [(dict(k=1), "k = 1"), (dict(mode="pairs"), "best-worst, top-bottom, all"),
                                        (dict(margin=-0.1), "margin = -0.1")])
def test_make_pairs_rejects_bad_arguments(tmp_path, bad, match):
    arguments = dict(model="tiny-sd15", prompts="smoke", metric="tiny-clip", out_dir=tmp_path, show_progress=False)
    with pytest.raises(BadInputError, match=match):
        make_pairs(**{**arguments, **bad})


def test_ties_are_dropped_and_counted_and_limit_counts_rows(pair_sets, tmp_path):
    folder = Path(pair_sets["best"]["out_dir"])
    rows = _absolute(folder, _rows(folder))
    without_label_1 = {k: v for k, v in rows[1].items() if k != "label_1"}  # label_1 is optional
    ties = [{**rows[0], "label_0": 0.5, "label_1": 0.5}, {**without_label_1, "label_0": 0.5}]
    path = _write_jsonl(tmp_path / "with-ties.jsonl", ties + rows)
    data = load_preference_data(str(path))
    assert data.stats["ties_dropped"] == 2 and data.stats["rows"] == len(rows) + 2 and len(data) == len(rows)
    assert data.sample_ids == load_preference_data(str(folder)).sample_ids  # absolute paths: same content
    limited = load_preference_data(str(path), limit=3)
    assert limited.stats["rows"] == 3 and len(limited) == 1
    with pytest.raises(BadInputError, match="no usable preference pairs"):
        load_preference_data(str(_write_jsonl(tmp_path / "only-ties.jsonl", ties)))


def test_missing_column_and_bad_labels_are_named(pair_sets, tmp_path):
    folder = Path(pair_sets["best"]["out_dir"])
    rows = _absolute(folder, _rows(folder))
    no_label = [{k: v for k, v in row.items() if k != "label_0"} for row in rows]
    with pytest.raises(BadInputError, match=r"missing column 'label_0'; columns found: caption, jpg_0, jpg_1"):
        load_preference_data(str(_write_jsonl(tmp_path / "no-label.jsonl", no_label)))
    for value in (2, "x", True):
        path = _write_jsonl(tmp_path / "bad-label.jsonl", rows[:1] + [{**rows[1], "label_0": value}])
        with pytest.raises(BadInputError, match=rf"bad-label.jsonl:2: label_0 = {value!r}; accepted: 0, 0.5"):
            load_preference_data(str(path))
    mismatched = _write_jsonl(tmp_path / "mismatch.jsonl", [{**rows[0], "label_0": 1, "label_1": 1}])
    with pytest.raises(BadInputError, match="do not sum to 1"):
        load_preference_data(str(mismatched))
    table = pa.table({"caption": ["a"], "jpg_0": [b""], "label_0": [1.0]})
    pq.write_table(table, tmp_path / "no-image.parquet")
    with pytest.raises(BadInputError, match="missing column 'jpg_1'; columns found: caption, jpg_0, label_0"):
        load_preference_data(str(tmp_path / "no-image.parquet"))


def test_undecodable_and_missing_images_are_skipped_counted_and_warned_once(pair_sets, tmp_path, caplog):
    folder = Path(pair_sets["all"]["out_dir"])
    rows = _absolute(folder, _rows(folder))
    (tmp_path / "not-an-image.png").write_text("this is text, not a PNG")
    truncated = Path(rows[1]["jpg_1"]).read_bytes()
    (tmp_path / "truncated.png").write_bytes(truncated[: len(truncated) // 2])
    broken = [{**rows[0], "jpg_0": "not-an-image.png"}, {**rows[1], "jpg_1": "truncated.png"},
              {**rows[2], "jpg_0": None}, {**rows[3], "jpg_1": "gone.png"}]
    path = _write_jsonl(tmp_path / "pairs.jsonl", broken + rows[4:])
    with caplog.at_level(logging.WARNING, logger="rpo_bench.training.data"):
        data = load_preference_data(str(tmp_path))
    assert data.stats == {"rows": 12, "kept": 8, "ties_dropped": 0, "undecodable_skipped": 3, "missing_skipped": 1}
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "skipped 3 of 12 pairs whose image does not decode" in messages[0]
    assert f"{path}:1" in messages[0] and "gone.png" not in messages[0] and f"{path}:4" in messages[1]


def test_parquet_with_image_bytes_loads_to_the_same_pairs(pair_sets, tmp_path):
    folder = Path(pair_sets["all"]["out_dir"])
    rows = _rows(folder)
    columns = {name: [row[name] for row in rows] for name in ("caption", "label_0", "label_1", "model_0", "model_1")}
    for side in ("jpg_0", "jpg_1"):
        columns[side] = [(folder / row[side]).read_bytes() for row in rows]
    pq.write_table(pa.table(columns), tmp_path / "train-00000.parquet", row_group_size=5)
    from_jsonl = load_preference_data(str(folder))
    from_parquet = load_preference_data(str(tmp_path / "train-00000.parquet"))
    assert from_parquet.sample_ids == from_jsonl.sample_ids and from_parquet.fingerprint == from_jsonl.fingerprint
    assert from_parquet[5].winner.tobytes() == from_jsonl[5].winner.tobytes()
    assert load_preference_data(str(tmp_path)).sample_ids == from_jsonl.sample_ids  # a folder of shards
    assert load_preference_data(str(tmp_path / "train-00000.parquet"), limit=7).stats["rows"] == 7


def test_sample_ids_name_the_content_not_the_order_side_or_path(pair_sets, tmp_path):
    folder = Path(pair_sets["all"]["out_dir"])
    rows = _rows(folder)
    original = load_preference_data(str(folder))
    copy = tmp_path / "copy"
    shutil.copytree(folder / "images", copy / "images")
    swapped = [{**row, "jpg_0": row["jpg_1"], "jpg_1": row["jpg_0"], "label_0": row["label_1"],
                "label_1": row["label_0"]} for row in reversed(rows)]
    _write_jsonl(copy / PAIRS_FILE, swapped)
    reordered = load_preference_data(str(copy))
    assert reordered.sample_ids == original.sample_ids[::-1]
    assert reordered.fingerprint != original.fingerprint  # the fingerprint names the order too
    rebuilt = write_preference_folder([{**row, "jpg_0": (folder / row["jpg_0"]).read_bytes(),
                                        "jpg_1": str(folder / row["jpg_1"])} for row in rows], tmp_path / "rebuilt")
    assert load_preference_data(str(rebuilt)).sample_ids == original.sample_ids
    assert not list((tmp_path / "rebuilt").glob(".*.tmp"))


def test_hub_dataset_offline_and_unknown_paths_fail_in_one_line(tmp_path, rpo_home):
    for stream in (False, True):
        with pytest.raises(MissingWeightsError, match=r"yuvalkirstain/pickapic_v2 \[train\] cannot be loaded: it is "
                                                      "not cached on this machine and HF_HUB_OFFLINE is set"):
            load_preference_data("yuvalkirstain/pickapic_v2", limit=10, stream=stream)
    assert not (rpo_home / "preferences").exists()  # nothing half-made is left behind
    with pytest.raises(BadInputError, match="does not exist; accepted: a .jsonl or .parquet file"):
        load_preference_data(str(tmp_path / "nothing.jsonl"))
    (tmp_path / "pairs.csv").write_text("caption\n")
    with pytest.raises(BadInputError, match="suffix '.csv'; accepted: .jsonl, .parquet"):
        load_preference_data(str(tmp_path / "pairs.csv"))
    with pytest.raises(BadInputError, match="limit -1"):
        load_preference_data(str(tmp_path), limit=-1)
