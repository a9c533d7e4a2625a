"""Prompt sets: the project's files, any user file, and the standard sets fetched from the Hub once."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from rpo_bench.core.atomic import atomic_write
from rpo_bench.core.config import home_dir, safe_child, writable_dir
from rpo_bench.core.digest import digest
from rpo_bench.core.errors import BadInputError, MissingWeightsError
from rpo_bench.core.registry import (
    INTEGER,
    STRING,
    Registry,
    check_table_keys,
    check_table_values,
    read_toml,
    rules_from_dataclass,
)
from rpo_bench.core.user_files import read_text
from rpo_bench.hub.availability import AbsentEntry, entry_from_files, hub_unavailable

log = logging.getLogger(__name__)
PROJECT_PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"
FILE_SUFFIXES = (".txt", ".jsonl")


@dataclass(frozen=True)
class Prompt:
    index: int
    text: str
    category: str = ""


@dataclass(frozen=True)
class PromptSetSpec:
    name: str
    summary: str = ""
    file: str | None = None
    hf_dataset: str | None = None
    split: str | None = None
    column: str = "prompt"
    category_column: str | None = None
    hf_files: tuple[str, ...] = ()
    size: int | None = None

    @property
    def source(self) -> str:
        return self.file or f"hf:{self.hf_dataset}" + (f" [{self.split}]" if self.split else "")


@dataclass(frozen=True)
class PromptSet:
    """`name` is what the user called the set (a label); `source` is where it comes from: the registry name, or
    the resolved path of the file. The set's identity is its source and its content, so two files named p.txt in
    two folders are two sets, and the same file asked for as `p.txt` and `./p.txt` is one."""

    name: str
    prompts: tuple[Prompt, ...]
    source: str = ""

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(p.text for p in self.prompts).encode()).hexdigest()

    @property
    def identity(self) -> str:
        return prompt_set_id(self.source or self.name, self.fingerprint)


def prompt_set_id(source: str, fingerprint: str) -> str:
    """A prompt set's identity in the results store: where it comes from and what it holds."""
    return digest({"source": source, "prompts": fingerprint}, 16)


def spec_from_table(name: str, table: Mapping[str, Any]) -> PromptSetSpec:
    check_table_keys("prompt set", name, table,
                     {"summary", "file", "hf_dataset", "split", "column", "category_column", "hf_files", "size"})
    check_table_values("prompts", name, table, rules_from_dataclass(PromptSetSpec, {
        "size": INTEGER.refine("an integer >= 1", lambda value: value >= 1),
        "file": STRING.refine("a non-empty string", bool),
        "hf_dataset": STRING.refine("a non-empty string", bool),
    }))
    if not table.get("file") and not table.get("hf_dataset"):
        raise BadInputError(f"prompt set {name!r}: needs `file` or `hf_dataset`")
    values = dict(table)
    values["hf_files"] = tuple(values.get("hf_files", ()))
    return PromptSetSpec(name=name, **values)


PROMPT_SETS: Registry[PromptSetSpec] = Registry("prompts", from_table=spec_from_table, noun="prompt set")
with resources.as_file(resources.files("rpo_bench.evaluation") / "prompt_sets.toml") as _path:
    for _name, _table in read_toml(_path).items():
        PROMPT_SETS.register(_name, spec_from_table(_name, _table), summary=_table.get("summary", ""))


