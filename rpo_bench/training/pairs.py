"""AI-feedback preference pairs: k seeded images per prompt, judged by a registry metric.

Pick-a-Pic's images were largely withdrawn from the Hub; this makes a preference set anyone can rebuild. The
images and scores come from `evaluate`, so they are cached, resumable and recorded with their fingerprints; this
module only picks pairs out of the store and writes them in the layout `load_preference_data` reads.
"""

from __future__ import annotations

import math
import random
import shutil
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from rpo_bench.config import resolve_device, resolve_dtype, writable_dir
from rpo_bench.errors import BadInputError
from rpo_bench.evaluate import EvaluateConfig, default_image_cache, evaluate
from rpo_bench.image_cache import ImageCache
from rpo_bench.metrics import make_metric
from rpo_bench.models.catalog import resolve_model
from rpo_bench.models.loader import model_fingerprint
from rpo_bench.prompts import load_prompt_set
from rpo_bench.protocols import PROTOCOLS
from rpo_bench.store import ResultsStore
from rpo_bench.training.data import write_preference_folder

PAIR_MODES = ("best-worst", "all")


@dataclass(frozen=True)
class ScoredImage:
    seed: int
    score: float
    sha256: str


def _validate(k: int, mode: str, margin: float) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise BadInputError(f"k = {k!r}: accepted: an integer >= 2 (images per prompt, seeds 0..k-1)")
    if mode not in PAIR_MODES:
        raise BadInputError(f"pair mode {mode!r}; accepted: {', '.join(PAIR_MODES)}")
    if not isinstance(margin, int | float) or not math.isfinite(margin) or margin < 0:
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
    rows = store.query(
        "SELECT i.prompt, i.seed, s.value, i.image_sha256 FROM images i JOIN scores s USING (image_key) "
        "WHERE i.model_fingerprint = ? AND i.protocol_fingerprint = ? AND i.dtype = ? AND s.metric = ? "
        "AND s.metric_version = ? AND i.seed < ? ORDER BY i.prompt, i.seed",
        (model_fingerprint(spec), protocol_fp, dtype_name, metric_key, metric_version, k))
    wanted = set(prompts)
    found: dict[str, list[ScoredImage]] = {}
    for prompt, seed, value, sha in rows:
        if prompt in wanted:
            found.setdefault(prompt, []).append(ScoredImage(seed, value, sha))
    return found


def _candidate_pairs(images: list[ScoredImage], mode: str, sign: float) -> list[tuple[ScoredImage, ScoredImage]]:
    """(winner, loser) candidates; `sign` turns lower-is-better metrics around."""
    if mode == "best-worst":
        ranked = sorted(images, key=lambda image: (-sign * image.score, image.seed))
        return [(ranked[0], ranked[-1])]
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
    return {
        "caption": prompt,
        "jpg_0": cache.object_path(first.sha256), "jpg_1": cache.object_path(second.sha256),
        "label_0": 1.0 if winner_first else 0.0, "label_1": 0.0 if winner_first else 1.0,
        "model_0": model, "model_1": model,
        "score_0": first.score, "score_1": second.score, "seed_0": first.seed, "seed_1": second.seed,
        "metric": metric_key, "metric_version": metric_version, "protocol": protocol,
    }


