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
