"""Small PNG charts for the reports (HTML report, style section, leaderboards).

matplotlib is imported inside the functions: importing this module (and rpo_bench.reporting.report) stays light for the
markdown report, which draws nothing.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from rpo_bench.evaluation.summary import SummaryRow

BAR_COLOUR = "#4c78a8"
BASELINE_COLOUR = "#f58518"
DPI = 100
WIDTH_IN = 6.0
INCHES_PER_MODEL = 0.4
TITLE_CHARS = 90  # about the width of the figure at fontsize 9


def _bars(rows: Sequence[SummaryRow]) -> list[tuple[str, float, float, float]]:
    """(model, mean, lower error, upper error) of the rows that have samples, in the rows' order."""
    bars = []
    for row in rows:
        if row.interval is None or math.isnan(row.mean):
            continue
        bars.append((row.model, row.mean, max(0.0, row.mean - row.interval.low),
                     max(0.0, row.interval.high - row.mean)))
    return bars


def new_figure(width: float, height: float):
    """A Figure on its own Agg canvas, not pyplot: no display is needed, no global backend is switched, and
    nothing stays registered between calls."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - matplotlib loads in ~1 s: only for pictures
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib loads in ~1 s: only for pictures

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure) -> bytes:
    """The figure as PNG bytes; the same drawing gives the same bytes (fixed dpi, no Software metadata)."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def interval_bars_png(rows: Sequence[SummaryRow], baseline: str | None, title: str) -> bytes:
    """One horizontal bar per model (its mean), the 95% interval as error bars, the baseline's bar in another
    colour; the first row on top. Same rows -> same bytes (Agg, fixed size and dpi, no Software metadata)."""
    bars = _bars(rows)
    figure = new_figure(WIDTH_IN, INCHES_PER_MODEL * max(1, len(bars)) + 1)
    axes = figure.add_subplot()
    positions = list(range(len(bars)))[::-1]  # the first row at the top, as in the table
    if bars:
        models, means, lows, highs = zip(*bars, strict=True)
        colours = [BASELINE_COLOUR if m == baseline else BAR_COLOUR for m in models]
        axes.barh(positions, means, xerr=[lows, highs], color=colours, capsize=3, ecolor="#333333")
        axes.set_yticks(positions, [_short(m) for m in models])
        # bars start at 0 (a cut axis would exaggerate differences); the intervals show what is resolved
        axes.axvline(0, color="#333333", linewidth=0.8)
    else:
        axes.text(0.5, 0.5, "no scored samples", ha="center", va="center", transform=axes.transAxes)
        axes.set_yticks([])
    # a figure title, not the axes': centred on the whole width, it is not cut by long model labels on the left
    figure.suptitle(_short(title, TITLE_CHARS), fontsize=9)
    axes.set_xlabel("mean with 95% interval", fontsize=8)
    axes.tick_params(labelsize=8)
    return figure_png(figure)


def _short(text: str, limit: int = 40) -> str:
    """Long model paths would squeeze the bars to nothing (the full name is in the table next to the chart); '$'
    is escaped because matplotlib reads text between two of them as math, which may fail to parse."""
    text = text if len(text) <= limit else "…" + text[-(limit - 1):]
    return text.replace("$", r"\$")


BETTER_COLOUR = "#2a7"  # the interval is wholly on the better side of zero
WORSE_COLOUR = "#c44"  # wholly on the worse side
UNRESOLVED_COLOUR = "#888"  # it holds zero: no difference resolved


def verdict_colour(low: float, high: float, higher_is_better: bool = True) -> str:
    """A difference's colour by where its 95% interval lies: better side of zero, worse side, or across it."""
    if low <= 0.0 <= high:
        return UNRESOLVED_COLOUR
    return BETTER_COLOUR if (low > 0) == higher_is_better else WORSE_COLOUR


def draw_differences(axes, names: Sequence[str], estimates: Sequence[float], lows: Sequence[float],
                     highs: Sequence[float], colours: Sequence[str]) -> None:
    """Paired differences as horizontal bars with their 95% intervals and a line at zero, the first name on top:
    the one drawing of "which model moved what, and is it more than noise", for the report's tables and the
    leaderboards' differences.png alike."""
    below = [max(0.0, m - lo) for m, lo in zip(estimates, lows, strict=True)]
    above = [max(0.0, hi - m) for m, hi in zip(estimates, highs, strict=True)]
    axes.barh(range(len(names)), estimates, xerr=[below, above], color=colours, capsize=3)
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_yticks(range(len(names)), names)
    axes.invert_yaxis()


def differences_png(rows: Sequence[SummaryRow], baseline: str, title: str) -> bytes:
    """Each model's paired difference from the baseline with its 95% interval (draw_differences), for a report
    table. Means of similar models sit close together (all about 0.78); their differences are what a comparison
    is about. Same rows -> same bytes."""
    compared = [row for row in rows if row.versus is not None and row.model != baseline]
    figure = new_figure(WIDTH_IN, INCHES_PER_MODEL * max(1, len(compared)) + 1.1)
    axes = figure.add_subplot()
    if compared:
        differences = [row.versus.difference for row in compared]
        draw_differences(axes, [_short(row.model) for row in compared], [d.estimate for d in differences],
                         [d.low for d in differences], [d.high for d in differences],
                         [verdict_colour(d.low, d.high, row.higher_is_better)
                          for d, row in zip(differences, compared, strict=True)])
        direction = "higher" if compared[0].higher_is_better else "lower"
        axes.set_xlabel(f"difference from {_short(baseline)} with 95% interval ({direction} is better)", fontsize=8)
    else:
        axes.text(0.5, 0.5, "no model shares a sample with the baseline", ha="center", va="center",
                  transform=axes.transAxes)
        axes.set_yticks([])
    figure.suptitle(_short(title, TITLE_CHARS), fontsize=9)
    axes.tick_params(labelsize=8)
    return figure_png(figure)
