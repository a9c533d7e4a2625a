"""One picture of a method comparison: each method's paired difference from micro-base with its 95% interval, one
panel per metric, so "which method moved what, and is it more than noise" is seen at a glance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rpo_bench.reporting.plots import draw_differences, figure_png, new_figure, verdict_colour


def _method_rows(rows: Sequence[Mapping], base: str) -> list[Mapping]:
    """The per-method rows against the base (not the per-seed rows nor method-vs-method rows)."""
    return [r for r in rows if r.get("versus") == base and " seed " not in r["model"] and "difference" in r]


def differences_png(metrics: Mapping[str, Sequence[Mapping]], base: str = "micro-base") -> bytes:
    """`metrics` is comparison.json's {metric: rows}; a PNG with one panel per metric."""
    panels = [(metric, _method_rows(rows, base)) for metric, rows in metrics.items()]
    panels = [(metric, rows) for metric, rows in panels if rows]
    figure = new_figure(6.4, 0.5 + 1.3 * max(len(panels), 1))
    axes = figure.subplots(max(len(panels), 1), 1, squeeze=False)
    for ax, (metric, rows) in zip(axes[:, 0], panels, strict=False):
        differences = [r["difference"] for r in rows]
        draw_differences(ax, [r["model"] for r in rows], [d["estimate"] for d in differences],
                         [d["low"] for d in differences], [d["high"] for d in differences],
                         [verdict_colour(d["low"], d["high"]) for d in differences])
        ax.set_title(f"{metric}: difference from {base} [95% CI]", fontsize=9)
        ax.tick_params(labelsize=8)
    return figure_png(figure)
