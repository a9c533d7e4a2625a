"""`rpo-bench download NAME...`: fetch what models, metrics, prompt sets and styles read from the Hub, verified by
hash. A workflow: it drives every registry (a prompt set's JSONL, a style's references), so it sits above them.

Registry entries declare their remote files as `HubFiles` (data; see workflows/entries.py); this module turns them into
a plan (the Hub's file list at a resolved commit, with sizes and published hashes) and executes it into the
ordinary Hugging Face cache, where `from_pretrained`, `hf_hub_download` and `try_to_load_from_cache` find the
files offline later.

Why not plain `hf_hub_download`: huggingface_hub 2.4 streams every blob into a process-unique
`blobs/<etag>.<uuid>.incomplete` file and deletes it when the transfer fails (`_download_to_tmp_and_move`), so an
interrupted multi-GB checkpoint restarts from byte 0 (it only resumes within one call, after a transient network
error); and it checks sizes, not content hashes. So each blob is fetched here into `blobs/<etag>.incomplete`, a
name that survives across runs and is continued with an HTTP Range request through huggingface_hub's own
`http_get`, under the same lock file huggingface_hub uses; its hash is checked *before* it is renamed into the
blob store; and `hf_hub_download` then finds the blob, downloads nothing, and links the snapshot file and the
revision ref exactly as for its own downloads.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rpo_bench.core.atomic import atomic_write
from rpo_bench.core.config import home_dir, is_offline
from rpo_bench.core.errors import RpoBenchError
from rpo_bench.evaluation.prompts import load_spec, prompts_fetched
from rpo_bench.hub.availability import hub_endpoint, hub_unreachable
from rpo_bench.hub.availability import one_line as _one_line
from rpo_bench.hub.hub_files import GLOB_CHARS, DownloadError, HubFiles
from rpo_bench.models.fingerprint import file_fingerprint, sha256_file
from rpo_bench.style.availability import references_fetched
from rpo_bench.style.registry import materialise_dataset, reference_images
from rpo_bench.workflows.entries import EntryFiles, entry_files


# -- the plan: the Hub's file list at a commit ----------------------------------------------------------------
@dataclass(frozen=True)
class RemoteFile:
    filename: str
    size: int | None
    expected: str | None  # hex digest the bytes must have; None: nothing published to check against
    algorithm: str  # "sha256" or "git-sha1" (the git blob id of a small, non-LFS file)
    source: str  # where `expected` comes from, for listings and error messages
    cached: str | None  # the file in the local Hugging Face cache at this commit, if there


@dataclass
class RepoPlan:
    files: HubFiles
    commit: str | None = None  # None offline: the file list needs the Hub
    remote: list[RemoteFile] = field(default_factory=list)

    @property
    def missing(self) -> list[RemoteFile]:
        return [f for f in self.remote if f.cached is None]


@dataclass
class EntryPlan:
    entry: EntryFiles
    repos: list[RepoPlan]

    @property
    def remote(self) -> list[RemoteFile]:
        return [f for repo in self.repos for f in repo.remote]

    @property
    def missing(self) -> list[RemoteFile]:
        return [f for repo in self.repos for f in repo.missing]


def plan_downloads(names: Sequence[str], kind: str | None = None) -> list[EntryPlan]:
    """Every name's files with sizes, hashes and cache state. All names are looked up before the Hub is asked,
    so a typo in the third name fails before anything is fetched."""
    entries = [entry_files(name, kind) for name in names]
    if not is_offline() and any(_needs_hub(entry) for entry in entries):
        _require_reachable_hub()
    return [EntryPlan(entry, [_repo_plan(entry.name, files) for files in entry.files]) for entry in entries]


def _needs_hub(entry: EntryFiles) -> bool:
    return bool(entry.files) or (entry.prompt_set is not None and not prompts_fetched(entry.prompt_set)) or (
        entry.style is not None and not references_fetched(entry.style))


def _require_reachable_hub() -> None:
    """One short probe instead of huggingface_hub's and datasets' retries per file (tens of seconds each)."""
    why = hub_unreachable()
    if why is not None:
        raise DownloadError(f"rpo-bench download needs the Hub and {hub_endpoint()} cannot be reached ({why}); run "
                            "it where the Hub is reachable, or set HF_ENDPOINT to a reachable mirror")


def _repo_plan(name: str, files: HubFiles) -> RepoPlan:
    if is_offline():
        return RepoPlan(files)
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415 - huggingface_hub loads in ~1 s: on first use
    from huggingface_hub.utils import filter_repo_objects  # noqa: PLC0415 - huggingface_hub loads in ~1 s: on first use

    info = _repo_info(name, files)
    commit = info.sha or files.revision
    siblings = list(filter_repo_objects(info.siblings or [], allow_patterns=list(files.patterns) or None,
                                        key=lambda sibling: sibling.rfilename))
    present = {sibling.rfilename for sibling in siblings}
    absent = [p for p in files.patterns if GLOB_CHARS.isdisjoint(p) and p not in present]
    if absent or not siblings:
        raise DownloadError(f"{name}: {files.repo} (revision {files.revision}) has no file matching "
                            f"{', '.join(absent or files.patterns)}")
    remote = []
    for sibling in siblings:
        algorithm, expected, source = _expected_hash(files, sibling)
        cached = try_to_load_from_cache(files.repo, sibling.rfilename, revision=commit, repo_type=files.repo_type)
        remote.append(RemoteFile(sibling.rfilename, sibling.size, expected, algorithm, source,
                                 cached if isinstance(cached, str) else None))
    return RepoPlan(files, commit, remote)


def _repo_info(name: str, files: HubFiles):
    from huggingface_hub import HfApi  # noqa: PLC0415 - huggingface_hub loads in ~1 s: on first use
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError  # noqa: PLC0415 - huggingface_hub loads in ~1 s: on first use

    api = HfApi()
    get_info = api.dataset_info if files.repo_type == "dataset" else api.model_info
    where = f"{name}: {files.repo} (revision {files.revision})"
    try:
        return get_info(files.repo, revision=files.revision, files_metadata=True)
    except GatedRepoError as exc:
        raise DownloadError(f"{where} is gated: accept its terms on the Hub, then log in with `hf auth login`") from exc
    except RepositoryNotFoundError as exc:
        raise DownloadError(f"{where} does not exist on the Hub, or is private and needs `hf auth login`") from exc
    except RevisionNotFoundError as exc:
        raise DownloadError(f"{where}: no such revision on the Hub") from exc
    except Exception as exc:  # huggingface_hub raises its HTTP errors, httpx2's transport errors and OSErrors
        raise DownloadError(f"{where}: cannot list its files on the Hub: {_one_line(exc)}") from exc


def _expected_hash(files: HubFiles, sibling) -> tuple[str, str | None, str]:
    """A pin in the registry wins over the Hub's own hash: the pin is what the entry was validated with."""
    pinned = files.sha256.get(sibling.rfilename)
    if pinned:
        return "sha256", pinned.lower(), "pinned sha256"
    if sibling.lfs is not None:
        return "sha256", sibling.lfs.sha256, "LFS sha256"
    if sibling.blob_id:
        return "git-sha1", sibling.blob_id, "git blob id"
    return "sha256", None, "no hash published"


