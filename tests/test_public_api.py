"""`import rpo_bench` gives the small public API the README's "Use from Python" shows, and stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import rpo_bench


def test_every_public_name_resolves_to_the_object_its_module_defines():
    from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate
    from rpo_bench.models.catalog import MODELS
    from rpo_bench.reporting.markdown import render_markdown
    from rpo_bench.reporting.report import build_report
    from rpo_bench.training.trainer import train

    assert (rpo_bench.evaluate, rpo_bench.EvaluateConfig, rpo_bench.MODELS, rpo_bench.build_report,
            rpo_bench.render_markdown, rpo_bench.train) == (evaluate, EvaluateConfig, MODELS, build_report,
                                                             render_markdown, train)
    assert "micro-base" in rpo_bench.MODELS.names() and "micro-sketch" in rpo_bench.STYLES.names()
    assert set(rpo_bench.__all__) <= set(dir(rpo_bench))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = rpo_bench.nope


def test_importing_the_package_loads_no_torch_and_no_stage():
    code = ("import sys, rpo_bench; print(sorted(m for m in sys.modules if m == 'torch' or "
            "m.startswith(('rpo_bench.evaluation', 'rpo_bench.training', 'rpo_bench.models'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_command_line_starts_without_torch():
    """`rpo-bench --help` and every command's --help are built from rpo_bench.cli.app and what it imports (the
    training config's fields become `train`'s flags): none of it may load torch, or start-up takes seconds."""
    code = "import sys, rpo_bench.cli.app; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"
