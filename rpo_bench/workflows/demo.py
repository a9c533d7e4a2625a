"""`rpo-bench demo`: the micro world end to end on a laptop CPU, in one command.

Preference pairs (micro-pickapic) or style pairs (`--style S`), SFT, DPO and RPO trained from micro-base on
equal budgets at the measured preset, evaluation on held-out prompts over several seeds against the ground-truth
judge, and the report (markdown, HTML, JSON, CSV) of what came out. It is `rpo-bench micro compare` followed by
`rpo-bench report` on the comparison's store; `--quick` shrinks the data, the steps and the evaluation so that
the whole loop runs in a few minutes (a smoke run of every stage, not evidence: its intervals say so).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rpo_bench.core.atomic import atomic_write
from rpo_bench.core.config import writable_dir
from rpo_bench.core.errors import BadInputError
from rpo_bench.core.locks import folder_lock
from rpo_bench.evaluation.prompts import load_prompt_set
from rpo_bench.reporting.csv_export import export_csv
from rpo_bench.reporting.html import render_html
from rpo_bench.reporting.json_export import export_json_text
from rpo_bench.reporting.markdown import render_markdown
from rpo_bench.reporting.report import build_report
from rpo_bench.reporting.style_section import style_comparisons, style_plot_png
from rpo_bench.training.methods import DEFAULT_SET
from rpo_bench.training.micro_pickapic import build_micro_pickapic
from rpo_bench.workflows.compare import CompareConfig, for_style, run_comparison

# --quick: every stage, at a size whose run takes minutes. Prompts are taken at a stride so that every shape
# and colour of the full sets is still represented.
QUICK_STRIDE = 4
QUICK_K = 4  # micro-base images per training prompt (the full set uses 12)
QUICK_STEPS = 60
QUICK_EVAL_SEEDS = (0, 1)


@dataclass
class DemoConfig:
    out: Path
    style: str | None = None
    quick: bool = False
    methods: Sequence[str] = DEFAULT_SET
    train_seeds: Sequence[int] = (0,)
    eval_seeds: Sequence[int] | None = None  # default (0, 1, 2, 3); --quick (0, 1)
    overrides: dict[str, Any] = field(default_factory=dict)  # training settings over the preset
    jobs: int = 1  # runs trained at once (CompareConfig.jobs)
    show_progress: bool = True


@dataclass
class DemoResult:
    comparison_markdown: str
    files: dict[str, Path]  # what was written, by kind


def _strided_prompt_file(name: str, category: str | None, path: Path) -> Path:
    """Every QUICK_STRIDE-th prompt of a set (of one category), as a JSONL prompt file."""
    prompts = [p for p in load_prompt_set(name).prompts if category is None or p.category == category]
    lines = [json.dumps({"prompt": p.text, "category": p.category}) for p in prompts[::QUICK_STRIDE]]
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:  # unchanged: the same file, same caches
        atomic_write(path, text)
    return path


def _quick_preferences(out: Path, show_progress: bool) -> Path:
    """A small micro-pickapic: the strided training prompts, QUICK_K images each, built like the full set."""
    prompts = _strided_prompt_file("micro-train", None, out / "quick-train-prompts.jsonl")
    summary = build_micro_pickapic(out / "quick-pairs", prompts=str(prompts), k=QUICK_K, show_progress=show_progress)
    return Path(summary["out_dir"])


def compare_config(config: DemoConfig):
    """The `micro compare` this demo runs."""
    overrides = dict(config.overrides)
    eval_seeds = tuple(config.eval_seeds) if config.eval_seeds is not None else (
        QUICK_EVAL_SEEDS if config.quick else (0, 1, 2, 3))
    compare = CompareConfig(out=config.out, methods=tuple(config.methods), train_seeds=tuple(config.train_seeds),
                            eval_seeds=eval_seeds, style=config.style, jobs=config.jobs,
                            show_progress=config.show_progress)
    if config.quick:
        overrides.setdefault("steps", QUICK_STEPS)
        overrides.setdefault("eval_every", QUICK_STEPS // 2)
        if config.style is None:
            overrides.setdefault("data", str(_quick_preferences(config.out, config.show_progress)))
            compare.prompts = str(_strided_prompt_file("micro-test", "unseen", config.out / "quick-test-prompts.jsonl"))
    compare.overrides = overrides
    return compare


def _seeds_text(seeds: Sequence[int]) -> str:
    return ",".join(str(s) for s in seeds)


def command_line(config: DemoConfig, out_label: str | None = None) -> str:
    """The `rpo-bench demo` command that reproduces this configuration (`out_label` in place of its folder)."""
    words = ["rpo-bench", "demo"]
    if config.style:
        words += ["--style", config.style]
    if config.quick:
        words.append("--quick")
    if tuple(config.methods) != DEFAULT_SET:
        words += ["--methods", ",".join(config.methods)]
    words += ["--train-seeds", _seeds_text(config.train_seeds)]
    if config.eval_seeds is not None:
        words += ["--eval-seeds", _seeds_text(config.eval_seeds)]
    for key, value in sorted(config.overrides.items()):
        words += ["--set", f"{key}={value}"]
    command = shlex.join(words)
    return f"{command} --out {out_label or shlex.quote(str(config.out))}"


def full_demo_command(config: DemoConfig) -> str:
    """The `rpo-bench demo` that runs `config` at full size: without --quick, and without its folder and
    evaluation seeds, whose defaults differ from the quick run's (a full run in the quick run's folder would mix
    the two)."""
    words = ["rpo-bench", "demo"]
    if config.style:
        words += ["--style", config.style]
    if tuple(config.methods) != DEFAULT_SET:
        words += ["--methods", ",".join(config.methods)]
    if tuple(config.train_seeds) != (0,):
        words += ["--train-seeds", _seeds_text(config.train_seeds)]
    for key, value in sorted(config.overrides.items()):
        words += ["--set", f"{key}={value}"]
    return shlex.join(words)


def smoke_run_note(config: DemoConfig) -> str | None:
    """What a --quick demo prints at its start and again under its results (None for a full demo): a smoke run
    shows that every stage works, but its few prompts, images, steps and seeds give intervals too wide to rank
    the methods, and a reader of the printed table should not take it for the result."""
    if not config.quick:
        return None
    return ("smoke run (--quick): every stage on a tiny sample of prompts, images, training steps and seeds; its "
            f"numbers are not evidence. The full demo: {full_demo_command(config)}")


def relative_to(text: str, folder: Path) -> str:
    """Paths under the demo's folder (its trained runs are named by path in the store) shown relative to it, so
    that what is printed, written and committed names no machine path."""
    return text.replace(f"{folder.resolve()}/", "").replace(f"{folder}/", "")


def _write(path: Path, data: str | bytes) -> Path:
    return atomic_write(path, data, what="demo file")


def write_report_files(out: Path, command: str, by: str | None = None,
                       baseline: str = "micro-base") -> dict[str, Path]:
    """report.md, report.html, results.json and results.csv of the comparison's store (paths made relative), and
    style.png when it holds a style comparison."""
    report = build_report(out / "results.sqlite", baseline=baseline, by=by, command=command)
    files = {"report.md": render_markdown(report), "report.html": render_html(report),
             "results.json": export_json_text(report),
             "results.csv": export_csv(report)}
    written = {name: _write(out / name, relative_to(text, out)) for name, text in files.items()}
    comparisons = style_comparisons(report)
    if comparisons:
        written["style.png"] = _write(out / "style.png", style_plot_png(comparisons[0]))
    return written


def run_demo(config: DemoConfig, command: str | None = None) -> DemoResult:
    """Train, evaluate, compare, report. Everything lands in config.out; a rerun reuses finished runs, images
    and scores (an interrupted demo resumes)."""
    if not config.train_seeds:
        raise BadInputError("--train-seeds is empty; accepted: one or more seeds, e.g. 0 or 0-2")
    if config.style:  # a bad style is refused before any folder is made

        for_style(CompareConfig(out=config.out, style=config.style))
    writable_dir(config.out, "the demo's runs and reports")
    with folder_lock(config.out, "demo folder"):
        _rows, markdown = run_comparison(compare_config(config))
        markdown = relative_to(markdown, config.out)
        # a style's prompts come in two categories (content only; naming the style): reported apart
        files = write_report_files(config.out, command or command_line(config),
                                   by="category" if config.style else None)
        files["comparison.md"] = _write(config.out / "comparison.md", markdown)
    for name in ("grid.png", "curve.png"):
        if (config.out / name).is_file():
            files[name] = config.out / name
    return DemoResult(markdown, files)