# -- the download ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileOutcome:
    remote: RemoteFile
    digest: str
    fetched: bool  # bytes came over the network in this run
    resumed_from: int = 0  # bytes already on disk from an interrupted run


@dataclass
class RepoResult:
    files: HubFiles
    commit: str
    outcomes: list[FileOutcome]


@dataclass
class EntryResult:
    entry: EntryFiles
    repos: list[RepoResult]
    record: Path | None = None
    prompts: int | None = None  # prompt sets: how many prompts the cached JSONL holds
    references: tuple[int, Path] | None = None  # Hub-dataset styles: how many references, in which folder


def download(names: Sequence[str], kind: str | None = None, progress: bool = True) -> list[EntryResult]:
    """Fetch and verify every file the names need; files already cached are verified, not fetched."""
    if is_offline():
        raise DownloadError(f"rpo-bench download needs the network and HF_HUB_OFFLINE is set; run it with "
                            f"HF_HUB_OFFLINE unset (or add --dry-run to list what {', '.join(names)} needs)")
    plans = plan_downloads(names, kind)
    total = sum(f.size or 0 for plan in plans for f in plan.missing)
    with _byte_progress(total, progress) as bar:
        results = [_download_entry(plan, bar) for plan in plans]
    for result in results:  # after the byte bar: the references have their own, and two cannot show at once
        if result.entry.style is not None:
            result.references = _fetch_references(result.entry.name, result.entry.style, progress)
    return results


