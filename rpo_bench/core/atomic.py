"""Every file rpo-bench writes goes through here: a temporary file in the same folder, fsync, then one rename.

A kill (SIGKILL, power loss, a full disk) at any moment leaves either the old file or the new one at the final
path, never a torn or empty one; the temporary file is removed on any error. Every file gets the usual permissions
(0666 less the umask) whatever its writer made it (safetensors creates 0600 files, as mkstemp does), so colleagues
can read reports and weights.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterator
from pathlib import Path

from rpo_bench.core.errors import BadInputError

_COUNTER = iter(range(1 << 62))


def _temporary_name(path: Path) -> Path:
    # pid + a per-process counter: two writers (processes or threads) never share a temporary file.
    return path.with_name(f".{path.name}.{os.getpid()}.{next(_COUNTER)}.tmp")


def fsync_folder(folder: Path) -> None:
    """Make a rename inside `folder` durable (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask(folder: Path) -> int:
    """The process's umask, read without changing it: os.umask can only be read by setting it, which would give a
    file another thread creates meanwhile the wrong mode. Linux says it in /proc; elsewhere a probe file's mode
    shows it (the kernel applies the umask to the 0o666 asked for)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    probe = folder / f".umask-probe.{os.getpid()}.{next(_COUNTER)}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        return 0o666 & ~os.fstat(fd).st_mode & 0o777
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


def new_file_mode(folder: Path | str = ".") -> int:
    """The mode of a new file under the current umask: 0o644 under the usual 022, 0o600 under 077."""
    return 0o666 & ~_umask(Path(folder))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: alive
    return True


def _remove_leftovers(path: Path) -> None:
    """Temporary files of `path` left by writers that were killed (their pid is gone)."""
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.*.tmp"):
        pid = leftover.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside `path` for writers that take a file name (torch.save, safetensors, PIL): write it
    inside the block; on a clean exit it is fsynced and renamed onto `path`, on an error removed. What a killed
    writer left beside `path` is removed first."""
    path = Path(path)
    _remove_leftovers(path)
    tmp = _temporary_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
            # the writer's own mode replaced by the umask's: safetensors makes 0600 files, which colleagues
            # sharing the output (or a web server showing a report) cannot read
            os.chmod(handle.fileno() if os.chmod in os.supports_fd else tmp, new_file_mode(path.parent))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def atomic_write(path: Path | str, data: str | bytes, encoding: str = "utf-8", what: str | None = None) -> Path:
    """Write `data` (text is encoded with `encoding`) to `path` atomically; returns `path`. With `what` (the
    output's name for the user, e.g. "report"), a write the disk refuses (read-only, full, no permission) is one
    line naming the file, and whatever was at `path` before is untouched."""
    path = Path(path)
    payload = data.encode(encoding) if isinstance(data, str) else data
    try:
        with atomic_path(path) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
    except OSError as exc:
        if what is None:
            raise

        raise BadInputError(f"cannot write the {what} {path}: {exc.strerror or exc}; nothing was changed "
                            "there") from exc
    return path


def atomic_copy(source: Path | str, path: Path | str) -> Path:
    """Copy a file's bytes to `path` atomically (no metadata: the copy gets fresh permissions)."""
    return atomic_write(path, Path(source).read_bytes())
