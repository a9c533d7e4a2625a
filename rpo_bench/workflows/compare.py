"""Which method wins, in the micro world: SFT, DPO and RPO (or any registered methods) trained from micro-base on
the same data with the same budget, over several training seeds, evaluated on held-out prompts against the
ground-truth judge.

A method's score on a (prompt, evaluation seed) is the mean over its training seeds, so an interval over prompts
includes the spread between training runs only through that mean; the per-seed rows show that spread directly.
Every comparison is paired by (prompt, evaluation seed) and resamples prompts (rpo_bench.evaluation.stats).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rpo_bench.core.atomic import atomic_path, atomic_write
from rpo_bench.core.config import default_image_cache, writable_dir
from rpo_bench.core.errors import BadInputError
from rpo_bench.core.locks import folder_lock
from rpo_bench.evaluation import stats
from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate
from rpo_bench.evaluation.power import power_markdown, power_table
from rpo_bench.evaluation.prompts import load_prompt_set
from rpo_bench.micro.render import render
from rpo_bench.micro.scenes import CONTENT_ATTRIBUTES, Scene, parse_prompt
from rpo_bench.models.catalog import resolve_model
from rpo_bench.reporting.grids import image_grid, open_store_and_cache, save_png, stored_images
from rpo_bench.style.registry import STYLES, get_style
from rpo_bench.training.checkpoint import SNAPSHOTS, latest_checkpoint
from rpo_bench.training.config import ABSENT_MEANT, RESUME_SAFE_FIELDS, build_config, method_fields
from rpo_bench.training.methods import DEFAULT_SET, resolve_methods
from rpo_bench.training.output import absolute_paths
from rpo_bench.training.trainer import train
from rpo_bench.workflows.heldout_table import heldout_markdown, heldout_table
from rpo_bench.workflows.probe_ceiling import probe_ceiling
from rpo_bench.workflows.train_pool import train_in_processes

BASE = "micro-base"
# The differences a comparison should be able to see (E13): a point of micro-oracle between preference methods,
# three points of a style's judge between style-trained ones.
DETECT = {"preferences": 0.01, "style": 0.03}


@dataclass
class CompareConfig:
    out: Path  # one folder per trained run, plus the results store and comparison.json
    methods: Sequence[str] = DEFAULT_SET
    train_seeds: Sequence[int] = (0, 1, 2)
    preset: str | None = "micro"
    overrides: Mapping[str, Any] = field(default_factory=dict)  # training settings over the preset
    prompts: str = "micro-test"
    category: str | None = "unseen"  # the held-out prompts; None: all
    eval_seeds: Sequence[int] = (0, 1, 2, 3)
    metric: str = "micro-oracle"
    extra_metrics: Sequence[str] = ()  # compared the same way, each in its own table (e.g. content beside style)
    style: str | None = None  # train --style S for every run (see `for_style`)
    detect: float | None = None  # the difference the power table plans for; None: DETECT's for the kind of comparison
    jobs: int = 1  # runs trained at once, each in its own process on one thread (workflows.train_pool)
    show_progress: bool = True

    @property
    def metrics(self) -> list[str]:
        return [self.metric, *(m for m in self.extra_metrics if m != self.metric)]


def for_style(config: CompareConfig) -> CompareConfig:
    """A style comparison: the style's recipe and held-out content prompts, its judge first (the style taken),
    then content kept (micro-oracle) and the style probe, whose agreement with the judge is measured."""

    style = get_style(config.style)
    if not style.micro:
        raise BadInputError(f"micro compare --style {style.name!r}: not a micro style; accepted: "
                            + ", ".join(entry.name for entry in _micro_styles()))
    judge = next(m for m in style.judges if m.startswith("micro-style"))
    extra = [m for m in (*style.judges, f"style-prob:{style.name}") if m != judge]
    return replace(config, preset=config.preset if config.preset != "micro" else "micro-style", prompts=style.prompts,
                   detect=config.detect if config.detect is not None else DETECT["style"],
                   category="content", metric=judge, extra_metrics=extra,
                   overrides={**config.overrides, "style": style.name})


def _micro_styles():
    return [entry for entry in STYLES if entry.resolve().micro]


@dataclass(frozen=True)
class ComparisonRow:
    name: str  # "sft", "sft seed 0", ...
    versus: str  # what it is compared with
    mean: stats.Interval
    comparison: stats.Comparison | None
    variance: stats.VarianceComponents | None = None  # of the difference: what more evaluation seeds would shrink


def method_pairs(methods: Sequence[str]) -> list[tuple[str, str]]:
    """Which methods are compared with each other besides each with micro-base: RPO with DPO and SFT, DPO with
    SFT (the question rpo-bench was made for), and every other method with DPO, the method it answers."""
    pairs = [(a, b) for a, b in (("rpo", "dpo"), ("rpo", "sft"), ("dpo", "sft")) if a in methods and b in methods]
    return pairs + [(m, "dpo") for m in methods if m not in ("sft", "dpo", "rpo") and "dpo" in methods]


def run_name(method: str, seed: int) -> str:
    return f"{method}-seed{seed}"


def _check(config: CompareConfig) -> None:
    config.methods = resolve_methods(list(config.methods))  # "all", and did-you-mean for an unknown name
    if not config.train_seeds or not config.eval_seeds:
        raise BadInputError("training and evaluation seeds: accepted: at least one of each")
    if config.jobs < 1:
        raise BadInputError(f"--jobs {config.jobs}; accepted: an integer >= 1 (runs trained at once)")
    if config.detect is not None and not 0 < config.detect < float("inf"):
        raise BadInputError(f"--detect {config.detect}; accepted: a positive difference of the judging metric")
    for method in config.methods:  # every setting checked before the first run starts or any folder is made
        for seed in config.train_seeds:
            _train_config(config, method, seed)


def _refuse_stale(config: CompareConfig) -> None:
    """A finished run trained with other settings is never reused in silence (nor retrained over)."""
    stale = stale_runs(config)
    if stale:
        run, differences = next(iter(stale.items()))
        raise BadInputError(f"{config.out / run} holds a finished run trained with other settings "
                            f"({'; '.join(differences[:3])}{'; ...' if len(differences) > 3 else ''}), so it cannot "
                            "stand for these; accepted: another --out for these settings, or delete "
                            f"{config.out / run} (and any other run folder there) to train it again")


def _train_config(config: CompareConfig, method: str, seed: int):
    # One set of overrides serves every method: beta or tau simply do not apply to SFT.
    shared = {k: v for k, v in config.overrides.items() if k in method_fields(method)}
    output = config.out / run_name(method, seed)
    return build_config(config.preset, None, {**shared, "method": method, "seed": seed, "output": str(output)})


def recorded_differences(output: Path, wanted) -> list[str]:
    """How a finished run's recorded settings (its rpo_bench.json) differ from the TrainConfig `wanted`, as
    "key: then, now" lines; empty when it can be reused. Settings that do not change the trained weights (logging,
    checkpoint cadence, the output path itself) are not compared."""
    try:
        saved = json.loads((output / "rpo_bench.json").read_text(encoding="utf-8"))["config"]
        if not isinstance(saved, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        return [f"its record {output / 'rpo_bench.json'} cannot be read"]
    saved, now = {**ABSENT_MEANT, **saved}, absolute_paths(wanted.to_dict())
    return [f"{key}: {saved.get(key)!r} then, {now.get(key)!r} now" for key in sorted(set(saved) | set(now))
            if key not in RESUME_SAFE_FIELDS and saved.get(key) != now.get(key)]


def stale_runs(config: CompareConfig) -> dict[str, list[str]]:
    """run name -> how its finished output differs from what `config` asks for (only runs that differ)."""
    stale = {}
    for method in config.methods:
        for seed in config.train_seeds:
            output = config.out / run_name(method, seed)
            if (output / "rpo_bench.json").is_file():
                differences = recorded_differences(output, _train_config(config, method, seed))
                if differences:
                    stale[run_name(method, seed)] = differences
    return stale


def train_all(config: CompareConfig) -> dict[str, Path]:
    """Train every (method, seed) that has no finished output; an interrupted one resumes from its checkpoint (the
    trainer refuses a checkpoint of other settings). A finished run is reused only when its recorded settings are
    the ones asked for now (`_check` refuses the comparison otherwise)."""
    outputs: dict[str, Path] = {}
    todo = []
    for method in config.methods:
        for seed in config.train_seeds:
            output = config.out / run_name(method, seed)
            outputs[run_name(method, seed)] = output
            if not (output / "rpo_bench.json").is_file():
                todo.append(_train_config(config, method, seed))
    if config.jobs > 1 and todo:  # even a lone run: with --jobs every run trains on one thread, whatever is left
        train_in_processes(todo, config.jobs, config.show_progress)
        return outputs
    for train_config in todo:
        train(train_config, resume=latest_checkpoint(Path(train_config.output)) is not None,
              show_progress=config.show_progress)
    return outputs


def evaluate_all(config: CompareConfig, outputs: Mapping[str, Path]):
    models = [BASE, *(str(path) for path in outputs.values())]
    return evaluate(EvaluateConfig(models=models, prompts=config.prompts, metrics=config.metrics,
                                   seeds=list(config.eval_seeds), protocol="micro", store=config.out / "results.sqlite",
                                   batch_size=64,  # micro images are tiny: per-call overhead dominates below ~16
                                   show_progress=config.show_progress))


def _selected(scores: Mapping, categories: Mapping[int, str], category: str | None) -> dict:
    return {k: v for k, v in scores.items() if category is None or categories.get(k[0]) == category}


def _mean_over_runs(tables: Sequence[Mapping]) -> dict:
    """Per (prompt, seed) mean over a method's training runs, on the samples every run has."""
    keys = set(tables[0]).intersection(*tables[1:])
    return {k: sum(t[k] for t in tables) / len(tables) for k in keys}


