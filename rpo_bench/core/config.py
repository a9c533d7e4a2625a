"""Where rpo-bench keeps its files, and the device / dtype / seed choices every command shares."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

from rpo_bench.core.errors import BadInputError

HOME_ENV = "RPO_BENCH_HOME"


def home_dir() -> Path:
    """The cache home: built tiny models, image cache, user registry, downloaded prompt sets.

    One variable moves everything, so a user can put it on a big disk and tests can isolate it.
    """
    root = os.environ.get(HOME_ENV)
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "rpo-bench"
    return path


# What a name that becomes one path component may not be: it would leave its folder or not be a file name.
_NAME_RULE = "a plain file name (not empty, '.' or '..'; no '/', '\\' or NUL character)"


def safe_child(root: Path, *names: str, what: str = "name") -> Path:
    """`root/name/...` for names that come from users (registry names, seeds, keys), refusing any that would
    leave `root`: absolute paths, `..`, path separators, NUL, or a symlink that resolves outside `root`.

    Every place that turns a name into a cache path goes through here, so the rule is enforced once."""
    for name in names:
        if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name
                or os.path.isabs(name)):
            raise BadInputError(f"{what} {name!r} cannot be used as a file name under {root}; accepted: {_NAME_RULE}")
    child = Path(root).joinpath(*names)
    try:
        inside = child.resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise BadInputError(f"{what} {names[-1]!r}: {child} cannot be resolved ({exc})") from exc
    if not inside:
        raise BadInputError(f"{what} {names[-1]!r}: {child} is a link that leads outside {root}; accepted: "
                            "a name whose file or folder lies inside it")
    return child


def writable_dir(path: Path, needed_for: str) -> Path:
    """Create `path` (and parents), or explain in one line which folder cannot be written and what needs it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"no write permission for {path}")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise BadInputError(f"cannot write the folder {path} ({reason}), needed for {needed_for}; make it writable "
                            f"or point {HOME_ENV} (or the command's path option) at a writable folder") from exc
    return path


def user_registry_file() -> Path:
    return home_dir() / "registry.toml"


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


DTYPES = ("auto", "float32", "float16", "bfloat16")


def resolve_device(device: str = "auto") -> str:
    import torch  # noqa: PLC0415 - torch loads in seconds: on first use

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    # torch accepts "cuda:x" here and fails later with a traceback; the pattern refuses it up front.
    if not re.fullmatch(r"(cpu|mps|(cuda|xpu)(:[0-9]+)?)", device):
        raise BadInputError(f"unknown device {device!r}; accepted: auto, cpu, cuda, cuda:N, mps, xpu, xpu:N")
    return device


def resolve_dtype(dtype: str, device: str):
    """fp16 on GPUs (what the published SD evaluations use), fp32 on CPU where fp16 is slow or missing."""
    import torch  # noqa: PLC0415 - torch loads in seconds: on first use

    if dtype not in DTYPES:
        raise BadInputError(f"unknown dtype {dtype!r}; accepted: {', '.join(DTYPES)}")
    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def seed_everything(seed: int) -> None:
    import numpy as np  # noqa: PLC0415 - numpy: on first use, off the start-up path
    import torch  # noqa: PLC0415 - torch loads in seconds: on first use

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# the defaults of evaluate's --store and --image-cache, which report, grids and styles read too
def default_store_path() -> Path:
    return home_dir() / "results.sqlite"


def default_image_cache() -> Path:
    return home_dir() / "images"