def make_pairs(model: str, prompts: str, metric: str, out_dir: Path, *, k: int = 4, mode: str = "best-worst",
               margin: float = 0.0, protocol: str | None = None, device: str = "auto", dtype: str = "auto",
               batch_size: int = 4, store: Path | None = None, image_cache: Path | None = None,
               label_noise: float = 0.0, show_progress: bool = True) -> dict[str, Any]:
    """Generate k images per prompt (seeds 0..k-1), score them, and write pairs whose score gap exceeds `margin`.

    best-worst: one pair per prompt, its best image against its worst; all: every pair of its k images.
    label_noise T > 0 makes the labels human-like (Bradley-Terry): the higher-scored image wins with probability
    sigmoid(gap / T), so close calls are sometimes labelled the wrong way round, from a seeded draw per pair.
    """
    _validate(k, mode, margin)
    if not math.isfinite(label_noise) or label_noise < 0:
        raise BadInputError(f"label noise {label_noise!r}: accepted: a number >= 0 (0: noiseless labels)")
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"output {out_dir} is a file; give a folder")
    _check_names(model, prompts, metric, protocol, device, dtype, batch_size)
    created = not out_dir.exists()
    writable_dir(out_dir, "the preference pairs")
    try:
        return _make_pairs(model, prompts, metric, out_dir, k=k, mode=mode, margin=margin, protocol=protocol,
                           device=device, dtype=dtype, batch_size=batch_size, store=store, image_cache=image_cache,
                           label_noise=label_noise, show_progress=show_progress)
    except BaseException:
        if created and not any(out_dir.iterdir()):  # nothing computed went in: leave no trace of the typo
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _make_pairs(model: str, prompts: str, metric: str, out_dir: Path, *, k: int, mode: str, margin: float,
                protocol: str | None, device: str, dtype: str, batch_size: int, store: Path | None,
                image_cache: Path | None, label_noise: float, show_progress: bool) -> dict[str, Any]:
    store_path = Path(store) if store is not None else out_dir / "generation.sqlite"
    cache_path = Path(image_cache) if image_cache is not None else default_image_cache()
    result = evaluate(EvaluateConfig(models=(model,), prompts=prompts, metrics=(metric,), seeds=tuple(range(k)),
                                     protocol=protocol, store=store_path, image_cache=cache_path, device=device,
                                     dtype=dtype, batch_size=batch_size, show_progress=show_progress))
    judge = make_metric(metric)
    sign = 1.0 if judge.higher_is_better else -1.0
    prompt_texts = list(dict.fromkeys(p.text for p in load_prompt_set(prompts).prompts))
    spec = resolve_model(model)
    protocol_name = PROTOCOLS.get(protocol or spec.protocol).name
    results = ResultsStore(store_path)
    try:
        scored = _scored_images(results, model, protocol, device, dtype, judge.key, judge.version, prompt_texts, k)
    finally:
        results.close()
    cache = ImageCache(cache_path)
    rows, dropped, largest_gap, flipped = [], 0, 0.0, 0
    try:
        for prompt in prompt_texts:
            images = scored.get(prompt, [])
            if len(images) < 2:
                continue
            for winner, loser in _candidate_pairs(images, mode, sign):
                gap = abs(winner.score - loser.score)
                largest_gap = max(largest_gap, gap)
                if gap > margin:
                    if label_noise and _bradley_terry_flip(prompt, winner, loser, gap, label_noise):
                        winner, loser = loser, winner
                        flipped += 1
                    rows.append(_row(prompt, winner, loser, cache, spec.name, judge.key, judge.version,
                                     protocol_name) | {"label_noise": label_noise})
                else:
                    dropped += 1
    finally:
        cache.close()
    if not rows:
        raise BadInputError(f"no pair has a {judge.key} score gap above margin {margin} (largest gap: "
                            f"{largest_gap:.4g}); lower --margin or raise --k")
    write_preference_folder(rows, out_dir)
    return {"prompts": len(prompt_texts), "images": sum(len(v) for v in scored.values()), "pairs": len(rows),
            "dropped_for_margin": dropped, "labels_flipped": flipped, "generated": result.generated,
            "out_dir": str(out_dir)}


def _bradley_terry_flip(prompt: str, winner: ScoredImage, loser: ScoredImage, gap: float, temperature: float) -> bool:
    """True when the noisy label prefers the lower-scored image: probability 1 - sigmoid(gap / T)."""
    p_correct = 1.0 / (1.0 + math.exp(-gap / temperature))
    return random.Random(f"{prompt}\0{winner.seed}\0{loser.seed}\0bt").random() >= p_correct
