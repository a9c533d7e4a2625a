"""`micro-pickapic`: a Pick-a-Pic-layout preference set of the micro world.

micro-base draws k images for every micro-train prompt; the ground-truth judge scores them; every pair of a
prompt's images with different scores becomes a row, labelled by a Bradley-Terry draw on the judge's utility
(temperature `label_noise`), so that, as with human labels, some close preferences are the wrong way round.
Ties (equal utility) are dropped. Deterministic from the model, prompts and settings; built once and cached.
"""

from __future__ import annotations

from pathlib import Path

from rpo_bench.config import home_dir

NAME = "micro-pickapic"
DEFAULTS = dict(model="micro-base", prompts="micro-train", metric="micro-oracle", k=4, mode="all",
                label_noise=0.1, protocol="micro")


def micro_pickapic_dir() -> Path:
    return home_dir() / "preferences" / NAME


def build_micro_pickapic(out_dir: Path | None = None, *, k: int = DEFAULTS["k"],
                         label_noise: float = DEFAULTS["label_noise"], device: str = "auto",
                         show_progress: bool = True) -> dict:
    from rpo_bench.training.pairs import make_pairs

    out_dir = out_dir or micro_pickapic_dir()
    settings = {**DEFAULTS, "k": k, "label_noise": label_noise}
    return make_pairs(out_dir=out_dir, device=device, dtype="float32", batch_size=32, show_progress=show_progress,
                      **settings)


def resolve_preference_source(source: str, show_progress: bool = True) -> str:
    """`micro-pickapic` names the built-in set (built on first use); anything else passes through."""
    if source != NAME:
        return source
    folder = micro_pickapic_dir()
    if not (folder / "pairs.jsonl").is_file():
        build_micro_pickapic(folder, show_progress=show_progress)
    return str(folder)
