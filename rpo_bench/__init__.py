"""rpo-bench: Diffusion-RPO, Diffusion-DPO and SFT for text-to-image diffusion, and the benchmark to compare them.

The public API, for use from Python (README "Use from Python"); each name loads its module on first use, so
`import rpo_bench` (and `rpo-bench --help`) stays fast:

- registries: `MODELS`, `METRICS`, `PROMPT_SETS`, `PROTOCOLS`, `STYLES` (`.names()`, `.get(name)`, `.register(...)`)
- `evaluate(EvaluateConfig(...)) -> EvaluateResult`, and `EvaluateConfig`
- `train(config) -> Path`, with `build_config(preset, file_values, overrides)` for the config
- `build_report(store_path, ...) -> Report`, and `render_markdown(report)`
"""

from __future__ import annotations

import importlib

from rpo_bench.core.version import __version__

_API = {
    "MODELS": "rpo_bench.models.catalog", "METRICS": "rpo_bench.metrics",
    "PROMPT_SETS": "rpo_bench.evaluation.prompts", "PROTOCOLS": "rpo_bench.evaluation.protocols",
    "STYLES": "rpo_bench.style.registry",
    "evaluate": "rpo_bench.evaluation.evaluate", "EvaluateConfig": "rpo_bench.evaluation.evaluate",
    "train": "rpo_bench.training.trainer", "build_config": "rpo_bench.training.config",
    "build_report": "rpo_bench.reporting.report", "render_markdown": "rpo_bench.reporting.markdown",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'rpo_bench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
