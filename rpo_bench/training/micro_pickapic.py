"""`micro-pickapic`: a Pick-a-Pic-layout preference set of the micro world, with a preference signal.

micro-base draws k images for every micro-train prompt and the ground-truth judge ranks them by `micro-oracle:prob`,
its mean probability of the requested values: continuous, so a prompt's images rarely tie, unlike the binary
share (steps of 0.2). Each prompt's best images are paired against its worst (top-bottom), so the winners are
clearly better than what the base typically makes and the losers clearly worse. Labels are a Bradley-Terry draw
on the utility gap (temperature `label_noise`): as with people, some close preferences are the wrong way round.
The binary micro-oracle is scored too and reported (winners, losers, all samples): it stays the ground truth.

Deterministic from the model, prompts and settings. The built-in set lives in a folder named by a hash of its
settings, so changing a default (or this module's FORMAT) builds a new set instead of silently reusing an old one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rpo_bench.core.config import home_dir, safe_child
from rpo_bench.core.errors import BadInputError
from rpo_bench.core.progress import stage
from rpo_bench.evaluation.prompts import load_prompt_set
from rpo_bench.metrics import make_metric
from rpo_bench.micro.preference_settings import DEFAULTS, NAME, PAIR_SETTINGS, TUNABLE
from rpo_bench.models.catalog import resolve_model
from rpo_bench.models.loader import model_fingerprint
from rpo_bench.training.pairs import PairSettings, make_pairs

FORMAT = 2  # bump when the way pairs are picked or labelled changes: it moves the built-in set's folder


def settings_key(settings: dict[str, Any]) -> str:
    """A short, stable name for a set of settings and what they resolve to (the prompts' texts, the model's and
    the judge's fingerprints), for its cache folder: new weights or an edited prompt file make a new set."""
    texts = [prompt.text for prompt in load_prompt_set(settings["prompts"]).prompts]
    identity = {**settings, "format": FORMAT, "model_fingerprint": model_fingerprint(resolve_model(settings["model"])),
                "metric_version": make_metric(settings["metric"]).version,
                "prompts_sha256": hashlib.sha256(json.dumps(texts).encode("utf-8")).hexdigest()}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:12]


def micro_pickapic_dir(settings: dict[str, Any] | None = None) -> Path:
    """$RPO_BENCH_HOME/preferences/micro-pickapic-<settings hash>: one folder per distinct set."""
    key = settings_key(settings if settings is not None else DEFAULTS)
    return safe_child(home_dir() / "preferences", f"{NAME}-{key}", what="preference set")


def build_micro_pickapic(out_dir: Path | None = None, *, device: str = "auto", show_progress: bool = True,
                         **overrides: Any) -> dict:
    """Build (or resume) micro-pickapic with the defaults changed by `overrides` (any of TUNABLE).

    Without `out_dir` the set goes to its settings' folder under the home; the summary is returned and written
    to summary.json beside pairs.jsonl."""
    unknown = sorted(set(overrides) - set(TUNABLE))
    if unknown:
        raise BadInputError(f"micro-pickapic setting {unknown[0]!r}; accepted: {', '.join(TUNABLE)}")
    settings = {**DEFAULTS, **overrides}
    if "pairs_per_prompt" not in overrides:
        settings["pairs_per_prompt"] = _default_pairs_per_prompt(settings["mode"], settings["k"])
    PairSettings(**{name: settings[name] for name in PAIR_SETTINGS})  # bad values fail before any folder is named
    out_dir = Path(out_dir) if out_dir is not None else micro_pickapic_dir(settings)
    return make_pairs(out_dir=out_dir, device=device, dtype="float32", batch_size=32, show_progress=show_progress,
                      **settings)


def _default_pairs_per_prompt(mode: str, k: Any) -> int | None:
    """The default count belongs to top-bottom, and a smaller k has fewer pairs to give ((k // 2) ** 2)."""
    if mode != "top-bottom":
        return None
    if isinstance(k, int) and not isinstance(k, bool) and k >= 2:
        return min(DEFAULTS["pairs_per_prompt"], (k // 2) ** 2)
    return DEFAULTS["pairs_per_prompt"]  # a bad k is reported by the validation, not hidden here


def resolve_preference_source(source: str, show_progress: bool = True) -> str:
    """`micro-pickapic` names the built-in set with the current defaults (built on first use); anything else
    passes through."""
    if source != NAME:
        return source
    folder = micro_pickapic_dir()
    # summary.json is written right after pairs.jsonl: without it the build stopped in between; finishing it
    # reuses every image and score
    if not (folder / "pairs.jsonl").is_file() or not (folder / "summary.json").is_file():
        stage("building pairs", f"{NAME}: {DEFAULTS['model']} candidates ranked by {DEFAULTS['metric']} (built once, "
              f"then reused from {folder})")
        build_micro_pickapic(folder, show_progress=show_progress)
    return str(folder)
