"""One writer at a time for a folder rpo-bench fills (a training output, a leaderboard, a demo).

An advisory fcntl lock on `<folder>/.rpo-bench.lock`, held for as long as the work runs. The kernel drops it when
its process ends, however it ends, so a lock left by a killed process is simply taken over by the next run; the
file keeps the holder's pid only so that a refused second writer can say who holds it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from rpo_bench.core.errors import BadInputError

LOCK_FILE = ".rpo-bench.lock"


# (pid, folder) -> how many nested blocks of this process hold it; the pid keeps a forked child (which inherits
# this dict) from taking its parent's hold for its own
_HELD: dict[tuple[int, Path], int] = {}


def _holder(handle) -> str:
    try:
        handle.seek(0)
        pid = handle.read().strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


def refuse_if_locked(folder: Path | str, what: str) -> None:
    """Refuse, creating and changing nothing, while another process holds `folder`'s lock: said before minutes
    of set-up rather than after. Only a hint: folder_lock is what keeps a second writer out."""
    import fcntl  # noqa: PLC0415 - POSIX only: imported where locks are taken

    if _HELD.get((os.getpid(), Path(folder).resolve())):
        return  # this process holds it: not a second writer
    try:
        handle = open(Path(folder) / LOCK_FILE, encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError:
        return  # no lock file (or none readable): nobody to refuse for
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)  # released when the handle closes
        except BlockingIOError:
            raise _in_use(folder, what, handle) from None


def _in_use(folder: Path | str, what: str, handle) -> BadInputError:
    return BadInputError(f"the {what} {folder} is in use by {_holder(handle)}, which is writing into it; "
                         "wait for it to finish (or stop it), or choose another folder")


@contextlib.contextmanager
def folder_lock(folder: Path | str, what: str) -> Iterator[Path]:
    """Hold the lock of `folder` (created if missing) inside the block; refuse in one line when another process
    holds it. `what` names the folder for the user ("training output", "leaderboard micro"). Re-entrant within a
    process: a demo holds its folder and the comparison it runs takes the same lock again."""
    folder = Path(folder)
    key = (os.getpid(), folder.resolve())
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield folder
        finally:
            _HELD[key] -= 1
        return
    with _exclusive(folder, what):
        _HELD[key] = 1
        try:
            yield folder
        finally:
            del _HELD[key]


@contextlib.contextmanager
def _exclusive(folder: Path, what: str) -> Iterator[None]:
    import fcntl  # noqa: PLC0415 - POSIX only: imported where locks are taken

    try:
        folder.mkdir(parents=True, exist_ok=True)
        # atomic: the lock file holds only the holder's pid, for the refusal message
        handle = open(folder / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the block
    except OSError as exc:
        raise BadInputError(f"cannot write the {what} {folder}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(folder, what, handle) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing the file releases the lock
