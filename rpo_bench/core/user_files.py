"""The one reader of files a user hands in: configs (TOML, YAML, JSON), registry.toml, leaderboard.toml, captions,
prompt files, reference images.

Every read goes through the same gate: a regular file (a link to one is fine; a FIFO, device or socket is refused
before it is opened, so a pipe named zz.png cannot hang a command and a link to /dev/zero cannot fill memory), at
most `max_bytes`, and text in UTF-8 (a leading BOM is tolerated). Every failure is one BadInputError line that names
what the file is for, its path and the place it broke (the byte offset and line, the TOML/JSON/YAML position); the
typed checks of the values inside (which key, which type) are registry.check_table_values' job.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

from rpo_bench.core.errors import BadInputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

MAX_BYTES = 64 * 2**20  # per file: a reference image, a config, a caption or prompt file is far smaller
CONFIG_SUFFIXES = (".toml", ".yaml", ".yml", ".json")
_BOM = b"\xef\xbb\xbf"


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n >= 2**20 and n % 2**20 == 0 else f"{n:,} bytes"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_regular_file(path: Path | str, what: str, max_bytes: int | None = MAX_BYTES) -> os.stat_result:
    """The file's stat (links followed) when it is a regular file of at most `max_bytes`; else one line. Nothing is
    opened, so this is safe on a FIFO or a device."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise BadInputError(f"{what} {path} does not exist") from exc
    except OSError as exc:  # a permission error, a link loop, a name too long
        raise BadInputError(f"{what} {path} cannot be read ({exc.strerror or type(exc).__name__})") from exc
    return _checked(info, path, what, max_bytes)


def _checked(info: os.stat_result, path: Path | str, what: str, max_bytes: int | None) -> os.stat_result:
    if not stat.S_ISREG(info.st_mode):
        raise BadInputError(f"{what} {path} is {_kind(info.st_mode)}; accepted: a regular file (or a link to one)")
    if max_bytes is not None and info.st_size > max_bytes:
        raise BadInputError(f"{what} {path} is {_size(info.st_size)}; accepted: at most {_size(max_bytes)} per file")
    return info


def read_bytes(path: Path | str, what: str, max_bytes: int | None = MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most `max_bytes`. Checked before it is opened, and again on the open file
    (O_NONBLOCK: a file swapped for a FIFO in between cannot block), and the read stops past the cap (a file that
    grows while it is read)."""
    check_regular_file(path, what, max_bytes)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BadInputError(f"{what} {path} cannot be read ({exc.strerror or type(exc).__name__})") from exc
    with os.fdopen(fd, "rb") as handle:
        _checked(os.fstat(handle.fileno()), path, what, max_bytes)
        try:
            data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
        except OSError as exc:
            raise BadInputError(f"{what} {path} cannot be read ({exc.strerror or type(exc).__name__})") from exc
    if max_bytes is not None and len(data) > max_bytes:
        raise BadInputError(f"{what} {path} is over {_size(max_bytes)}; accepted: at most {_size(max_bytes)} per file")
    return data


def decode_text(data: bytes, path: Path | str, what: str) -> str:
    """UTF-8 (a leading BOM dropped), or one line naming the first bad byte's offset in the file and its line."""
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        line = data.count(b"\n", 0, offset) + 1
        raise BadInputError(f"{what} {path} is not UTF-8 text: byte 0x{data[offset]:02x} at offset {offset} (line "
                            f"{line}); accepted: UTF-8 text (save the file as UTF-8)") from None


def read_text(path: Path | str, what: str, max_bytes: int | None = MAX_BYTES) -> str:
    """A regular file's text: UTF-8, BOM tolerated; `what` says what the file is for ("config file")."""
    return decode_text(read_bytes(path, what, max_bytes), path, what)


def read_toml(path: Path | str, what: str, max_bytes: int | None = MAX_BYTES) -> dict[str, Any]:
    text = read_text(path, what, max_bytes)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"{what} {path} is not valid TOML: {' '.join(str(exc).split())}") from None


def read_yaml(path: Path | str, what: str, max_bytes: int | None = MAX_BYTES) -> Any:
    """YAML's safe subset (no Python objects); an empty file is None."""
    import yaml  # noqa: PLC0415 - only YAML configs need pyyaml

    text = read_text(path, what, max_bytes)
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # ValueError: a date such as 2024-13-45
        raise BadInputError(f"{what} {path} is not valid YAML: {' '.join(str(exc).split())}") from None


def _json(text: str, path: Path | str, what: str, where: str = "") -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        place = where or f"line {exc.lineno} column {exc.colno}"
        raise BadInputError(f"{what} {path} is not valid JSON ({exc.msg} at {place})") from None
    except RecursionError:
        raise BadInputError(f"{what} {path} is not valid JSON (nested too deeply)") from None


def read_json(path: Path | str, what: str, max_bytes: int | None = MAX_BYTES) -> Any:
    return _json(read_text(path, what, max_bytes), path, what)


def read_jsonl(path: Path | str, what: str, max_bytes: int | None = MAX_BYTES) -> list[tuple[int, Any]]:
    """(line number, value) of every non-blank line of a JSON-lines file; a bad line is named by its number."""
    rows = []
    for number, line in enumerate(read_text(path, what, max_bytes).splitlines(), 1):
        if line.strip():
            rows.append((number, _json(line, path, what, where=f"line {number}")))
    return rows


def read_config(path: Path | str, what: str, max_bytes: int | None = MAX_BYTES) -> dict[str, Any]:
    """A table of settings from a .toml, .yaml, .yml or .json file (by its suffix), with text keys."""
    suffix = Path(path).suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise BadInputError(f"{what} {path}: suffix {Path(path).suffix!r}; accepted: {', '.join(CONFIG_SUFFIXES)}")
    if suffix == ".toml":
        values: Any = read_toml(path, what, max_bytes)
    elif suffix == ".json":
        values = read_json(path, what, max_bytes)
    else:
        values = read_yaml(path, what, max_bytes)
        values = {} if values is None else values  # an empty YAML file: no settings
    if not isinstance(values, dict):
        raise BadInputError(f"{what} {path} holds {_a(values)}; accepted: a table of settings (key = value)")
    bad = [key for key in values if not isinstance(key, str)]
    if bad:
        raise BadInputError(f"{what} {path}: key {bad[0]!r} is not text; accepted: setting names as keys")
    return values


def _a(value: Any) -> str:
    name = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true or false"}
    return name.get(type(value), f"a {type(value).__name__}")
