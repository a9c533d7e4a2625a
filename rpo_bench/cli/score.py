"""`rpo-bench score`: rate image files with any metric (HPSv2, PickScore, ImageReward, aesthetic, CLIP, ...)."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from rpo_bench.cli.console import console, print_records

PER_IMAGE_ROWS = 20  # above this, the table shows the summary only; --out keeps every value


def score(
    paths: list[Path] = typer.Argument(..., help="Image files and/or folders of images."),
    metrics: str = typer.Option("tiny-hpsv2", help="Comma-separated metrics, NAME or NAME:ARG (e.g. hpsv2,"
                                "pickscore,imagereward,aesthetic)."),
    prompt: str | None = typer.Option(None, help="One prompt for every image."),
    prompts: Path | None = typer.Option(None, help="A text file with one prompt per image, in the images' order."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N, mps."),
    dtype: str = typer.Option("float32", help="Scorers' dtype: float32 (default), float16, bfloat16, auto."),
    batch_size: int = typer.Option(16, help="Images per scoring batch."),
    out: Path | None = typer.Option(None, help="JSONL file for every value; appended per batch, and a rerun "
                                    "skips what it already holds."),
) -> None:
    """Score image files made anywhere; the metrics load once and score in batches."""
    from rpo_bench.evaluation.score_files import check_output_file, collect_images, prompts_for, score_files
    from rpo_bench.metrics import parse_metric_list

    metric_specs = parse_metric_list(metrics)
    check_output_file(out)  # before the images are read: a bad --out must not cost a scan of a large folder
    images = collect_images(paths)
    texts = prompts_for(images, prompt, prompts)
    summaries = score_files(images, texts, metric_specs, device=device, dtype=dtype, batch_size=batch_size, out=out)
    print_score_tables(images, summaries)
    for note in (note for s in summaries for note in s.notes):
        console.print(note, soft_wrap=True)


def _label(summary) -> str:
    return f"{summary.metric} {'↑' if summary.higher_is_better else '↓'}"


def print_score_tables(images: list[Path], summaries: list) -> None:
    """Each image's values (up to PER_IMAGE_ROWS images), then each metric's mean; as tables where they fit the
    console, else one block per image and per metric (see `print_records`)."""
    if len(images) <= PER_IMAGE_ROWS:
        # the values stay whole; image names fold where the console is narrow
        print_records("per image", ("image", *(_label(s) for s in summaries)),
                      [(path.name, *(f"{s.values[i]:.4f}" for s in summaries)) for i, path in enumerate(images)],
                      prose=("image",), numeric=[_label(s) for s in summaries])
    rows = []
    for s in summaries:
        stderr = "" if math.isnan(s.stderr) else f" ± {s.stderr:.4f}"
        rows.append((_label(s), str(len(s.values)), f"{s.mean:.4f}{stderr}", s.version))
    print_records(f"{len(images)} images", ("metric", "n", "mean ± s.e.", "version"), rows, prose=("version",),
                  numeric=("n", "mean ± s.e."))
