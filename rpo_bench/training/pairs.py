"""AI-feedback preference pairs: k seeded images per prompt, judged by a registry metric.

Pick-a-Pic's images were largely withdrawn from the Hub; this makes a preference set anyone can rebuild. The
images and scores come from `evaluate`, so they are cached, resumable and recorded with their fingerprints; this
module only picks pairs out of the store and writes them in the layout `load_preference_data` reads.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import dataclass, field, replace
from itertools import combinations
from pathlib import Path
from typing import Any

from rpo_bench.core.atomic import atomic_write
from rpo_bench.core.config import default_image_cache, resolve_device, resolve_dtype, writable_dir
from rpo_bench.core.errors import BadInputError
from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate
from rpo_bench.evaluation.image_cache import ImageCache
from rpo_bench.evaluation.prompts import load_prompt_set
from rpo_bench.evaluation.protocols import PROTOCOLS
from rpo_bench.evaluation.store import ResultsStore
from rpo_bench.metrics import make_metric
from rpo_bench.models.catalog import resolve_model
from rpo_bench.models.loader import model_fingerprint
from rpo_bench.training.data import write_preference_folder

PAIR_MODES = ("best-worst", "top-bottom", "all")
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class ScoredImage:
    seed: int
    score: float
    sha256: str
    report: float | None = None  # the report metric's score (e.g. the binary oracle beside its probability)


@dataclass(frozen=True)
class PairSettings:
    """How pairs are picked and labelled; validated once, here, for every caller (CLI, micro-pickapic, tests)."""

    k: int = 4
    mode: str = "best-worst"
    margin: float = 0.0
    pairs_per_prompt: int | None = None
    label_noise: float = 0.0
    label_seed: int = 0

    def __post_init__(self) -> None:
        _validate(self.k, self.mode, self.margin)
        if self.pairs_per_prompt is not None:
            if self.mode != "top-bottom":
                raise BadInputError(f"pairs per prompt = {self.pairs_per_prompt!r} with pair mode {self.mode!r}; "
                                    "accepted: pairs per prompt only with pair mode top-bottom")
            if not _is_int(self.pairs_per_prompt) or not 1 <= self.pairs_per_prompt <= (self.k // 2) ** 2:
                raise BadInputError(f"pairs per prompt = {self.pairs_per_prompt!r}: accepted: an integer from 1 to "
                                    f"{(self.k // 2) ** 2} (top {self.k // 2} x bottom {self.k // 2} of k = {self.k})")
        if (isinstance(self.label_noise, bool) or not isinstance(self.label_noise, int | float)
                or not math.isfinite(self.label_noise) or self.label_noise < 0):
            raise BadInputError(f"label noise {self.label_noise!r}: accepted: a number >= 0 (0: noiseless labels)")
        if not _is_int(self.label_seed) or self.label_seed < 0:
            raise BadInputError(f"label seed {self.label_seed!r}: accepted: an integer >= 0")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(k: int, mode: str, margin: float) -> None:
    if not _is_int(k) or k < 2:
        raise BadInputError(f"k = {k!r}: accepted: an integer >= 2 (images per prompt, seeds 0..k-1)")
    if mode not in PAIR_MODES:
        raise BadInputError(f"pair mode {mode!r}; accepted: {', '.join(PAIR_MODES)}")
    if (isinstance(margin, bool) or not isinstance(margin, int | float) or not math.isfinite(margin)
            or margin < 0):
        raise BadInputError(f"margin = {margin!r}: accepted: a number >= 0 (the minimum score gap of a pair)")


def _check_names(model: str, prompts: str, metric: str, protocol: str | None, device: str, dtype: str,
                 batch_size: int) -> None:
    """Every name resolved before the output folder exists: a typo must not leave an empty folder behind."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadInputError(f"--batch-size {batch_size!r}: accepted: an integer >= 1")
    resolve_dtype(dtype, resolve_device(device))
    spec = resolve_model(model)
    PROTOCOLS.get(protocol or spec.protocol)
    load_prompt_set(prompts)
    make_metric(metric)  # an unloaded metric: the name and its argument, no weights


