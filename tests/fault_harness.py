"""Fault injection for tests/test_faults.py: a command's real entry point runs in a forked child, and is killed
(SIGKILL) or interrupted (SIGINT) at seeded points chosen from the progress it has written to disk.

Why fork: a fresh `rpo-bench` process spends about 4 s importing torch and diffusers; a child forked from the
test process has them imported already and starts in milliseconds, so twenty kills per command fit in seconds.
Each child runs with one torch thread (set before any work: an OpenMP pool does not survive fork), its output
goes to a log file, and it ends with os._exit so nothing of pytest runs twice.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

CHILD_CRASHED = 70  # an exception escaped the entry point: a bug, whose traceback is in the child's log
POLL_SECONDS = 0.005


def _child_main(call: Callable[[], int | None], log: Path) -> None:
    """Runs in the child; never returns."""
    code = CHILD_CRASHED
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
        # A fresh Python process has this handler; pytest's process may not.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _fresh_progress_bar_locks()
        import torch

        torch.set_num_threads(1)
        result = call()
        code = 0 if result is None else int(result)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - anything that escapes is reported through the exit code and the log
        traceback.print_exc()
        code = CHILD_CRASHED
    finally:
        with suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _fresh_progress_bar_locks() -> None:
    """Give this child tqdm locks of its own. tqdm guards its bars with a multiprocessing RLock, a semaphore that a
    forked child shares with the test process and every sibling; a child SIGKILLed inside a bar's creation (diffusers'
    pipelines make one per call) never releases it, and every later child and the test itself block on it forever.
    A fresh `rpo-bench` process creates its own lock, so this only undoes what fork shares."""
    import threading

    from tqdm import std

    std.TqdmDefaultWriteLock.th_lock = threading.RLock()
    with suppress(AttributeError):
        del std.TqdmDefaultWriteLock.mp_lock  # recreated, private to this process, by the next instance
    lock = std.TqdmDefaultWriteLock()
    pending = [std.tqdm]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls is std.tqdm or "_lock" in vars(cls):
            cls.set_lock(lock)


class Child:
    """One forked run of `call`; `code` is its exit status, negative for a signal (-9 after SIGKILL)."""

    def __init__(self, call: Callable[[], int | None], log: Path):
        self.log = log
        self.started = time.monotonic()
        self.code: int | None = None
        pid = os.fork()
        if pid == 0:
            _child_main(call, log)
        self.pid = pid

    def poll(self) -> int | None:
        if self.code is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(status)
        return self.code

    def send(self, sig: int) -> None:
        """Send `sig` unless the child has exited; whether it landed shows in the exit code."""
        if self.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self._fail(f"a child ran past {timeout:.0f} s (a deadlock?)")
            time.sleep(POLL_SECONDS)
        return self.code

    def sleep_while_alive(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and self.poll() is None:
            time.sleep(min(POLL_SECONDS, max(0.0, end - time.monotonic())))

    def wait_for_progress(self, progress: Callable[[], int], target: int, timeout: float = 300) -> None:
        """Until `target` units are on disk or the child has ended; a child stuck past `timeout` fails the test
        (with its log) instead of hanging the suite."""
        deadline = time.monotonic() + timeout
        while self.poll() is None and progress() < target:
            if time.monotonic() > deadline:
                self._fail(f"a child reached {progress()} of {target} units in {timeout:.0f} s (a deadlock?)")
            time.sleep(POLL_SECONDS)

    def _fail(self, what: str) -> None:
        """End a stuck child and fail the test with its log, instead of hanging the suite."""
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"{what}; its log ends:\n{self.output()}")

    def output(self, tail: int = 4000) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-tail:] if self.log.is_file() else ""


def run_to_end(call: Callable[[], int | None], log: Path, timeout: float = 300) -> Child:
    child = Child(call, log)
    code = child.wait(timeout)
    assert code == 0, f"the run exited {code}; its log ends:\n{child.output()}"
    return child


@dataclass(frozen=True)
class Timing:
    """How a complete, uninterrupted run progressed: the kill points are drawn from it."""

    reached: tuple[float, ...]  # reached[k]: seconds from the start until k + 1 units of progress were on disk

    @property
    def total(self) -> int:
        return len(self.reached)

    def unit_seconds(self, k: int) -> float:
        """How long the unit after the k-th took; unit 0 (k = 0) includes the set-up."""
        return self.reached[k] - (self.reached[k - 1] if k else 0.0)


def measure(call: Callable[[], int | None], progress: Callable[[], int], log: Path, timeout: float = 300) -> Timing:
    """Run to the end once, watching the progress: the uninterrupted reference and its timing."""
    child = Child(call, log)
    reached: list[float] = []
    deadline = time.monotonic() + timeout
    while child.poll() is None and time.monotonic() < deadline:
        now = progress()
        reached.extend([time.monotonic() - child.started] * (now - len(reached)))
        time.sleep(POLL_SECONDS)
    code = child.wait(timeout)
    assert code == 0, f"the uninterrupted run exited {code}; its log ends:\n{child.output()}"
    final = progress()
    reached.extend([time.monotonic() - child.started] * (final - len(reached)))
    assert len(reached) >= 3, f"the uninterrupted run left {final} units of progress: too few to aim kills at"
    return Timing(tuple(reached[:final]))


@dataclass(frozen=True)
class KillPoint:
    target: int  # units of progress the kill waited for (the units already there: a kill in the set-up)
    progress: int  # units on disk when the kill was sent
    seconds: float  # after the child started


@dataclass
class Chain:
    kills: list[KillPoint] = field(default_factory=list)
    attempts: int = 0
    logs: list[Path] = field(default_factory=list)


def kill_chain(attempt_call: Callable[[int], Callable[[], int | None]], progress: Callable[[], int], timing: Timing,
               rng: random.Random, kills: int, log_dir: Path, timeout: float = 300) -> Chain:
    """Start the command, SIGKILL it at a seeded point, start it again, ... up to `kills` times, and let it finish.

    A kill point is a target drawn from the units still to do (spread so that every kill has work left to land
    in; never the last unit, which may end before the kill arrives), then a seeded moment within that unit, as
    long as the reference run took for it. A target of "nothing new" kills at a random moment of the set-up
    (imports, model loading, cache checks, checkpoint restore) or of the first unit. A run faster than the
    reference can finish before a kill arrives: the chain then ends with fewer kills (see `Chain.kills`)."""
    chain = Chain()
    while True:
        done = progress()
        log = log_dir / f"attempt-{chain.attempts}.log"
        child = Child(attempt_call(chain.attempts), log)
        chain.logs.append(log)
        chain.attempts += 1
        if len(chain.kills) < kills:
            target = done + rng.randint(0, max(0, timing.total - 2 - done) // max(1, kills - len(chain.kills) - 1))
            if target == done:
                delay = rng.uniform(0.0, timing.unit_seconds(0))
            else:
                child.wait_for_progress(progress, target, timeout)
                delay = rng.uniform(0.0, timing.unit_seconds(target))
            child.sleep_while_alive(delay)
            reached = progress()
            child.send(signal.SIGKILL)
        code = child.wait(timeout)
        if code == -signal.SIGKILL:
            chain.kills.append(KillPoint(target, reached, round(time.monotonic() - child.started, 3)))
            continue
        assert code == 0, f"attempt {chain.attempts} exited {code}; its log ends:\n{child.output()}"
        return chain


def count_lines(path: Path) -> int:
    """Complete lines of a file another process appends to (a torn last line does not count)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def count_rows(database: Path, *tables: str) -> int:
    """Rows in SQLite tables another process is writing; a missing or busy database counts as no progress yet."""
    import sqlite3

    if not database.is_file():
        return 0
    try:
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=0.05)
    except sqlite3.Error:
        return 0
    try:
        return sum(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables)
    except sqlite3.Error:
        return 0
    finally:
        connection.close()


