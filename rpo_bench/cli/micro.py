"""`rpo-bench micro build` and `rpo-bench micro preferences`."""

from __future__ import annotations

from pathlib import Path

import typer

from rpo_bench.cli.console import console
from rpo_bench.micro.preference_settings import DEFAULTS as _DEFAULTS  # light: no torch, so the CLI starts fast
from rpo_bench.training.methods import DEFAULT_SET

micro_app = typer.Typer(help="The synthetic micro world: rebuild its models, build its preference set.")


@micro_app.command("build")
def build(
    out: Path | None = typer.Option(None, help="Output folder; default: the package's shipped assets."),
    seed: int = typer.Option(0, help="Seed of every stage."),
    world: int | None = typer.Option(None, help="World version whose recipe to build: 2 (texture-keeping VAE, 16x16 "
                                     "latents, style-aware CLIP) or 1 (the first world); see rpo_bench/micro/world.py. "
                                     "Default: the world already in --out, else 2."),
    clip_steps: int | None = typer.Option(None, help="Micro CLIP training steps; default: the world's recipe's."),
    vae_steps: int | None = typer.Option(None, help="VAE training steps; default: the world's recipe's."),
    unet_steps: int | None = typer.Option(None, help="Base UNet training steps; default: the world's recipe's."),
    judge_steps: int = typer.Option(3000, help="Judge CNN training steps (skipped when the judge exists)."),
    threads: int = typer.Option(1, help="torch threads (1 is fastest for these small models)."),
    jobs: int = typer.Option(2, help="Processes: 2 trains the VAE in a second one beside the judge and CLIP (the "
                             "same bytes, less wall time on two cores); 1 builds one stage at a time."),
) -> None:
    """Retrain the judge, micro CLIP, VAE and base UNet from scratch.

    Seeded; a rerun resumes at the unfinished stage."""
    from rpo_bench.micro.build import ASSETS, build_micro

    report = build_micro(out or ASSETS, seed=seed, clip_steps=clip_steps, vae_steps=vae_steps, unet_steps=unet_steps,
                         judge_steps=judge_steps, threads=threads, world=world, jobs=jobs)
    for name, sha in report.get("sha256", {}).items():
        console.print(f"{sha}  {name}")


@micro_app.command("preferences")
def preferences(
    out: Path | None = typer.Option(None, help="Output folder; default $RPO_BENCH_HOME/preferences/"
                                    "micro-pickapic-<hash of the settings> (the defaults' folder is what "
                                    "--data micro-pickapic trains on)."),
    prompts: str = typer.Option(_DEFAULTS["prompts"], help="Prompt set (name or file) of micro-world prompts."),
    k: int = typer.Option(_DEFAULTS["k"], help="Images per prompt (seeds 0..k-1)."),
    mode: str = typer.Option(_DEFAULTS["mode"], help="top-bottom: each prompt's best images against its "
                             "worst; best-worst: one pair per prompt; all: every pair."),
    pairs_per_prompt: int | None = typer.Option(None, help="top-bottom only: pairs per prompt, 1..(k//2)^2; "
                                                f"default {_DEFAULTS['pairs_per_prompt']}, or (k//2)^2 when "
                                                "smaller."),
    margin: float = typer.Option(_DEFAULTS["margin"], help="Minimum utility gap of a pair."),
    label_noise: float = typer.Option(_DEFAULTS["label_noise"],
                                      help="Bradley-Terry temperature of the labels (0: noiseless)."),
    seed: int = typer.Option(_DEFAULTS["label_seed"], help="Seed of the label draws (images use seeds 0..k-1)."),
    device: str = typer.Option("auto"),
) -> None:
    """Build micro-pickapic, the micro world's preference pairs.

    micro-base samples of micro-train prompts, ranked by the judge's probability
    of the requested values, best against worst, labelled with Bradley-Terry
    noise; prints and records its worth."""
    from rpo_bench.training.micro_pickapic import build_micro_pickapic

    overrides = dict(prompts=prompts, k=k, mode=mode, margin=margin, label_noise=label_noise, label_seed=seed)
    if pairs_per_prompt is not None:
        overrides["pairs_per_prompt"] = pairs_per_prompt
    summary = build_micro_pickapic(out, device=device, **overrides)
    for line in summary_lines(summary):
        console.print(line)


def summary_lines(summary: dict) -> list[str]:
    """The numbers that say whether a preference set carries a signal, in short lines (no wrapping mid-number)."""
    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    rate = "-" if summary["pairs_per_second"] is None else summary["pairs_per_second"]
    lines = [f"pairs {summary['pairs']} from {summary['prompts_with_pairs']} of {summary['prompts']} prompts "
             f"({summary['mode']}, margin {summary['margin']}: {summary['dropped_for_margin']} dropped)",
             f"images {summary['images']} (k {summary['k']}, {summary['generated']} generated) in "
             f"{summary['seconds']:.1f} s: {rate} pairs/s",
             f"label noise {summary['label_noise']}: {summary['labels_flipped']} labels "
             f"({100 * summary['label_disagreement']:.1f}%) disagree with the noiseless judge"]
    metrics = [("metric", "")] + ([("report_metric", "report_")] if summary.get("report_metric") else [])
    width = max(len(summary[name]) for name, _ in metrics)
    for name, prefix in metrics:
        lines.append(f"{summary[name]:<{width}}  winners {number(summary[prefix + 'winners_mean'])} · losers "
                     f"{number(summary[prefix + 'losers_mean'])} · base {number(summary[prefix + 'base_mean'])}")
    lines.append(f"written: {summary['out_dir']} (pairs.jsonl, summary.json)")
    return lines


