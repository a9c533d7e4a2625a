"""Content-addressed PNG cache: objects/<ab>/<sha256>.png, plus an index from generation key to content hash.

The generation key hashes everything that determines the pixels (model fingerprint, protocol fingerprint,
dtype, prompt, seed), so a re-run finds its images without generating, whichever store or run asks.

A file is trusted only if its bytes still hash to the name it is stored under: a truncated or swapped PNG is
reported as damaged (`read` returns None, `verify` False) so the caller regenerates it instead of crashing on
it or scoring the wrong picture.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from rpo_bench.core.atomic import atomic_write
from rpo_bench.core.config import writable_dir
from rpo_bench.core.errors import BadInputError
from rpo_bench.core.sqlite_wal import enable_wal, retry_while_locked

INDEX_FILE = "index.sqlite"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_sha256(text: object) -> bool:
    """Hashes come from SQLite rows (store, index) that a damaged or edited file can fill with anything; only a
    real sha256 may become an object path, so no row can point outside objects/."""
    return isinstance(text, str) and _SHA256.fullmatch(text) is not None


def generation_key(model_fingerprint: str, protocol_fingerprint: str, dtype: str, prompt: str, seed: int) -> str:
    payload = {"model": model_fingerprint, "protocol": protocol_fingerprint, "dtype": dtype,
               "prompt": prompt, "seed": seed}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _stamp(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


class ImageCache:
    def __init__(self, root: Path):
        self.root = Path(root).expanduser()
        self.index_path = self.root / INDEX_FILE
        # sha -> (size, mtime, inode) of the file when its hash was checked: each file is hashed once per
        # process, and a file replaced, truncated or deleted since then is checked again.
        self._verified: dict[str, tuple[int, int, int]] = {}
        writable_dir(self.root / "objects", f"the image cache {self.root}")
        try:
            self._db = sqlite3.connect(self.index_path, timeout=60, isolation_level=None)
        except sqlite3.Error as exc:
            raise BadInputError(f"cannot use the image cache index {self.index_path}: {exc}") from exc
        try:
            with self._guard():
                columns = retry_while_locked(self._setup)
            if columns[:2] != ["key", "sha256"]:
                raise BadInputError(self._damaged(f"table keys has columns {', '.join(columns)}"))
        except BaseException:
            self._db.close()
            raise

    def _setup(self) -> list[str]:
        enable_wal(self._db)
        self._db.execute("CREATE TABLE IF NOT EXISTS keys (key TEXT PRIMARY KEY, sha256 TEXT NOT NULL)")
        return [row[1] for row in self._db.execute("PRAGMA table_info(keys)")]

    def _damaged(self, reason: str) -> str:
        # The index only maps keys to hashes: deleting it loses no image, only reuse by stores that lack the rows.
        return (f"image cache index {self.index_path} is damaged ({reason}); delete it (and any {INDEX_FILE}-wal / "
                f"-shm beside it) and rerun: the images in {self.root / 'objects'} are kept and the index refills "
                "as images are regenerated")

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Damage found in the index mid-run gives the same one line as damage found on opening."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise BadInputError(f"cannot use the image cache index {self.index_path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise BadInputError(self._damaged(str(exc))) from exc

    def object_path(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise BadInputError(f"image hash {sha256!r} in the image cache or results store is not a sha256; "
                                "accepted: 64 lowercase hex digits")
        return self.root / "objects" / sha256[:2] / f"{sha256}.png"

    def lookup(self, keys: Iterable[str]) -> dict[str, str]:
        """key -> sha256 for the keys whose PNG is present and intact (an index row without a good file does not
        count; a damaged file is removed with its rows, so the caller generates it again)."""
        keys = list(keys)
        found: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            with self._guard():
                rows = self._db.execute(f"SELECT key, sha256 FROM keys WHERE key IN ({marks})", chunk).fetchall()
            for key, sha in rows:
                if self.verify(sha):
                    found[key] = sha
        return found

    def verify(self, sha256: str) -> bool:
        """The object exists and its bytes hash to its name; a damaged object is removed (see `forget`)."""
        if self._is_intact(sha256):
            return True
        self.forget([sha256])
        return False

    def _is_intact(self, sha256: str) -> bool:
        if not is_sha256(sha256):
            return False
        path = self.object_path(sha256)
        try:
            if self._verified.get(sha256) == _stamp(path):
                return True
            data = self._read_bytes(sha256)
        except FileNotFoundError:
            return False
        if data is None or hashlib.sha256(data).hexdigest() != sha256:
            return False
        self._remember(sha256)
        return True

    def _read_bytes(self, sha256: str) -> bytes | None:
        """The object's bytes; None when it is missing. An unreadable object (permissions) is one line, since
        regenerating it would fail in the same way."""
        path = self.object_path(sha256)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            return b""  # hashes to something else: damaged
        except OSError as exc:
            raise BadInputError(f"cannot read the cached image {path}: {exc.strerror or exc}") from exc

    def _remember(self, sha256: str) -> None:
        self._verified[sha256] = _stamp(self.object_path(sha256))

    def forget(self, shas: Iterable[str]) -> None:
        """Remove damaged objects and every index row naming them, so no key points at a bad file."""
        shas = list(shas)
        for sha in shas:
            self._verified.pop(sha, None)
            if is_sha256(sha):
                path = self.object_path(sha)
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()  # only an empty one; anything else there is the user's, and stays an error
                else:
                    path.unlink(missing_ok=True)
        for start in range(0, len(shas), 500):
            chunk = shas[start:start + 500]
            with self._guard():
                self._db.execute(f"DELETE FROM keys WHERE sha256 IN ({','.join('?' * len(chunk))})", chunk)

    def put(self, key: str, image: Image.Image) -> str:
        """Write the PNG (atomically) before its index row, so an interrupted write leaves no dangling key."""
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        path = self.object_path(sha)
        if not self._is_intact(sha):  # absent, or present but damaged: (re)write it
            if path.is_dir():
                path.rmdir()
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, data)
            self._remember(sha)
        with self._guard():
            self._db.execute("INSERT OR REPLACE INTO keys (key, sha256) VALUES (?, ?)", (key, sha))
        return sha

    def read(self, sha256: str) -> Image.Image | None:
        """The RGB image, or None if its file is missing or damaged (then also removed).

        The bytes are hashed and decoded from the same read, so what is scored is what was verified."""
        if not is_sha256(sha256):
            self.forget([sha256])
            return None
        data = self._read_bytes(sha256)
        if data is None:
            return None
        if hashlib.sha256(data).hexdigest() != sha256:
            self.forget([sha256])
            return None
        try:
            with Image.open(io.BytesIO(data)) as image:
                rgb = image.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            # The bytes are those written, so only a PNG that PIL cannot decode at all gets here.
            self.forget([sha256])
            return None
        self._remember(sha256)
        return rgb

    def open(self, sha256: str) -> Image.Image:
        """The image, or one line naming the damaged file (for callers that cannot regenerate it)."""
        image = self.read(sha256)
        if image is None:
            raise BadInputError(f"cached image {self.object_path(sha256)} is missing or damaged (its bytes do not "
                                "hash to its name); run the same evaluate again to regenerate it")
        return image

    def close(self) -> None:
        self._db.close()
