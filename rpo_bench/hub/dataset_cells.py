"""The cells of a Hugging Face dataset row, as rpo-bench reads them (a preference set's images, a style's
references): one place that knows the shapes parquet and `datasets` give an image."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from rpo_bench.core.errors import BadInputError


def image_bytes(value: Any) -> bytes:
    """An image cell as stored by parquet / `datasets`: raw bytes, {'bytes', 'path'}, a PIL image, or None.

    None and empty values (Pick-a-Pic's withdrawn images) become b"", which fails the decode check.
    """
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, Mapping):
        if value.get("bytes"):
            return bytes(value["bytes"])
        if value.get("path"):
            return Path(value["path"]).read_bytes()
        return b""
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue()
    raise BadInputError(f"an image cell of type {type(value).__name__}; accepted: bytes, a {{bytes, path}} "
                        "mapping, a PIL image or null")
