"""How well could any linear probe on the style's CLIP embeddings agree with the micro judge?

`style-prob` is a logistic probe fitted on references against base images; where the micro world has a judge,
its agreement with the judge's "in style" call is measured on the generated images (`compare.probe_agreement`).
When that agreement is low, two causes are possible: the fit (references and base images do not span the partly
stylised images trained models draw) or the embedding (the judge's call is not linearly readable from it at all).
The ceiling separates them: a logistic probe with the same regularisation, fitted on the judge's own labels of the
generated images and scored on prompts it was not fitted on (5 folds over prompts), is the most a linear probe on
this embedding can agree. A ceiling near the measured agreement says the embedding is the limit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rpo_bench.evaluation.image_cache import ImageCache
from rpo_bench.evaluation.store import ResultsStore
from rpo_bench.style.embedding import StyleEmbedder
from rpo_bench.style.probe import fit_logistic, probabilities
from rpo_bench.style.registry import get_style

FOLDS = 5


def judged_images(store_path: Path, judge: str) -> list[tuple[str, str, float]]:
    """(image sha256, prompt, the judge's style probability) of every image the judge scored, in key order."""
    with ResultsStore(store_path) as store:
        rows = store.image_scores(judge)
    return [(str(sha), str(prompt), float(value)) for _key, prompt, _seed, value, sha in rows]


def prompt_folds(prompts: list[str], folds: int = FOLDS) -> np.ndarray:
    """Fold of each image: its prompt's rank in sorted order modulo `folds`, so a prompt's images (every model and
    seed) stay together and the split does not depend on the order the images come in."""
    rank = {prompt: i for i, prompt in enumerate(sorted(set(prompts)))}
    return np.array([rank[p] % folds for p in prompts])


def cross_validated_agreement(features: np.ndarray, in_style: np.ndarray, folds: np.ndarray) -> float:
    """Share of images whose held-out-fold prediction (probability above one half) matches `in_style`."""
    correct = 0
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        if np.unique(in_style[train]).size < 2:  # one class only: the best constant predictor
            predicted = np.full(int(test.sum()), bool(in_style[train][0]))
        else:
            weights, bias, _ = fit_logistic(features[train], in_style[train].astype(np.float64))
            predicted = probabilities(weights, bias, features[test]) > 0.5
        correct += int(np.sum(predicted == in_style[test]))
    return correct / len(in_style)


def probe_ceiling(store_path: Path, image_cache: Path, style_name: str, judge: str) -> dict[str, float] | None:
    """{"images", "ceiling", "constant"} for the judged images of a comparison, or None when there are fewer than
    two prompts per fold. `constant` is the agreement of always answering the judge's majority call."""
    import torch  # noqa: PLC0415 - torch loads in seconds: on first use


    rows = judged_images(store_path, judge)
    prompts = [prompt for _, prompt, _ in rows]
    if len(set(prompts)) < 2 * FOLDS:
        return None
    cache = ImageCache(image_cache)
    try:
        images = [cache.open(sha) for sha, _, _ in rows]
    finally:
        cache.close()
    embedder = StyleEmbedder(get_style(style_name)).load("cpu", torch.float32)
    try:
        features = embedder.embed(images)
    finally:
        embedder.unload()
    in_style = np.array([value > 0.5 for _, _, value in rows])
    share = float(in_style.mean())
    return {"images": len(rows), "ceiling": cross_validated_agreement(features, in_style, prompt_folds(prompts)),
            "constant": max(share, 1 - share)}
