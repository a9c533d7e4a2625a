"""`rpo-bench download NAME...`: models, metrics, prompt sets and styles into the local cache, verified by sha256."""

from __future__ import annotations

import math
from enum import Enum

import typer

from rpo_bench.cli.console import console, print_records


class Kind(str, Enum):
    models = "models"
    metrics = "metrics"
    prompts = "prompts"
    styles = "styles"


def human_size(n: int | None) -> str:
    if n is None:
        return "?"
    if n < 1000:
        return f"{n} B"
    exponent = min(int(math.log10(n)) // 3, 4)
    return f"{n / 1000 ** exponent:.1f} {('kB', 'MB', 'GB', 'TB')[exponent - 1]}"


def download(
    names: list[str] = typer.Argument(..., metavar="NAME", help="Models, metrics (NAME or NAME:ARG), "
                                      "prompt sets and styles."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the files, their sizes and what is cached already; "
                                 "download nothing."),
    kind: Kind | None = typer.Option(None, help="Which registry NAME is from, when it is in more than one."),
) -> None:
    """Fetch what NAME reads from the Hub into the local cache, hash-checked.

    Checks every file's hash and continues interrupted downloads (a style: its
    CLIP, and its reference images when they come from a Hub dataset).
    Afterwards NAME works with HF_HUB_OFFLINE=1."""
    from rpo_bench.workflows.download import download as run_download
    from rpo_bench.workflows.download import plan_downloads

    kind_name = kind.value if kind else None
    if dry_run:
        _show_plans(plan_downloads(names, kind_name))
    else:
        _show_results(run_download(names, kind_name))


def _show_plans(plans) -> None:
    from rpo_bench.hub.availability import KIND_LABELS

    for plan in plans:
        entry = plan.entry
        label = f"{entry.name} ({KIND_LABELS[entry.kind]})"
        if not plan.repos:
            console.print(f"{label}: {entry.note}", highlight=False)
            continue
        for repo in plan.repos:
            files = repo.files
            console.print(f"{label}: {files.repo} @ {(repo.commit or files.revision)[:12]}"
                          + (f" ({files.what})" if files.what else ""), highlight=False, markup=False)
            _print_repo_files(repo)
        if entry.note:
            console.print(f"  {entry.note}", highlight=False)
        console.print(f"  {_totals(plan)}", highlight=False)
    if len(plans) > 1 and all(repo.commit for plan in plans for repo in plan.repos):
        files, missing = [f for p in plans for f in p.remote], [f for p in plans for f in p.missing]
        console.print(f"all: {_count(files)}; to download: {_count(missing)}", highlight=False)


def _print_repo_files(repo) -> None:
    files = repo.files
    if repo.commit is None:  # offline: what is declared, not what it matches
        rows = [(pattern, "?", "?", "") for pattern in files.patterns]
    else:
        rows = [(remote.filename, human_size(remote.size), "yes" if remote.cached else "no", remote.source)
                for remote in repo.remote]
    # file names (paths in the repository) fold where the console is narrow; the other columns stay whole
    print_records(None, ("file", "size", "cached", "hash"), rows, prose=("file",), numeric=("size",))


def _count(files) -> str:
    return f"{len(files)} files, {human_size(sum(f.size or 0 for f in files))}"


def _totals(plan) -> str:
    if any(repo.commit is None for repo in plan.repos):
        return "HF_HUB_OFFLINE is set: the file list and the sizes need the Hub"
    return f"{_count(plan.remote)}; to download: {_count(plan.missing)}"


def _show_results(results) -> None:
    rows = []
    for result in results:
        for repo in result.repos:
            fetched = [o for o in repo.outcomes if o.fetched]
            checked = sum(o.remote.expected is not None for o in repo.outcomes)
            rows.append((result.entry.name, repo.files.repo, repo.commit[:12], str(len(repo.outcomes)),
                         f"{len(fetched)} ({human_size(sum(o.remote.size or 0 for o in fetched))})",
                         f"{checked} of {len(repo.outcomes)}"))
    if rows:
        print_records("downloaded", ("name", "repository", "commit", "files", "fetched", "verified"), rows,
                      prose=("repository",), numeric=("files", "fetched"))
    for result in results:
        if not result.repos:
            console.print(f"{result.entry.name}: {result.entry.note}", highlight=False)
        if result.prompts is not None:
            console.print(f"{result.entry.name}: {result.prompts} prompts cached", highlight=False)
        if result.references is not None:
            count, folder = result.references
            console.print(f"{result.entry.name}: {count} reference images in {folder}", highlight=False,
                          markup=False)
        if result.record is not None:
            console.print(f"{result.entry.name}: record {result.record}", highlight=False)