def compare(config: CompareConfig, score_tables, outputs: Mapping[str, Path],
            metric: str | None = None) -> list[ComparisonRow]:
    """Each method (mean over its training seeds) and each run vs micro-base; RPO vs DPO; SFT vs DPO."""
    metric = metric or config.metric
    by_model = {table.model: table for table in score_tables if table.metric == metric}
    base_table = by_model[BASE]
    base = _selected(base_table.scores, base_table.categories, config.category)
    run_scores = {}
    for run, path in outputs.items():
        table = _by_path(by_model, path)
        run_scores[run] = _selected(table.scores, table.categories, config.category)
    higher = base_table.higher_is_better
    rows = [ComparisonRow(BASE, "", stats.cluster_bootstrap(base), None)]
    method_scores = {}
    for method in config.methods:
        runs = [run_scores[run_name(method, s)] for s in config.train_seeds]
        method_scores[method] = _mean_over_runs(runs)
        rows.append(ComparisonRow(method, BASE, stats.cluster_bootstrap(method_scores[method]),
                                  stats.compare(method_scores[method], base, higher),
                                  stats.variance_components(method_scores[method], base)))
    for method in config.methods:
        for seed in config.train_seeds:
            scores = run_scores[run_name(method, seed)]
            rows.append(ComparisonRow(f"{method} seed {seed}", BASE, stats.cluster_bootstrap(scores),
                                      stats.compare(scores, base, higher)))
    for a, b in method_pairs(config.methods):
            rows.append(ComparisonRow(a, b, stats.cluster_bootstrap(method_scores[a]),
                                      stats.compare(method_scores[a], method_scores[b], higher),
                                      stats.variance_components(method_scores[a], method_scores[b])))
    return rows


