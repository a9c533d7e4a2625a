"""Where rpo-bench keeps its files, and the device / dtype / seed choices every command shares."""

from __future__ import annotations

import os
import random
from pathlib import Path

from rpo_bench.errors import BadInputError

HOME_ENV = "RPO_BENCH_HOME"


def home_dir() -> Path:
    """The cache home: built tiny models, image cache, user registry, downloaded prompt sets.

    One variable moves everything, so a user can put it on a big disk and tests can isolate it.
    """
    root = os.environ.get(HOME_ENV)
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "rpo-bench"
    return path


def user_registry_file() -> Path:
    return home_dir() / "registry.toml"


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


DTYPES = ("auto", "float32", "float16", "bfloat16")


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.split(":")[0] not in {"cpu", "cuda", "mps", "xpu"}:
        raise BadInputError(f"unknown device {device!r}; accepted: auto, cpu, cuda, cuda:N, mps, xpu")
    return device


def resolve_dtype(dtype: str, device: str):
    """fp16 on GPUs (what the published SD evaluations use), fp32 on CPU where fp16 is slow or missing."""
    import torch

    if dtype not in DTYPES:
        raise BadInputError(f"unknown dtype {dtype!r}; accepted: {', '.join(DTYPES)}")
    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