def _download_entry(plan: EntryPlan, bar: _ByteBar) -> EntryResult:
    name = plan.entry.name
    repos = [RepoResult(repo.files, repo.commit or repo.files.revision,
                        [_ensure_file(name, repo, remote, bar) for remote in repo.remote]) for repo in plan.repos]
    result = EntryResult(plan.entry, repos)
    if plan.entry.prompt_set is not None:  # the JSONL is what prompt loading reads, offline included

        try:
            result.prompts = len(load_spec(plan.entry.prompt_set).prompts)
        except RpoBenchError:
            raise
        except Exception as exc:  # the datasets library's network and format errors
            raise DownloadError(f"{name}: fetching the prompts failed: {_one_line(exc)}") from exc
    if repos:
        result.record = _write_record(result)
    return result


def _fetch_references(name: str, style, progress: bool) -> tuple[int, Path]:
    """Stream the style's references into their folder once (what `styles fetch` does), and count them."""
    try:
        folder = materialise_dataset(style, show_progress=progress)
        return len(reference_images(style)), folder
    except RpoBenchError:
        raise
    except Exception as exc:  # the datasets library's network and format errors
        raise DownloadError(f"{name}: fetching the reference images failed: {_one_line(exc)}") from exc


def _ensure_file(name: str, repo: RepoPlan, remote: RemoteFile, bar: _ByteBar) -> FileOutcome:
    files, commit = repo.files, repo.commit or repo.files.revision
    cached = _linked_copy(files, commit, remote.filename)
    if cached is not None:
        digest = _digest(cached, remote.algorithm, memoise=True)
        if remote.expected in (None, digest):
            return FileOutcome(remote, digest, fetched=False)
        _remove_cached(cached)  # a damaged copy (disk, an older tool): fetch it again below
    fetched = _fetch_blob(name, files, commit, remote, bar)
    path = _link(name, files, commit, remote.filename)
    digest = fetched[0] if fetched else _digest(path, remote.algorithm, memoise=True)
    if remote.expected not in (None, digest):  # a blob that was in the store already, put there by another tool
        _remove_cached(path)
        raise DownloadError(_mismatch(name, files, commit, remote, digest, "it was removed from the cache"))
    return FileOutcome(remote, digest, fetched=fetched is not None, resumed_from=fetched[1] if fetched else 0)


def _linked_copy(files: HubFiles, commit: str, filename: str) -> Path | None:
    """The cached file when the requested revision already points at `commit` (so offline loads by revision
    find it); otherwise None, and `_link` records the revision."""
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415 - huggingface_hub loads in ~1 s: on first use

    cached = try_to_load_from_cache(files.repo, filename, revision=files.revision, repo_type=files.repo_type)
    return Path(cached) if isinstance(cached, str) and commit in Path(cached).parts else None


