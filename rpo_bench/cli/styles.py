"""`rpo-bench styles`: the style registry (list, `show S`, `fetch S`)."""

from __future__ import annotations

from pathlib import Path

import typer

from rpo_bench.cli.console import console, kv_table, print_records

styles_app = typer.Typer(help="The style registry: list, `show S`, or `fetch S` (its reference images).")


@styles_app.callback(invoke_without_command=True)
def styles_list(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand:
        return
    from rpo_bench.style.registry import STYLES

    rows = []
    for entry in STYLES:
        style = entry.resolve()
        rows.append((entry.name, style.source_text, style.prompts, style.base_model, entry.source, style.description))
    print_records("styles", ("name", "references", "held-out prompts", "base model", "origin", "description"), rows,
                  prose=("references", "description"))
    console.print("train one: rpo-bench train --style S  ·  measure it: rpo-bench evaluate --style S --models ...")


GRID_HELP = "Also write a PNG grid of the first 24 reference images."


@styles_app.command("show")
def styles_show(name: str, grid: Path | None = typer.Option(None, help=GRID_HELP)) -> None:
    """A style's settings, and its references when they are on this machine.

    A Hub source's references are fetched by `rpo-bench styles fetch S`."""
    from rpo_bench.style.registry import (
        MIN_REFERENCES,
        dataset_folder,
        get_style,
        reference_images,
        references_fingerprint,
    )

    style = get_style(name)
    values: dict[str, object] = {"description": style.description, "references": style.source_text,
                                 "references used": f"up to {style.references} (at least {MIN_REFERENCES})",
                                 "held-out prompts": style.prompts, "base model": style.base_model,
                                 "protocol": style.protocol or "the base model's own",
                                 "embedding (style-prob, style-sim, base-sim)": style.embedding,
                                 "ground-truth judges": ", ".join(style.judges) or "none (no ground truth)",
                                 "csd": "scored by evaluate --style" if style.csd else "not scored by default"}
    if style.verify:
        values["source note"] = style.verify
    if style.dataset and not (dataset_folder(style) / "captions.jsonl").is_file():
        values["on this machine"] = f"not yet: rpo-bench styles fetch {style.name}"
    else:
        references = reference_images(style)
        values["on this machine"] = f"{len(references)} reference images, fingerprint {references_fingerprint(style)}"
        values["first captions"] = " | ".join(list(dict.fromkeys(r.caption for r in references))[:3])
        if grid is not None:
            values["grid"] = str(_references_grid(style.name, references, grid))
    console.print(kv_table(f"style {style.name}", values))


def _references_grid(name: str, references: list, out: Path) -> Path:
    from rpo_bench.reporting.grids import image_grid, save_png

    shown = references[:24]
    rows = [shown[i:i + 6] for i in range(0, len(shown), 6)]
    cells = [[r.image for r in row] for row in rows]
    labels = [f"#{i * 6 + 1}-{i * 6 + len(row)}" for i, row in enumerate(rows)]
    image = image_grid(cells, labels, [""] * max(len(row) for row in rows), title=f"style {name}: references")
    save_png(image, out)
    return out


@styles_app.command("fetch")
def styles_fetch(name: str) -> None:
    """Fetch a style's reference images once, so later runs work offline.

    A Hub dataset is streamed into $RPO_BENCH_HOME/styles; a folder or micro
    style has nothing to fetch."""
    from rpo_bench.style.registry import get_style, materialise_dataset, reference_images

    style = get_style(name)
    if style.dataset:
        folder = materialise_dataset(style)
        console.print(f"style {style.name}: {len(reference_images(style))} reference images in {folder}")
    else:
        console.print(f"style {style.name}: references come from {style.source_text}; nothing to fetch "
                      f"({len(reference_images(style))} images)")