def _scored_images(store: ResultsStore, model: str, protocol: str | None, device: str, dtype: str, metric_key: str,
                   metric_version: str, prompts: list[str], k: int) -> dict[str, list[ScoredImage]]:
    """prompt -> its k scored images, from the store rows of exactly this model, protocol, dtype and metric."""
    spec = resolve_model(model)
    protocol_fp = PROTOCOLS.get(protocol or spec.protocol).fingerprint(spec.family)
    dtype_name = str(resolve_dtype(dtype, resolve_device(device))).removeprefix("torch.")
    rows = store.image_scores(metric_key, model_fingerprint(spec), protocol_fp, dtype_name, metric_version,
                              seeds_below=k)
    wanted = set(prompts)
    found: dict[str, list[ScoredImage]] = {}
    for _key, prompt, seed, value, sha in sorted(rows, key=lambda row: (row[1], row[2])):
        if prompt in wanted:
            found.setdefault(prompt, []).append(ScoredImage(seed, value, sha))
    return found


def _candidate_pairs(images: list[ScoredImage], settings: PairSettings,
                     sign: float) -> list[tuple[ScoredImage, ScoredImage]]:
    """(winner, loser) candidates; `sign` turns lower-is-better metrics around.

    top-bottom: the prompt's t best images against its t worst, t = k // 2 or just enough for pairs_per_prompt,
    the closest to best-vs-worst first (by the sum of the two ranks), so every winner and every loser appears
    about equally often and the middle of the ranking, where the judge is least sure, is left out."""
    ranked = sorted(images, key=lambda image: (-sign * image.score, image.seed))
    if settings.mode == "best-worst":
        return [(ranked[0], ranked[-1])]
    if settings.mode == "top-bottom":
        wanted = settings.pairs_per_prompt or (len(ranked) // 2) ** 2
        t = min(len(ranked) // 2, math.ceil(math.sqrt(wanted)))
        grid = sorted((i + j, i, j) for i in range(t) for j in range(t))
        return [(ranked[i], ranked[len(ranked) - 1 - j]) for _, i, j in grid]
    out = []
    for a, b in combinations(images, 2):
        out.append((a, b) if sign * a.score >= sign * b.score else (b, a))
    return out


def _row(prompt: str, winner: ScoredImage, loser: ScoredImage, cache: ImageCache, model: str, metric_key: str,
         metric_version: str, protocol: str) -> dict[str, Any]:
    """Which side the winner sits on is drawn from an RNG seeded by the pair itself: realistic (label_0 is not
    always 1) and the same pair always gets the same side, whatever the mode or the order."""
    winner_first = random.Random(f"{prompt}\0{winner.seed}\0{loser.seed}").random() < 0.5
    first, second = (winner, loser) if winner_first else (loser, winner)
    row = {
        "caption": prompt,
        "jpg_0": cache.object_path(first.sha256), "jpg_1": cache.object_path(second.sha256),
        "label_0": 1.0 if winner_first else 0.0, "label_1": 0.0 if winner_first else 1.0,
        "model_0": model, "model_1": model,
        "score_0": first.score, "score_1": second.score, "seed_0": first.seed, "seed_1": second.seed,
        "metric": metric_key, "metric_version": metric_version, "protocol": protocol,
    }
    if first.report is not None and second.report is not None:
        row |= {"report_score_0": first.report, "report_score_1": second.report}
    return row


def make_pairs(model: str, prompts: str, metric: str, out_dir: Path, *, k: int = 4, mode: str = "best-worst",
               margin: float = 0.0, pairs_per_prompt: int | None = None, protocol: str | None = None,
               device: str = "auto", dtype: str = "auto", batch_size: int = 4, store: Path | None = None,
               image_cache: Path | None = None, label_noise: float = 0.0, label_seed: int = 0,
               report_metric: str | None = None, show_progress: bool = True) -> dict[str, Any]:
    """Generate k images per prompt (seeds 0..k-1), score them, and write pairs whose score gap exceeds `margin`.

    best-worst: one pair per prompt, its best image against its worst; top-bottom: its best images against its
    worst (up to pairs_per_prompt); all: every pair of its k images.
    label_noise T > 0 makes the labels human-like (Bradley-Terry): the higher-scored image wins with probability
    sigmoid(gap / T), so close calls are sometimes labelled the wrong way round, from a seeded draw per pair.
    `report_metric` (e.g. the binary micro-oracle beside micro-oracle:prob) is scored too and summarised for the
    winners, the losers and all images; it does not choose pairs. The summary is also written to summary.json.
    """
    settings = PairSettings(k=k, mode=mode, margin=margin, pairs_per_prompt=pairs_per_prompt,
                            label_noise=label_noise, label_seed=label_seed)
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"output {out_dir} is a file; give a folder")
    _check_names(model, prompts, metric, protocol, device, dtype, batch_size)
    if report_metric is not None:
        make_metric(report_metric)
    created = not out_dir.exists()
    writable_dir(out_dir, "the preference pairs")
    try:
        return _make_pairs(model, prompts, metric, out_dir, settings, protocol=protocol, device=device, dtype=dtype,
                           batch_size=batch_size, store=store, image_cache=image_cache, report_metric=report_metric,
                           show_progress=show_progress)
    except BaseException:
        if created and not any(out_dir.iterdir()):  # nothing computed went in: leave no trace of the typo
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _make_pairs(model: str, prompts: str, metric: str, out_dir: Path, settings: PairSettings, *,
                protocol: str | None, device: str, dtype: str, batch_size: int, store: Path | None,
                image_cache: Path | None, report_metric: str | None, show_progress: bool) -> dict[str, Any]:
    started = time.perf_counter()
    store_path = Path(store) if store is not None else out_dir / "generation.sqlite"
    cache_path = Path(image_cache) if image_cache is not None else default_image_cache()
    metrics = (metric,) if report_metric is None else (metric, report_metric)
    result = evaluate(EvaluateConfig(models=(model,), prompts=prompts, metrics=metrics,
                                     seeds=tuple(range(settings.k)), protocol=protocol, store=store_path,
                                     image_cache=cache_path, device=device, dtype=dtype, batch_size=batch_size,
                                     show_progress=show_progress))
    judge = make_metric(metric)
    report = make_metric(report_metric) if report_metric is not None else None
    prompt_texts = list(dict.fromkeys(p.text for p in load_prompt_set(prompts).prompts))
    spec = resolve_model(model)
    protocol_name = PROTOCOLS.get(protocol or spec.protocol).name
    results = ResultsStore(store_path)
    try:
        scored = _scored_images(results, model, protocol, device, dtype, judge.key, judge.version, prompt_texts,
                                settings.k)
        if report is not None:
            scored = _with_report(scored, _scored_images(results, model, protocol, device, dtype, report.key,
                                                         report.version, prompt_texts, settings.k))
    finally:
        results.close()
    picked = pick_pairs(prompt_texts, scored, settings, 1.0 if judge.higher_is_better else -1.0)
    if not picked.pairs:
        raise BadInputError(f"no pair has a {judge.key} score gap above margin {settings.margin} (largest gap: "
                            f"{picked.largest_gap:.4g}); lower --margin or raise --k")
    cache = ImageCache(cache_path)
    try:
        rows = [_row(prompt, winner, loser, cache, spec.name, judge.key, judge.version, protocol_name)
                | {"label_noise": settings.label_noise} for prompt, winner, loser in picked.pairs]
    finally:
        cache.close()
    write_preference_folder(rows, out_dir)
    summary = _summary(picked, scored, settings, judge.key, report.key if report else None, result.generated,
                       len(prompt_texts), time.perf_counter() - started, out_dir)
    _write_json(out_dir / SUMMARY_FILE, summary)
    return summary


def _with_report(scored: dict[str, list[ScoredImage]],
                 report: dict[str, list[ScoredImage]]) -> dict[str, list[ScoredImage]]:
    """Attach each image's report score; an image the report metric did not score has none."""
    by_seed = {(prompt, image.seed): image.score for prompt, images in report.items() for image in images}
    return {prompt: [replace(image, report=by_seed.get((prompt, image.seed))) for image in images]
            for prompt, images in scored.items()}


@dataclass
class PickedPairs:
    pairs: list[tuple[str, ScoredImage, ScoredImage]] = field(default_factory=list)  # (prompt, labelled winner, loser)
    dropped: int = 0
    flipped: int = 0
    largest_gap: float = 0.0


def pick_pairs(prompts: list[str], scored: dict[str, list[ScoredImage]], settings: PairSettings,
                sign: float) -> PickedPairs:
    picked = PickedPairs()
    for prompt in prompts:
        images = scored.get(prompt, [])
        if len(images) < 2:
            continue
        kept = 0
        for winner, loser in _candidate_pairs(images, settings, sign):
            if settings.pairs_per_prompt is not None and kept == settings.pairs_per_prompt:
                break
            gap = abs(winner.score - loser.score)
            picked.largest_gap = max(picked.largest_gap, gap)
            if gap <= settings.margin:
                picked.dropped += 1
                continue
            if settings.label_noise and _bradley_terry_flip(prompt, winner, loser, gap, settings):
                winner, loser = loser, winner
                picked.flipped += 1
            picked.pairs.append((prompt, winner, loser))
            kept += 1
    return picked


def _mean(values: list[float]) -> float | None:
    return round(math.fsum(values) / len(values), 6) if values else None


def _summary(picked: PickedPairs, scored: dict[str, list[ScoredImage]], settings: PairSettings, metric: str,
             report_metric: str | None, generated: int, prompts: int, seconds: float, out_dir: Path) -> dict[str, Any]:
    """What the set is worth: its size, how noisy its labels are, and how much better its winners are than the
    model's typical image (base_mean: every sample, paired or not) - a preference set whose winners are no
    better than the base's average teaches little."""
    images = [image for group in scored.values() for image in group]
    pairs = len(picked.pairs)
    summary: dict[str, Any] = {
        "prompts": prompts, "prompts_with_pairs": len({prompt for prompt, _, _ in picked.pairs}),
        "images": len(images), "pairs": pairs, "dropped_for_margin": picked.dropped,
        "mode": settings.mode, "k": settings.k, "margin": settings.margin,
        "pairs_per_prompt": settings.pairs_per_prompt, "label_noise": settings.label_noise,
        "label_seed": settings.label_seed, "labels_flipped": picked.flipped,
        "label_disagreement": round(picked.flipped / pairs, 6) if pairs else 0.0,
        "metric": metric, "winners_mean": _mean([w.score for _, w, _ in picked.pairs]),
        "losers_mean": _mean([loser.score for _, _, loser in picked.pairs]),
        "base_mean": _mean([image.score for image in images]),
    }
    if report_metric is not None:
        summary |= {"report_metric": report_metric,
                    "report_winners_mean": _mean([w.report for _, w, _ in picked.pairs if w.report is not None]),
                    "report_losers_mean": _mean([lo.report for _, _, lo in picked.pairs if lo.report is not None]),
                    "report_base_mean": _mean([image.report for image in images if image.report is not None])}
    return summary | {"generated": generated, "seconds": round(seconds, 2),
                      "pairs_per_second": round(pairs / seconds, 1) if seconds > 0 else None, "out_dir": str(out_dir)}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=1) + "\n")


def _bradley_terry_flip(prompt: str, winner: ScoredImage, loser: ScoredImage, gap: float,
                        settings: PairSettings) -> bool:
    """True when the noisy label prefers the lower-scored image: probability 1 - sigmoid(gap / T), drawn from an
    RNG seeded by the pair and the label seed (not by its position), so a pair keeps its label in any mode."""
    p_correct = 1.0 / (1.0 + math.exp(-gap / settings.label_noise))
    draw = random.Random(f"{prompt}\0{winner.seed}\0{loser.seed}\0bt\0{settings.label_seed}").random()
    return draw >= p_correct
