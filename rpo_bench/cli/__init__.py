"""The `rpo-bench` command line: one module per command group, `console` for what they share, and `app` for the
typer app and the entry point.

Imports go one way: `app` imports the command modules, a command module imports only `console` (and the
library), and nothing here imports `app` or this package back. What callers use (`main`, `run`, `printable`,
`print_summary`) is loaded on first use, so that importing one command module does not build the whole app.
`rpo_bench.cli.console` and `rpo_bench.cli.app` are the modules; the console object is
`rpo_bench.cli.console.console` and the typer app `rpo_bench.cli.app.app`."""

from __future__ import annotations

import importlib

_EXPORTS = {"main": "app", "run": "app", "printable": "console", "print_summary": "evaluate"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
