"""Content-addressed PNG cache: objects/<ab>/<sha256>.png, plus an index from generation key to content hash.

The generation key hashes everything that determines the pixels (model fingerprint, protocol fingerprint,
dtype, prompt, seed), so a re-run finds its images without generating, whichever store or run asks.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from rpo_bench.errors import BadInputError


def generation_key(model_fingerprint: str, protocol_fingerprint: str, dtype: str, prompt: str, seed: int) -> str:
    payload = {"model": model_fingerprint, "protocol": protocol_fingerprint, "dtype": dtype,
               "prompt": prompt, "seed": seed}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class ImageCache:
    def __init__(self, root: Path):
        self.root = Path(root).expanduser()
        try:
            (self.root / "objects").mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.root / "index.sqlite", timeout=60, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS keys (key TEXT PRIMARY KEY, sha256 TEXT NOT NULL)")
        except (OSError, sqlite3.Error) as exc:
            raise BadInputError(f"cannot use the image cache at {self.root}: {exc}") from exc

    def object_path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256[:2] / f"{sha256}.png"

    def lookup(self, keys: Iterable[str]) -> dict[str, str]:
        """key -> sha256 for the keys whose PNG is present (an index row without its file does not count)."""
        keys = list(keys)
        found: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for key, sha in self._db.execute(f"SELECT key, sha256 FROM keys WHERE key IN ({marks})", chunk):
                if self.object_path(sha).is_file():
                    found[key] = sha
        return found

    def put(self, key: str, image: Image.Image) -> str:
        """Write the PNG (atomically) before its index row, so an interrupted write leaves no dangling key."""
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        path = self.object_path(sha)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{sha}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        self._db.execute("INSERT OR REPLACE INTO keys (key, sha256) VALUES (?, ?)", (key, sha))
        return sha

    def open(self, sha256: str) -> Image.Image:
        with Image.open(self.object_path(sha256)) as image:
            return image.convert("RGB")

    def close(self) -> None:
        self._db.close()
