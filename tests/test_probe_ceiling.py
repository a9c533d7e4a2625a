"""The probe ceiling: what a linear probe fitted on the judge's own calls reaches on prompts it has not seen."""

import numpy as np

from rpo_bench.workflows.probe_ceiling import cross_validated_agreement, prompt_folds


def test_folds_keep_each_prompt_together_and_ignore_order():
    prompts = [f"p{i % 12}" for i in range(60)]
    folds = prompt_folds(prompts)
    for prompt in set(prompts):
        assert len({f for p, f in zip(prompts, folds, strict=True) if p == prompt}) == 1
    shuffled = list(reversed(prompts))
    assert dict(zip(shuffled, prompt_folds(shuffled), strict=True)) == dict(zip(prompts, folds, strict=True))
    assert set(folds) == set(range(5))


def test_ceiling_is_high_when_the_call_is_linear_in_the_embedding():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 8))
    in_style = features[:, 0] + 0.5 * features[:, 1] > 0.3
    folds = prompt_folds([f"p{i // 4}" for i in range(400)])
    assert cross_validated_agreement(features, in_style, folds) > 0.95


def test_ceiling_falls_to_the_majority_share_when_the_embedding_carries_nothing():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(400, 8))
    in_style = rng.random(400) < 0.2  # independent of the features
    folds = prompt_folds([f"p{i // 4}" for i in range(400)])
    agreement = cross_validated_agreement(features, in_style, folds)
    assert agreement < 0.86  # no better than always answering "not in style" (0.8), give or take the fit's noise
    assert agreement > 0.6


def test_a_fold_whose_training_part_has_one_class_predicts_that_class():
    features = np.arange(20, dtype=float).reshape(10, 2)
    in_style = np.zeros(10, dtype=bool)
    assert cross_validated_agreement(features, in_style, np.arange(10) % 5) == 1.0
