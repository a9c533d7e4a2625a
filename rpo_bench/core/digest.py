"""The one fingerprint helper: a sha256 of a JSON-able value in canonical form (sorted keys).

The form is `json.dumps(value, sort_keys=True)` with its default separators, exactly what every fingerprint of
rpo-bench has been made with, so image keys, run ids and cache folders made before this module stay valid; values
JSON cannot encode (paths) are written as their str().
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def digest(value: Any, n: int | None = None) -> str:
    """Hex sha256 of `value` in canonical JSON, cut to its first `n` characters when `n` is given."""
    full = hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()
    return full[:n] if n else full
