"""The settings micro-pickapic is built with by default (`rpo-bench micro preferences`; what the chosen values
measure is in docs/micro-recipe.md, "micro-pickapic"). Light on purpose: the command line reads them for its help
text without loading torch."""

from __future__ import annotations

from typing import Any

NAME = "micro-pickapic"
DEFAULTS: dict[str, Any] = dict(model="micro-base", prompts="micro-train", metric="micro-oracle:prob",
                                report_metric="micro-oracle", protocol="micro", k=12, mode="top-bottom",
                                pairs_per_prompt=25, margin=0.05, label_noise=0.1, label_seed=0)
TUNABLE = ("prompts", "k", "mode", "pairs_per_prompt", "margin", "label_noise", "label_seed")
PAIR_SETTINGS = TUNABLE[1:]
