"""Test isolation: no network, and a private cache home per test session (tiny models build once per session)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def session_home(tmp_path_factory):
    return tmp_path_factory.mktemp("rpo-bench-home")


@pytest.fixture(autouse=True)
def rpo_home(session_home, monkeypatch):
    """Every test sees the same session home (built tiny models are reused) and re-reads user registries."""
    monkeypatch.setenv("RPO_BENCH_HOME", str(session_home))
    yield session_home
    from rpo_bench.core.registry import reset_all_user_entries

    reset_all_user_entries()


def private_home(root, session_home):
    """A home of its own under `root` that shares the session's built tiny models (built once per session), for
    tests whose registry.toml or caches must not leak into other tests."""
    home = root / "home"
    home.mkdir()
    (session_home / "models").mkdir(exist_ok=True)
    (home / "models").symlink_to(session_home / "models", target_is_directory=True)
    return home


def striped_references(folder, count: int, seed: int, axis: int) -> list[str]:
    """`count` 32 px PNGs of stripes every 4 px along `axis` (0: rows, 1: columns), one seeded colour each: a style
    folder that needs no renderer. Returns the file names."""
    import numpy as np  # noqa: PLC0415 - conftest stays light for tests that need no arrays
    from PIL import Image  # noqa: PLC0415 - as above

    folder.mkdir()
    rng = np.random.default_rng(seed)
    every_fourth = np.s_[::4] if axis == 0 else np.s_[:, ::4]
    names = [f"{i:02d}.png" for i in range(count)]
    for name in names:
        stripes = np.zeros((32, 32, 3), dtype=np.uint8)
        stripes[every_fourth] = rng.integers(0, 255, 3, dtype=np.uint8)
        Image.fromarray(stripes).save(folder / name)
    return names