@micro_app.command("compare")
def compare(
    out: Path = typer.Option(..., help="Folder for the trained runs, the results store and comparison.md/json."),
    methods: str = typer.Option(",".join(DEFAULT_SET), help="Methods to train, comma-separated, or all "
                                "(rpo-bench methods lists them)."),
    train_seeds: str = typer.Option("0,1,2", help="Training seeds: integers and ranges, e.g. 0-2."),
    preset: str = typer.Option("micro", help="Training preset every run starts from (rpo-bench presets)."),
    set_: list[str] = typer.Option([], "--set", help="KEY=VALUE training setting over the preset (repeatable), "
                                   "e.g. --set lr=3e-4 --set steps=400."),
    prompts: str = typer.Option("micro-test", help="Evaluation prompt set."),
    category: str = typer.Option("unseen", help="Compare on the prompts of this category ('' for all)."),
    eval_seeds: str = typer.Option("0-3", help="Evaluation seeds."),
    style: str | None = typer.Option(None, help="A micro style (rpo-bench styles): every run trains --style S at "
                                     "the micro-style preset and is judged by micro-style:S on the style's "
                                     "held-out content prompts, beside micro-oracle and the style probe."),
    detect: float | None = typer.Option(None, help="The difference the power table plans training and evaluation "
                                        "seeds for; default 0.01 (micro-oracle) or 0.03 (a style's judge)."),
    jobs: int = typer.Option(1, help="Runs trained at once, each in its own process on one torch thread (2 on a "
                             "2-core machine halves the training time; the weights equal one-thread runs')."),
) -> None:
    """Train each method over several seeds and compare them on held-out prompts.

    Trains each method (SFT, DPO and RPO by default; --methods all for every
    registered one) from micro-base on the same data and budget over several
    seeds, evaluates them on held-out prompts with the ground-truth judge, and
    compares each with micro-base and with DPO."""
    from rpo_bench.evaluation.seeds import parse_seeds
    from rpo_bench.training.config import parse_setting
    from rpo_bench.training.methods import resolve_methods
    from rpo_bench.workflows.compare import CompareConfig, run_comparison

    overrides = dict(parse_setting(item) for item in set_)
    config = CompareConfig(out=out, methods=resolve_methods(methods),
                           train_seeds=parse_seeds(train_seeds), preset=preset or None, overrides=overrides,
                           prompts=prompts, category=category or None, eval_seeds=parse_seeds(eval_seeds),
                           style=style, detect=detect, jobs=jobs)
    _, markdown = run_comparison(config)
    for line in markdown.splitlines():  # the console escapes control characters, newlines included
        console.print(line)


@micro_app.command("grid")
def grid(
    out: Path = typer.Option(Path("micro-world-grid.png"), help="PNG to write (its folder is created)."),
    prompts: int = typer.Option(5, help="Rows: the first N held-out (unseen) micro-test prompts."),
    seed: int = typer.Option(0, help="Seed of the renders and of micro-base's images."),
    model: str = typer.Option("micro-base", help="The base drawn beside the renders: micro-base, or a world built "
                              "with `micro build --out DIR` (DIR/micro-base)."),
) -> None:
    """A picture of the micro world: its styles beside micro-base's images.

    For held-out prompts, every style as rendered beside micro-base's image of
    the prompt worded for that style (generated through evaluate into the
    default store and image cache)."""
    from PIL import Image

    from rpo_bench.workflows.world_grid import write_micro_world_grid

    path = write_micro_world_grid(out, prompts=prompts, seed=seed, model=model)
    with Image.open(path) as image:
        width, height = image.size
    console.print(f"written: {path} ({width}x{height} px)", soft_wrap=True)


@micro_app.command("check")
def check(
    seed: int = typer.Option(0, help="Seed of the fresh renders, prompts and samples (the same seed, the same card)."),
    n: int = typer.Option(64, help="Renders per style, and prompts per split for the base's samples."),
    model: str | None = typer.Option(None, help="A style-trained model (run folder or name): adds the style "
                                     "probe's agreement with the judge and its ceiling on its images."),
    style: str | None = typer.Option(None, help="The micro style --model was taught; default: its run record's."),
    world_dir: Path | None = typer.Option(None, help="A world built with `micro build --out DIR`; default: the "
                                          "shipped one."),
    as_json: bool = typer.Option(False, "--json", help="Print the card as JSON instead of markdown."),
) -> None:
    """The micro world's quality card, measured from fresh seeded renders.

    What its VAE keeps per style, how recognisable and how obedient its base is,
    how much better micro-pickapic's winners are than the base, the style probe
    against the judge, build times. Measured from fresh seeded renders and
    samples; every value but wall_seconds repeats for a seed."""
    import json
    import sys

    from rpo_bench.workflows.micro_check import card_markdown, micro_check

    # --json keeps stdout to the card: plain progress lines, meant for logs, would break a pipe into a JSON reader
    card = micro_check(seed=seed, n=n, model=model, style=style, world_dir=world_dir,
                       show_progress=not as_json or sys.stdout.isatty())
    if as_json:
        print(json.dumps(card, indent=1, sort_keys=True))
        return
    for line in card_markdown(card).splitlines():
        console.print(line, soft_wrap=True)
