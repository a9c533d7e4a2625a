"""Progress for long loops: a rich bar on a terminal, plain log lines when output goes to a file or a pipe, silent
when not on the main process or not wanted."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Advance(Protocol):
    def __call__(self, n: int = 1, status: str | None = None) -> None: ...


def _duration(seconds: float) -> str:
    """45s, 6m, 1h20m: an ETA's precision is its first unit or two."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{round(seconds / 60)}m"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours}h{minutes:02d}m"


class PlainProgress:
    """Progress as log lines, for output that is not a terminal: a rich bar there prints one line at the very end,
    so a run logging to a file shows nothing for hours. A line at every tenth of the work (at most one per
    `min_gap` seconds, so a fast loop does not flood), at least one per `max_gap` seconds, and one at the end.
    `start`: work done before this session (a resumed run), counted in the shown total but not in the rate."""

    def __init__(self, description: str, total: int, unit: str = "", *, min_gap: float = 5.0, max_gap: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, write: Callable[[str], None] | None = None,
                 start: int = 0) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.min_gap, self.max_gap, self.clock = min_gap, max_gap, clock
        self.write = write or _write_stdout
        self.start = self.done = start
        self.status = ""
        self.started = self.last_line = clock()
        self.last_tenth = math.floor(10 * start / total) if total > 0 else 0

    def advance(self, n: int = 1, status: str | None = None) -> None:
        self.done += n
        if status is not None:
            self.status = status
        now, tenth = self.clock(), math.floor(10 * self.done / self.total)
        if self.done >= self.total:
            return  # finish() writes the last line
        since = now - self.last_line
        if (tenth > self.last_tenth and since >= self.min_gap) or since >= self.max_gap:
            self._line(now)
            self.last_tenth = tenth

    def finish(self) -> None:
        if self.done > self.start:
            self._line(self.clock(), final=True)

    def _line(self, now: float, final: bool = False) -> None:
        elapsed = now - self.started
        unit = f"{self.unit} " if self.unit else ""
        parts = [f"{self.description}: {unit}{self.done}/{self.total} ({100 * self.done / self.total:.0f}%)"]
        rate = (self.done - self.start) / elapsed if elapsed > 0 else math.inf
        noun = f"{self.unit}s" if self.unit else "items"
        if math.isfinite(rate) and rate > 0:
            parts.append(f"{rate:.{1 if rate < 100 else 0}f} {noun}/s" if rate >= 1
                         else f"{1 / rate:.1f} s/{self.unit or 'item'}")
        if final:
            parts.append(f"done in {_duration(elapsed)}")
        elif math.isfinite(rate) and rate > 0:
            parts.append(f"eta {_duration((self.total - self.done) / rate)}")
        if self.status:
            parts.append(self.status)
        self.write(", ".join(parts))
        self.last_line = now


def _write_stdout(line: str) -> None:
    # Where rich's bar would have gone, flushed so `tail -f` on a log file sees each line when it is written.
    print(line, file=sys.stdout, flush=True)


def _on_terminal() -> bool:
    """rich's own test, so FORCE_TERMINAL / TTY_COMPATIBLE and notebooks are honoured as they are for the bar."""
    from rich import get_console  # noqa: PLC0415 - rich: on first use, off the start-up path

    console = get_console()
    return console.is_terminal or console.is_jupyter


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True, unit: str = "",
                 start: int = 0) -> Iterator[Advance]:
    """Yield `advance(n, status=None)`; `status` (e.g. "loss 0.61") is shown beside the count. Draws nothing when
    disabled, so library code can always call it. `start`: how much of `total` was done before (a resumed run's
    steps), so the count reads 151/275 rather than 1/125 and matches the step numbers printed beside it."""
    if not enabled or total - start <= 0:
        yield lambda n=1, status=None: None
        return
    if not _on_terminal():
        plain = PlainProgress(description, total, unit, start=start)
        yield plain.advance
        plain.finish()
        return
    columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[status]}", markup=False))
    with Progress(*columns, transient=False) as progress:
        # rich's remaining-time estimate reads the speed of the advances it sees, not `completed`: the earlier
        # steps do not make it look faster than it is
        task = progress.add_task(description, total=total, completed=start, status="")

        def advance(n: int = 1, status: str | None = None) -> None:
            progress.update(task, advance=n, **({"status": status} if status is not None else {}))

        yield advance


# The headers already shown in the current `stage_headers` block; None outside one (or when it is disabled).
_SHOWN_STAGES: ContextVar[set[str] | None] = ContextVar("rpo_bench_shown_stages", default=None)


@contextmanager
def stage_headers(enabled: bool = True) -> Iterator[None]:
    """Inside this block `stage()` prints each stage's header once; outside it, or disabled (--quiet, a process
    other than the main one), it prints nothing, so library code shared with other commands can always call it."""
    token = _SHOWN_STAGES.set(set() if enabled else None)
    try:
        yield
    finally:
        _SHOWN_STAGES.reset(token)


def stage(name: str, detail: str = "") -> None:
    """One header line before a phase's own progress lines ("== generating losers: ..."), so that a bare
    "generate micro-base: 32/180" says what it is for. A stage entered twice (e.g. images generated in two calls)
    is announced once."""
    shown = _SHOWN_STAGES.get()
    if shown is None or name in shown:
        return
    shown.add(name)
    _write_stdout(f"== {name}" + (f": {detail}" if detail else ""))


def silence_library_progress() -> None:
    """diffusers / transformers draw tqdm bars for every checkpoint load; rpo-bench draws its own."""
    from diffusers.utils import logging as diffusers_logging  # noqa: PLC0415 - diffusers loads in seconds: on first use
    from transformers.utils import logging as transformers_logging  # noqa: PLC0415 - transformers loads in seconds: on first use

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