def read_prompt_file(path: Path) -> list[Prompt]:
    """`.txt` (one prompt a line) or `.jsonl` (`prompt`, optional `category`); errors name file and line."""
    if path.suffix not in FILE_SUFFIXES:
        raise BadInputError(f"prompt file {path} has suffix {path.suffix!r}; accepted: {', '.join(FILE_SUFFIXES)}")

    text = read_text(path, "prompt file")  # UTF-8, a regular file (a FIFO would hang), one line on failure
    prompts: list[Prompt] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if path.suffix == ".txt":
            prompts.append(Prompt(len(prompts), line.strip()))
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{path}:{line_number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
            raise BadInputError(f"{path}:{line_number}: expected an object with a non-empty string `prompt`")
        prompts.append(Prompt(len(prompts), record["prompt"].strip(), str(record.get("category") or "")))
    if not prompts:
        raise BadInputError(f"prompt file {path} holds no prompts")
    return prompts


def _write_jsonl_atomic(path: Path, prompts: list[Prompt]) -> None:
    writable_dir(path.parent, f"the downloaded prompt set {path.stem}")
    atomic_write(path, "".join(json.dumps({"prompt": prompt.text, "category": prompt.category}) + "\n"
                               for prompt in prompts))


def _fetch_hub_prompts(spec: PromptSetSpec) -> list[Prompt]:
    if spec.hf_files:  # HPDv2 keeps its benchmark prompts as JSON lists, one file per category
        from huggingface_hub import hf_hub_download  # noqa: PLC0415 - huggingface_hub loads in ~1 s: on first use

        prompts: list[Prompt] = []
        for file_name in spec.hf_files:
            local = hf_hub_download(spec.hf_dataset, file_name, repo_type="dataset")
            category = Path(file_name).stem
            for text in json.loads(Path(local).read_text(encoding="utf-8")):
                prompts.append(Prompt(len(prompts), str(text).strip(), category))
        return prompts
    import datasets  # noqa: PLC0415 - datasets loads in seconds: on first use

    rows = datasets.load_dataset(spec.hf_dataset, split=spec.split)
    if spec.column not in rows.column_names:
        raise BadInputError(f"prompt set {spec.name!r}: {spec.hf_dataset} has no column {spec.column!r} "
                            f"(columns: {', '.join(rows.column_names)})")
    categories = rows[spec.category_column] if spec.category_column else [""] * len(rows)
    pairs = zip(rows[spec.column], categories, strict=True)
    return [Prompt(i, str(text).strip(), str(category or "")) for i, (text, category) in enumerate(pairs)]


def cached_prompts_path(name: str) -> Path:
    """Where a hub prompt set is kept: the set's name becomes a file name, so it must stay in that folder."""
    folder = home_dir() / "prompts"
    safe_child(folder, name, what="prompt set name")  # the error then shows the name as the user wrote it
    return safe_child(folder, f"{name}.jsonl", what="prompt set name")


def prompts_fetched(spec: PromptSetSpec) -> bool:
    """Whether a Hub prompt set's JSONL, what prompt loading reads, is on this machine."""
    return cached_prompts_path(spec.name).is_file()


def absent_prompt_set(name: str) -> AbsentEntry | None:
    """A registered set from a Hub dataset without its JSONL, as a preflight row; a file (or a typo, which
    load_prompt_set names) is not the Hub's business."""
    if name not in PROMPT_SETS:
        return None
    spec = PROMPT_SETS.get(name)
    if not spec.hf_dataset or prompts_fetched(spec):
        return None
    return entry_from_files(name, "prompts", (), extra=(f"hf:{spec.hf_dataset}",))


def load_spec(spec: PromptSetSpec) -> PromptSet:
    if spec.file:
        path = Path(spec.file).expanduser()
        if not path.is_absolute():
            path = PROJECT_PROMPTS_DIR / path
        return PromptSet(spec.name, tuple(read_prompt_file(path)), spec.name)
    cached = cached_prompts_path(spec.name)
    if not cached.is_file():
        if (reason := hub_unavailable()) is not None:  # not the datasets library's retries
            raise MissingWeightsError(f"prompt set {spec.name!r} ({spec.source}): {cached} is not on this machine "
                                      f"and {reason}; fetch it with `rpo-bench download {spec.name}`")
        fetched = _fetch_hub_prompts(spec)
        if spec.size and len(fetched) != spec.size:  # the source changed since it was registered: say so
            log.warning("prompt set %s: fetched %d prompts from %s, expected %d", spec.name, len(fetched),
                        spec.source, spec.size)
        _write_jsonl_atomic(cached, fetched)
    return PromptSet(spec.name, tuple(read_prompt_file(cached)), spec.name)


def load_prompt_set(name_or_path: str) -> PromptSet:
    """A registry name or a path to a `.txt` / `.jsonl` file."""
    if not name_or_path.strip():
        raise BadInputError("--prompts is empty; accepted: a prompt-set name (rpo-bench prompts lists them) or a "
                            f"{' or '.join(FILE_SUFFIXES)} file")
    if name_or_path in PROMPT_SETS:
        return load_spec(PROMPT_SETS.get(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.suffix in FILE_SUFFIXES or path.exists():
        return PromptSet(str(path), tuple(read_prompt_file(path)), str(path.resolve()))
    PROMPT_SETS.get(name_or_path)  # raises the "did you mean" error
    raise AssertionError("unreachable")