def _by_path(by_model: Mapping, path: Path):
    """Tables name a local model by the folder as given; match on the resolved path."""
    for name, table in by_model.items():
        if Path(name).expanduser().resolve() == path.resolve():
            return table
    raise KeyError(f"no scores for {path}")


def to_markdown(config: CompareConfig, rows: Sequence[ComparisonRow], metric: str | None = None) -> str:
    where = f"{config.prompts} ({config.category or 'all'} prompts)"
    lines = [f"{metric or config.metric} on {where}, evaluation seeds {','.join(map(str, config.eval_seeds))}, "
             f"training seeds {','.join(map(str, config.train_seeds))}, preset {config.preset}",
             "",
             "| model | vs | mean [95% CI] | difference [95% CI] | win rate | p (Wilcoxon) |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        mean = f"{row.mean.estimate:.3f} [{row.mean.low:.3f}, {row.mean.high:.3f}]"
        if row.comparison is None:
            lines.append(f"| {row.name} | | {mean} | | | |")
            continue
        c = row.comparison
        lines.append(f"| {row.name} | {row.versus} | {mean} | {c.difference.format()} | "
                     f"{c.win_rate.estimate:.2f} | {c.p_value:.2g} |")
    return "\n".join(lines) + "\n"


def rows_to_json(rows: Sequence[ComparisonRow]) -> list[dict]:
    def interval(i: stats.Interval) -> dict:
        return {"estimate": i.estimate, "low": i.low, "high": i.high, "n_prompts": i.n_prompts, "n": i.n_samples}

    return [{"model": r.name, "versus": r.versus, "mean": interval(r.mean),
             **({"difference": interval(r.comparison.difference), "win_rate": interval(r.comparison.win_rate),
                 "p_wilcoxon": r.comparison.p_value} if r.comparison else {}),
             **({"variance": vars(r.variance)} if r.variance else {})} for r in rows]


def snapshot_steps(output: Path) -> list[tuple[int, Path]]:
    folder = output / SNAPSHOTS
    found = [(int(p.name.split("-")[1]), p) for p in folder.glob("step-*") if (p / "rpo_bench.json").is_file()]
    return sorted(found)


def learning_curves(config: CompareConfig, outputs: Mapping[str, Path]) -> dict[str, list[tuple[int, stats.Interval]]]:
    """The judge's score against training steps, for each method's first training seed: micro-base at step 0,
    every snapshot (--set snapshot_every=N), the final output. Empty when no run saved snapshots."""
    seed = config.train_seeds[0]
    points = {m: [*snapshot_steps(outputs[run_name(m, seed)]), (_steps_done(outputs[run_name(m, seed)]),
                                                                  outputs[run_name(m, seed)])]
              for m in config.methods}
    if all(len(p) == 1 for p in points.values()):
        return {}
    models = [BASE, *(str(path) for p in points.values() for _, path in p)]
    result = evaluate(EvaluateConfig(models=models, prompts=config.prompts, metrics=[config.metric],
                                     seeds=list(config.eval_seeds), protocol="micro",
                                     store=config.out / "results.sqlite", batch_size=64,
                                     show_progress=config.show_progress))
    by_model = {table.model: table for table in result.tables}
    base = by_model[BASE]
    start = stats.cluster_bootstrap(_selected(base.scores, base.categories, config.category))
    curves = {}
    for method, method_points in points.items():
        curves[method] = [(0, start)]
        for step, path in method_points:
            table = _by_path(by_model, path)
            curves[method].append((step, stats.cluster_bootstrap(_selected(table.scores, table.categories,
                                                                           config.category))))
    return curves


def _steps_done(output: Path) -> int:
    return int(json.loads((output / "rpo_bench.json").read_text(encoding="utf-8"))["steps_done"])


def plot_curves(curves: Mapping[str, list[tuple[int, stats.Interval]]], config: CompareConfig, path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - matplotlib loads in ~1 s: only for pictures

    matplotlib.use("Agg")  # no display: a file is what is wanted
    import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib loads in ~1 s: only for pictures

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for method, points in curves.items():
        steps = [s for s, _ in points]
        axes.plot(steps, [i.estimate for _, i in points], marker="o", label=method)
        axes.fill_between(steps, [i.low for _, i in points], [i.high for _, i in points], alpha=0.15)
    axes.set_xlabel("training step (0: micro-base)")
    axes.set_ylabel(f"{config.metric}, {config.category or 'all'} prompts of {config.prompts}")
    axes.set_title(f"seed {config.train_seeds[0]}, 95% intervals over prompts")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def probe_agreement(score_tables, probe: str, judge: str) -> dict[str, float] | None:
    """Share of images (every model, prompt and seed) on which the style probe and the ground-truth judge agree
    about "in the style" (probability above one half): how far the probe, which is all a real style has, can be
    trusted where the micro world can check it."""
    probe_scores = {(t.model, k): v for t in score_tables if t.metric == probe for k, v in t.scores.items()}
    judge_scores = {(t.model, k): v for t in score_tables if t.metric == judge for k, v in t.scores.items()}
    shared = probe_scores.keys() & judge_scores.keys()
    if not shared:
        return None
    agree = sum((probe_scores[k] > 0.5) == (judge_scores[k] > 0.5) for k in shared)
    styled = sum(judge_scores[k] > 0.5 for k in shared)
    return {"images": len(shared), "agreement": agree / len(shared), "judged_in_style": styled / len(shared)}


def _probe_ceiling(config: CompareConfig) -> dict[str, float] | None:
    return probe_ceiling(config.out / "results.sqlite", default_image_cache(), config.style, config.metric)


GRID_ROWS = 8


def comparison_grid(config: CompareConfig, outputs: Mapping[str, Path], path: Path) -> Path:
    """What the table means, to look at: the first held-out prompts of the compared category (rows) as micro-base
    and each method's first training seed draw them (columns), at the first evaluation seed."""
    prompts = [p.text for p in load_prompt_set(config.prompts).prompts
               if config.category is None or p.category == config.category][:GRID_ROWS]
    seed = config.train_seeds[0]

    columns = [(BASE, BASE), *((f"{m} (seed {seed})", resolve_model(str(outputs[run_name(m, seed)])).name)
                               for m in config.methods)]  # the store records resolved names
    store, cache = open_store_and_cache(config.out / "results.sqlite", default_image_cache())
    try:
        images = [stored_images(store, cache, model, "micro", prompts, config.eval_seeds[0]) for _, model in columns]
    finally:
        store.close()
        cache.close()
    labels = [label for label, _ in columns]
    if config.style:  # what the style looks like, drawn by the renderer for the same scene

        micro_style = get_style(config.style).micro
        images.insert(0, [_render_in_style(prompt, micro_style, config.eval_seeds[0]) for prompt in prompts])
        labels.insert(0, f"render: {micro_style}")
    what = f"style {config.style}" if config.style else config.metric
    image = image_grid([[column[i] for column in images] for i in range(len(prompts))], prompts, labels,
                       title=f"{what}: held-out prompts, evaluation seed {config.eval_seeds[0]}")
    return save_png(image, path)


def _render_in_style(prompt: str, style: str, seed: int):
    """The renderer's image of the scene a micro prompt describes, in `style`; None when the prompt does not name
    every attribute of a scene."""
    requested = parse_prompt(prompt)
    if not all(attribute in requested for attribute in CONTENT_ATTRIBUTES):
        return None
    return render(Scene(**{a: requested[a] for a in CONTENT_ATTRIBUTES}, style=style), seed=seed)


def run_comparison(config: CompareConfig) -> tuple[list[ComparisonRow], str]:
    if config.style:
        config = for_style(config)
    _check(config)
    _refuse_stale(config)
    writable_dir(config.out, "the comparison's runs and results")
    with folder_lock(config.out, "comparison folder"):
        return _run_locked(config)


def _run_locked(config: CompareConfig) -> tuple[list[ComparisonRow], str]:
    outputs = train_all(config)
    result = evaluate_all(config, outputs)
    tables = {metric: compare(config, result.tables, outputs, metric) for metric in config.metrics}
    rows = tables[config.metric]
    markdown = "\n".join(to_markdown(config, metric_rows, metric) for metric, metric_rows in tables.items())
    record = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(config).items()
                         if k not in ("show_progress", "jobs")},  # neither changes a number
              "rows": rows_to_json(rows),
              "metrics": {metric: rows_to_json(metric_rows) for metric, metric_rows in tables.items()},
              "micro_world": resolve_model(BASE).micro_world}
    if config.style:
        agreement = probe_agreement(result.tables, f"style-prob:{config.style}", config.metric)
        record["probe_agreement"] = agreement
        if agreement:
            markdown += (f"\nstyle-prob:{config.style} agrees with the judge {config.metric} on "
                         f"{100 * agreement['agreement']:.1f}% of {agreement['images']} images (in style: probability "
                         f"above 0.5; the judge calls {100 * agreement['judged_in_style']:.1f}% in style)\n")
            ceiling = _probe_ceiling(config)
            record["probe_ceiling"] = ceiling
            if ceiling:
                markdown += (f"\nceiling: a logistic probe on the same embeddings, fitted to the judge's own calls, "
                             f"agrees with them on {100 * ceiling['ceiling']:.1f}% of {ceiling['images']} images, each "
                             f"predicted by a fit that did not see its prompt (5 folds over prompts); always answering "
                             f"the judge's majority call agrees on {100 * ceiling['constant']:.1f}%\n")
    diagnostics = heldout_table({m: [outputs[run_name(m, s)] for s in config.train_seeds] for m in config.methods})
    record["heldout"] = diagnostics
    if diagnostics:
        markdown += "\n" + heldout_markdown(diagnostics)
    record["config"]["overrides"] = dict(config.overrides)
    record["power"] = power_table(record["rows"], config.methods, config.train_seeds, BASE,
                                  config.detect if config.detect is not None else DETECT["preferences"])
    markdown += power_markdown(record["power"])
    _write_atomic(config.out / "comparison.json", json.dumps(record, indent=1, default=list))
    curves = learning_curves(config, outputs)
    if curves:
        plot_curves(curves, config, config.out / "curve.png")
        points = {m: [{"step": s, "mean": i.estimate, "low": i.low, "high": i.high} for s, i in c]
                  for m, c in curves.items()}
        _write_atomic(config.out / "curve.json", json.dumps(points, indent=1))
    comparison_grid(config, outputs, config.out / "grid.png")
    _write_atomic(config.out / "comparison.md", markdown)
    return rows, markdown


def _write_atomic(path: Path, text: str) -> None:
    atomic_write(path, text, what="comparison file")