def folder_bytes(folder: Path) -> int:
    """Bytes under `folder`, partial downloads included."""
    total = 0
    for path in folder.rglob("*") if folder.is_dir() else ():
        with suppress(FileNotFoundError):
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
    return total


def die_while_writing(call: Callable[[], int | None], name: str, log: Path, timeout: float = 300,
                      kill: bool = True) -> int:
    """Run `call` in a forked child that dies the moment it writes bytes into a file whose name contains `name`
    (the final file, or a temporary file beside it), as a process does when it is killed mid-write: on that
    file's first open for writing, the child's file-size limit drops to 0, so its next write raises SIGXFSZ, whose
    default action ends the process. With kill=False the signal stays ignored (Python's default) and writes past
    1 kB more than the child's log fail with EFBIG instead, as on a disk that fills up at that moment. Returns the
    exit code (-SIGXFSZ when it died there)."""

    def armed() -> int | None:
        import resource
        import sys

        def hook(event: str, args: tuple) -> None:
            if event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
                return
            mode, flags = (args[1], args[2]) if len(args) > 2 else (args[1] if len(args) > 1 else None, 0)
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR))
            if writing and name in os.path.basename(os.fsdecode(args[0])):
                # a failed write must still be able to log its one line: the child's log keeps 1 kB of room
                room = 0 if kill else log.stat().st_size + 1024
                resource.setrlimit(resource.RLIMIT_FSIZE, (room, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

        if kill:  # Python ignores SIGXFSZ, which turns the kill into an OSError
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        sys.addaudithook(hook)
        return call()

    return Child(armed, log).wait(timeout)
