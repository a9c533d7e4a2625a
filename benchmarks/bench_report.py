"""How long `rpo-bench report` takes on a large store: 100,000 score rows (by default 4 models x 500 prompts x 10
seeds x 5 metrics, one protocol), written directly with ResultsStore (seeded random scores, fake image hashes: no
image files, so the HTML grid shows missing cells).

1. markdown: `build_report` (reading the store, every section's bootstraps) + `render_markdown`. Target: under 5 s.
2. HTML: `build_report` + `rpo_bench.reporting.html.render_html`. Target: under 30 s (not timed when the module is
   missing).
3. Information: the JSON and CSV exports of the built report (reporting.json_export, csv_export), and markdown with
   `--by category` (4 categories: 5 times the bootstraps).

Each is repeated (`--repeats`, median reported); the targets are absolute times on the 2-core development machine,
so a contended machine can miss them: see the per-repeat times printed beside.

    .venv/bin/python benchmarks/bench_report.py [--models 4] [--prompts 500] [--seeds 10] [--metrics 5]
        [--repeats 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HOME = Path(tempfile.mkdtemp(prefix="rpo-bench-bench-"))
atexit.register(shutil.rmtree, HOME, ignore_errors=True)
os.environ["RPO_BENCH_HOME"] = str(HOME)  # before importing rpo_bench: everything lands in the temp home
os.environ["HF_HUB_OFFLINE"] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import add_common_options, positive, row, run_script  # noqa: E402

MARKDOWN_TARGET_S = 5.0
HTML_TARGET_S = 30.0
CATEGORIES = ("animals", "objects", "scenes", "people")
RUN_ID = "bench-report-run"
PROMPT_SET_ID = "bench-prompts-id"
PROTOCOL_SETTINGS = {"guidance_scale": 5.0, "height": 512, "num_inference_steps": 20, "scheduler": "ddim",
                     "width": 512}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--metrics", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="timings per measurement (median reported)")
    add_common_options(parser)
    return parser


# -- the synthetic store -------------------------------------------------------------------------------------------
def _image_rows(models: list[str], prompts: int, seeds: int) -> list[dict]:
    """Valid `images` rows: every column the schema has, hashes that look real but name no file."""
    import hashlib

    settings = json.dumps(PROTOCOL_SETTINGS, sort_keys=True)
    rows = []
    for model in models:
        for prompt in range(prompts):
            for seed in range(seeds):
                key = hashlib.sha256(f"{model}/{prompt}/{seed}".encode()).hexdigest()
                rows.append({"image_key": key, "model": model, "model_fingerprint": f"fp-{model}",
                             "protocol": "bench-ddim20", "protocol_fingerprint": "bench-protocol-fp",
                             "protocol_settings": settings, "dtype": "float16", "prompt_set": "bench-prompts",
                             "prompt_index": prompt, "category": CATEGORIES[prompt % len(CATEGORIES)],
                             "prompt": f"a synthetic prompt number {prompt}", "seed": seed,
                             "image_sha256": hashlib.sha256(key.encode()).hexdigest(), "run_id": RUN_ID})
    return rows


def build_store(path: Path, n_models: int, prompts: int, seeds: int, n_metrics: int) -> int:
    """Scores = model effect + prompt difficulty + noise (seeded), so comparisons and intervals are realistic."""
    import numpy as np

    from rpo_bench.evaluation.store import PromptSetRecord, ResultsStore

    rng = np.random.default_rng(0)
    models = [f"model-{i}" for i in range(n_models)]
    images = _image_rows(models, prompts, seeds)
    store = ResultsStore(path)
    try:
        config = {"models": [{"name": m} for m in models], "seeds": list(range(seeds)),
                  "metrics": [f"bench-metric-{j}" for j in range(n_metrics)]}
        store.record_run(RUN_ID, config, {"python": "3", "torch": "bench"}, "0" * 40)
        store.record_prompt_set(PromptSetRecord(PROMPT_SET_ID, "bench-prompts", "bench-prompts", "bench", prompts))
        store.add_images(images, [{"prompt_set_id": PROMPT_SET_ID, "model": r["model"], "image_key": r["image_key"],
                                   "prompt_index": r["prompt_index"], "category": r["category"], "run_id": RUN_ID}
                                  for r in images])
        difficulty = rng.normal(0.0, 1.0, size=prompts)
        for j in range(n_metrics):
            effect = {m: 0.05 * i for i, m in enumerate(models)}
            values = [(r["image_key"], float(effect[r["model"]] + difficulty[r["prompt_index"]]
                                             + rng.normal(0.0, 0.5))) for r in images]
            store.add_scores(f"bench-metric-{j}", "1", RUN_ID, values)
        return store.count("scores")
    finally:
        store.close()


# -- timing ----------------------------------------------------------------------------------------------------------
def _times(work: Callable[[], object], repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return seconds


def _html_renderer() -> Callable | None:
    """render_html if rpo_bench.reporting.html exists (it is written separately from this benchmark)."""
    try:
        from rpo_bench.reporting.html import render_html
    except ImportError:
        return None
    return render_html


def _target_row(what: str, seconds: list[float], target_s: float) -> dict:
    median = statistics.median(seconds)
    return row(f"{what} / {target_s:g} s ({median:.2f} s)", median / target_s, "ratio", ratio=median / target_s,
               target="<= 1", seconds=seconds)


def _info_row(what: str, seconds: list[float]) -> dict:
    return row(what, statistics.median(seconds), "s", seconds=seconds)


def main(args: argparse.Namespace) -> list[dict]:
    from rpo_bench.reporting.csv_export import export_csv
    from rpo_bench.reporting.json_export import export_json
    from rpo_bench.reporting.markdown import render_markdown
    from rpo_bench.reporting.report import build_report

    sizes = [positive(f"--{name}", getattr(args, name)) for name in ("models", "prompts", "seeds", "metrics")]
    repeats = positive("--repeats", args.repeats)
    path = HOME / "results.sqlite"
    started = time.perf_counter()
    count = build_store(path, *sizes)
    build_seconds = time.perf_counter() - started
    size = f"{count:,} scores: {sizes[0]} models x {sizes[1]} prompts x {sizes[2]} seeds x {sizes[3]} metrics"
    print(f"home: {HOME}; store of {size} written in {build_seconds:.1f} s ({path.stat().st_size / 2**20:.0f} MiB)")
    report = build_report(path)  # a warm-up: imports and the first SQLite page reads are not what is measured
    rows = [_target_row(f"report markdown, {size}", _times(lambda: render_markdown(build_report(path)), repeats),
                        MARKDOWN_TARGET_S)]
    render_html = _html_renderer()
    if render_html is None:
        print("  HTML not timed: rpo_bench.reporting.html is missing")
        rows.append(row(f"report HTML, {size}: not timed (rpo_bench.reporting.html is missing)", None, "s"))
    else:
        rows.append(_target_row(f"report HTML, {size}", _times(lambda: render_html(build_report(path)), repeats),
                                HTML_TARGET_S))
    text = json.dumps(export_json(report), indent=1, sort_keys=True)
    rows += [
        _info_row(f"export JSON of the built report (json.dumps included, {len(text) / 2**20:.1f} MiB)",
                  _times(lambda: json.dumps(export_json(report), indent=1, sort_keys=True), repeats)),
        _info_row("export CSV of the built report", _times(lambda: export_csv(report), repeats)),
        _info_row(f"report markdown --by category ({len(CATEGORIES)} categories)",
                  _times(lambda: render_markdown(build_report(path, by="category")), repeats)),
        _info_row(f"build_report alone, {size}", _times(lambda: build_report(path), repeats)),
    ]
    for r in rows:
        times = ", ".join(f"{s:.2f}" for s in r["details"].get("seconds", []))
        shown = ("not timed" if r["value"] is None else
                 f"{r['value']:.3f} (target {r['target']})" if r["unit"] == "ratio" else f"{r['value']:.2f} s")
        print(f"  {r['what']}: {shown}" + (f" [{times}]" if times else ""))
    return rows


if __name__ == "__main__":
    raise SystemExit(run_script(main, parser()))