def _fetch_blob(name: str, files: HubFiles, commit: str, remote: RemoteFile, bar: _ByteBar) -> tuple[str, int] | None:
    """Download one file into the cache's blob store, continuing `<etag>.incomplete` from an earlier run; the
    hash is checked before the blob enters the store. Returns (digest, bytes resumed), or None when the blob was
    already in the store (another commit or another tool fetched the same content)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url  # noqa: PLC0415 - huggingface_hub loads in ~1 s: on first use
    from huggingface_hub.file_download import http_get, repo_folder_name  # noqa: PLC0415 - huggingface_hub loads in ~1 s: on first use
    from huggingface_hub.utils import WeakFileLock, build_hf_headers  # noqa: PLC0415 - huggingface_hub loads in ~1 s: on first use

    url = hf_hub_url(files.repo, remote.filename, repo_type=files.repo_type, revision=commit)
    try:
        meta = get_hf_file_metadata(url)
    except Exception as exc:  # huggingface_hub raises its HTTP errors, httpx2's transport errors and OSErrors
        raise DownloadError(f"{name}: cannot reach {files.repo}/{remote.filename} on the Hub: "
                            f"{_one_line(exc)}") from exc
    if not meta.etag:  # the blob's name in the cache; huggingface_hub refuses such files too
        raise DownloadError(f"{name}: the Hub sent no ETag for {files.repo}/{remote.filename}")
    folder = repo_folder_name(repo_id=files.repo, repo_type=files.repo_type)
    blob = Path(constants.HF_HUB_CACHE) / folder / "blobs" / meta.etag
    lock = Path(constants.HF_HUB_CACHE) / ".locks" / folder / f"{meta.etag}.lock"  # huggingface_hub's own lock
    lock.parent.mkdir(parents=True, exist_ok=True)
    blob.parent.mkdir(parents=True, exist_ok=True)
    size = meta.size if meta.size is not None else remote.size
    with WeakFileLock(lock):
        if blob.exists():
            return None
        partial = blob.with_name(f"{blob.name}.incomplete")
        if partial.exists() and size is not None and partial.stat().st_size > size:
            partial.unlink()  # longer than the file: not a prefix of it
        # atomic: bytes go to `.incomplete` (resumable), renamed onto the blob only once its hash checks out
        try:
            with open(partial, "ab") as handle:  # append mode starts at the end: tell() is what is already there
                resumed = handle.tell()
                http_get(url, handle, resume_size=resumed, headers=build_hf_headers(), expected_size=size,
                         tqdm_class=bar.file(remote.filename))
        except Exception as exc:  # the partial file stays: the next run continues it
            raise DownloadError(f"{name}: downloading {files.repo}/{remote.filename} stopped ({_one_line(exc)}); "
                                f"run the same command again to continue") from exc
        digest = _digest(partial, remote.algorithm, memoise=False)
        if remote.expected not in (None, digest):
            partial.unlink()
            raise DownloadError(_mismatch(name, files, commit, remote, digest, "the download was deleted"))
        os.replace(partial, blob)
    return digest, resumed


def _link(name: str, files: HubFiles, commit: str, filename: str) -> Path:
    """Let huggingface_hub link the snapshot file and record the revision -> commit ref; it finds the blob in
    place and downloads nothing."""
    from huggingface_hub import hf_hub_download  # noqa: PLC0415 - huggingface_hub loads in ~1 s: on first use

    try:
        path = Path(hf_hub_download(files.repo, filename, revision=files.revision, repo_type=files.repo_type))
    except Exception as exc:  # huggingface_hub raises its HTTP errors, httpx2's transport errors and OSErrors
        raise DownloadError(f"{name}: cannot link {files.repo}/{filename} into the cache: {_one_line(exc)}") from exc
    if commit not in path.parts:
        raise DownloadError(f"{name}: {files.repo} revision {files.revision} moved from {commit[:12]} during the "
                            "download; run the same command again")
    return path


def _mismatch(name: str, files: HubFiles, commit: str, remote: RemoteFile, got: str, action: str) -> str:
    return (f"{name}: {files.repo}/{remote.filename} (commit {commit[:12]}) does not match its {remote.source}: "
            f"expected {remote.expected}, got {got}; {action}")


def _digest(path: Path, algorithm: str, memoise: bool) -> str:
    """sha256 (memoised by path, size and mtime for cached files, since checkpoints are GBs), or the git blob id."""
    if algorithm == "git-sha1":
        digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        return digest.hexdigest()
    return file_fingerprint(path) if memoise else sha256_file(path)


def _remove_cached(pointer: Path) -> None:
    blob = pointer.resolve()
    pointer.unlink(missing_ok=True)
    if blob != pointer:
        blob.unlink(missing_ok=True)


def _write_record(result: EntryResult) -> Path:
    """What was fetched, at which commit, with which hashes: the provenance of the weights behind later results."""
    record = {"name": result.entry.name, "kind": result.entry.kind,
              "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "repos": [{"repo": r.files.repo, "repo_type": r.files.repo_type, "revision": r.files.revision,
                         "commit": r.commit,
                         "files": {o.remote.filename: {"size": o.remote.size, o.remote.algorithm: o.digest,
                                                       "checked_against": o.remote.source}
                                   for o in r.outcomes}} for r in result.repos]}
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", result.entry.name).strip("_") or "entry"
    path = home_dir() / "downloads" / f"{safe}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, json.dumps(record, indent=2) + "\n")


# -- progress ---------------------------------------------------------------------------------------------------------
class _FileTicker:
    """What huggingface_hub's `http_get` needs from its `tqdm_class`: a context manager with `update(n)`."""

    def __init__(self, advance: Callable[[int], None], initial: int = 0, **_: Any):
        self._advance = advance
        advance(initial)  # bytes kept from an interrupted run count as done

    def update(self, n: int = 1) -> None:
        self._advance(n)

    def __enter__(self) -> _FileTicker:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _ByteBar:
    def __init__(self, progress=None, task=None):
        self.progress, self.task = progress, task

    def advance(self, n: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, n)

    def file(self, label: str) -> Callable[..., _FileTicker]:
        if self.progress is not None:
            self.progress.update(self.task, description=label)
        return functools.partial(_FileTicker, self.advance)


@contextmanager
def _byte_progress(total: int, enabled: bool) -> Iterator[_ByteBar]:
    """One bar over all bytes to fetch (rpo_bench.core.progress counts items; a download counts bytes)."""
    if not enabled or total <= 0:
        yield _ByteBar()
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn  # noqa: PLC0415 - rich: on first use, off the start-up path

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns) as progress:
        yield _ByteBar(progress, progress.add_task("download", total=total))
