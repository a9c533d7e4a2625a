"""Model fingerprints: what an image cache key needs to know about the weights that made an image.

Hub components are identified by repo + resolved commit (a branch name like "main" moves; a commit does not);
local folders by the sha256 of every file in them, so retraining into the same folder changes the key.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from rpo_bench.core.atomic import atomic_write
from rpo_bench.core.config import home_dir, is_offline
from rpo_bench.core.errors import BadInputError, MissingWeightsError
from rpo_bench.hub.availability import hub_unavailable, missing_file_message, one_line
from rpo_bench.hub.hub_files import HubFiles

_HASH_CACHE_FILE = "file-hashes.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _memoised_hashes(paths: list[Path], owner: Path) -> list[str]:
    """sha256 of each file, memoised by path, size and mtime: an SD checkpoint folder or a scorer checkpoint is
    several GB, and hashing it on every evaluate would cost seconds. `owner` (the folder or file being
    fingerprinted) is named when a file cannot be read."""
    memo_path = home_dir() / _HASH_CACHE_FILE
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    if not isinstance(memo, dict):  # a memo damaged by hand or by another tool: start over, it is only a cache
        memo = {}
    hashes, changed = [], False
    for path in paths:
        try:
            stat = path.stat()
            memo_key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
            if not isinstance(memo.get(memo_key), str):
                memo[memo_key] = sha256_file(path)
                changed = True
        except OSError as exc:
            raise _unreadable(owner, path, exc) from exc
        hashes.append(memo[memo_key])
    if changed:
        _write_json_atomic(memo_path, memo)
    return hashes


def _unreadable(owner: Path, path: Path, exc: OSError) -> BadInputError:
    if isinstance(exc, FileNotFoundError):
        reason = "disappeared while it was being read (is something writing into that folder?)"
    else:
        reason = f"cannot be read ({exc.strerror or type(exc).__name__})"
    where = "" if path == owner else f" in {owner}"
    return BadInputError(f"{path}{where} {reason}; its weights are fingerprinted to key cached images and scores, "
                         "so every file must be readable")


def _folder_files(folder: Path) -> list[Path]:
    """Every file under `folder` except dot-files, following file symlinks (a Hub cache snapshot is made of them)
    but not directory symlinks (a link to a parent would never end). A directory that cannot be listed is an
    error: skipping it would give its contents no say in the fingerprint."""

    def refuse(exc: OSError) -> None:
        raise _unreadable(folder, Path(exc.filename or folder), exc)

    files = []
    for root, _dirs, names in os.walk(folder, onerror=refuse):
        files += [Path(root) / name for name in names if not name.startswith(".") and (Path(root) / name).is_file()]
    return sorted(files)


def folder_fingerprint(folder: Path) -> str:
    """sha256 over (relative path, file sha256) of all files of a folder."""
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise BadInputError(f"{folder} is not a folder ({'a file' if folder.is_file() else 'it does not exist'}); "
                            "accepted: a model folder")
    paths = _folder_files(folder)
    digest = hashlib.sha256()
    for path, file_hash in zip(paths, _memoised_hashes(paths, folder), strict=True):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_hash}\n".encode())
    return digest.hexdigest()


def _write_json_atomic(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(data))
    except OSError:
        pass  # the memo only saves time; failing to write it must not fail an evaluation


def resolve_hub_commit(repo: str, revision: str, probe_file: str, what: str, name: str | None = None) -> str:
    """The commit a hub revision points to, offline from the local cache or online from the hub API.

    `name` is the rpo-bench registry name whose files these are: the offline error then names the command that
    fetches them."""
    if len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return revision
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415 - huggingface_hub loads in ~1 s: on first use

    cached = try_to_load_from_cache(repo, probe_file, revision=revision)
    if isinstance(cached, str):
        return Path(cached).parts[-1 - len(Path(probe_file).parts)]  # .../snapshots/<commit>/<probe_file>

    reason = hub_unavailable()
    if reason is not None and name:
        raise MissingWeightsError(missing_file_message(name, HubFiles(repo, revision), probe_file, reason))
    if reason is not None:
        raise MissingWeightsError(
            f"{what}: {repo}/{probe_file} (revision {revision}) is not in the local Hugging Face cache and "
            f"{reason}; fetch it on a connected machine with `hf download {repo}`"
            + (" or unset HF_HUB_OFFLINE" if is_offline() else "")
        )
    from huggingface_hub import HfApi  # noqa: PLC0415 - huggingface_hub loads in ~1 s: on first use
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError  # noqa: PLC0415 - huggingface_hub loads in ~1 s: on first use

    try:
        return HfApi().model_info(repo, revision=revision).sha or revision
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise MissingWeightsError(f"{what}: {repo} revision {revision} does not exist on the hub") from exc
    except Exception as exc:  # HTTP errors, and the client's transport errors, which are no OSError (httpx2)
        raise MissingWeightsError(f"{what}: cannot reach the hub to resolve {repo}@{revision}: "
                                  f"{one_line(exc)}") from exc


def file_fingerprint(path: Path) -> str:
    """sha256 of one file (a scorer checkpoint of several GB), memoised like `folder_fingerprint`'s."""
    path = path.expanduser().resolve()
    if not path.is_file():
        state = "a directory" if path.is_dir() else "not a regular file" if path.exists() else "it does not exist"
        raise BadInputError(f"{path} is not a file ({state}); accepted: a checkpoint file")
    return _memoised_hashes([path], path)[0]
