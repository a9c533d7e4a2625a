"""One generic registry for everything a user names on the command line.

Models, metrics, prompt sets and protocols are all `Registry` instances. Entries are either objects or lazy
"module:attr" strings (so optional dependencies stay optional and `rpo-bench --help` stays fast). Users add
entries without touching the package, through the `[<kind>.<name>]` tables of `$RPO_BENCH_HOME/registry.toml`
or through the Python entry-point group `rpo_bench.<kind>`.
"""

from __future__ import annotations

import difflib
import importlib
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any, Generic, TypeVar

from rpo_bench.core.config import user_registry_file
from rpo_bench.core.errors import BadInputError, UnknownNameError
from rpo_bench.core.user_files import read_toml as read

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    name: str
    target: Any  # the object, or a "module:attr" string resolved on first use
    summary: str = ""
    aliases: tuple[str, ...] = ()
    source: str = "built-in"
    _resolved: Any = field(default=None, repr=False)

    def resolve(self) -> T:
        if self._resolved is None:
            target = self.target
            if isinstance(target, str) and ":" in target and not target.startswith(("/", ".")):
                target = load_target(target)
            self._resolved = target
        return self._resolved


def load_target(spec: str) -> Any:
    """Import "package.module:attr"; the error names the spec, since it usually comes from a user file."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise BadInputError(f"cannot load {spec!r}: {exc}") from exc


def read_toml(path: Path, what: str = "TOML file") -> dict[str, Any]:
    """Through the one reader of user files (rpo_bench.core.user_files): UTF-8, regular files, one-line errors."""
    return read(path, what)


def check_table_keys(kind: str, name: str, table: Mapping[str, Any], allowed: set[str], *,
                     label: str | None = None) -> None:
    """User tables with a misspelt key must fail loudly: a silently dropped `revision` evaluates other weights.

    `label` names the table in the message in place of "KIND 'NAME'" (a file's own table: "leaderboard.toml [demo]")."""
    unknown = sorted(map(str, set(table) - allowed))
    if unknown:
        raise BadInputError(f"{label or f'{kind} {name!r}'}: unknown key(s) {', '.join(unknown)}; "
                            f"accepted: {', '.join(sorted(allowed))}")


@dataclass(frozen=True)
class ValueRule:
    """What one key of a registry table accepts: a test and the words that tell the user."""

    accepted: str
    check: Callable[[Any], bool]

    def refine(self, accepted: str, extra: Callable[[Any], bool]) -> ValueRule:
        """This rule plus a range: `extra` only runs on values of the right type."""
        return ValueRule(accepted, lambda value: self.check(value) and extra(value))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


STRING = ValueRule("a string", lambda value: isinstance(value, str))
INTEGER = ValueRule("an integer", _is_int)
NUMBER = ValueRule("a number", _is_number)
BOOLEAN = ValueRule("true or false", lambda value: isinstance(value, bool))
STRING_LIST = ValueRule("a list of strings", lambda value: isinstance(value, list)
                        and all(isinstance(item, str) for item in value))
_TYPE_RULES: dict[Any, ValueRule] = {str: STRING, int: INTEGER, float: NUMBER, bool: BOOLEAN}


def rule_for_type(annotation: Any) -> ValueRule | None:
    """The rule for a dataclass field's type as TOML can give it; None for types TOML values cannot check."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):  # `X | None`: TOML has no null, so the value must be an X
        inner = [arg for arg in args if arg is not type(None)]
        return rule_for_type(inner[0]) if len(inner) == 1 else None
    if origin is tuple and args in ((str, Ellipsis),):
        return STRING_LIST
    return _TYPE_RULES.get(annotation)


def rules_from_dataclass(cls: type, ranges: Mapping[str, ValueRule] | None = None) -> dict[str, ValueRule]:
    """One rule per field, from its type, with `ranges` replacing the rule of fields that have a range."""
    hints = typing.get_type_hints(cls)
    rules = {f.name: rule for f in fields(cls) if (rule := rule_for_type(hints[f.name])) is not None}
    rules.update(ranges or {})
    return rules


def _shown(value: Any) -> str:
    text = f"a table {value!r}" if isinstance(value, Mapping) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_table_values(kind: str, name: str, table: Mapping[str, Any], rules: Mapping[str, ValueRule], *,
                       label: str | None = None) -> None:
    """Every value of a registry table against its rule; the error names the table, key, value and what fits.

    `kind` is the TOML table prefix (models, prompts, protocols, metrics); the registry adds the file name. `label`
    replaces "[KIND.NAME]" for tables that are not registry entries ("leaderboard.toml [demo]")."""
    for key, value in table.items():
        rule = rules.get(key)
        if rule is not None and not rule.check(value):
            raise BadInputError(f"{label or f'[{kind}.{name}]'} {key} = {_shown(value)}: accepted: {rule.accepted}")


_ALL: list[Registry] = []


# Every registry a user can name something in, as lazy "module:attr" targets: the one place that knows them all,
# for messages that search every kind (`download NAME`, did-you-mean across kinds). A string, not an import, so
# this bottom layer never loads the packages above it until a name is looked up.
REGISTRIES = {"models": "rpo_bench.models.catalog:MODELS", "metrics": "rpo_bench.metrics:METRICS",
              "prompts": "rpo_bench.evaluation.prompts:PROMPT_SETS", "styles": "rpo_bench.style.registry:STYLES"}


def registry_of(kind: str) -> Registry:
    module, _, attr = REGISTRIES[kind].partition(":")
    return getattr(importlib.import_module(module), attr)


def kinds_of(name: str) -> list[str]:
    """Every registry that holds `name` (a metric with its argument counts as the metric)."""
    return [kind for kind in REGISTRIES
            if (name.partition(":")[0] if kind == "metrics" else name) in registry_of(kind)]


def reset_all_user_entries() -> None:
    """Forget every registry's user entries (the home moved, or registry.toml changed): they are read again."""
    for registry in _ALL:
        registry.reset_plugins()


class Registry(Generic[T]):
    """Named entries of one kind, with aliases, lazy targets, user TOML entries and entry points.

    `from_table` turns one user TOML table into an entry target; registries that accept no user tables
    leave it None.
    """

    def __init__(self, kind: str, from_table: Callable[[str, Mapping[str, Any]], Any] | None = None,
                 noun: str | None = None):
        _ALL.append(self)
        self.kind = kind
        self.noun = noun or (kind[:-1] if kind.endswith("s") else kind)  # what one entry is called in messages
        self.from_table = from_table
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}
        self._shadowed: dict[str, Entry[T]] = {}  # built-ins a user entry of the same name replaced
        self._plugins_loaded = False

    # -- adding -----------------------------------------------------------------------------------------
    def register(
        self,
        name: str,
        target: Any,
        *,
        summary: str = "",
        aliases: tuple[str, ...] = (),
        source: str = "built-in",
        replace: bool = False,
    ) -> None:
        if not replace and (name in self._entries or name in self._aliases):
            raise ValueError(f"{self.kind} {name!r} is already registered")
        replaced = self._entries.get(name)
        if replaced is not None and replaced.source == "built-in" and source != "built-in":
            self._shadowed[name] = replaced  # a user entry overrides it until the user entries are re-read
        self._entries[name] = Entry(name, target, summary, tuple(aliases), source)
        for alias in aliases:
            self._aliases[alias] = name

    def _load_plugins(self) -> None:
        """User entries override built-ins of the same name: that is how a user points `sd15-base` at a
        local copy."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        group = f"rpo_bench.{self.kind}"
        for point in metadata.entry_points(group=group):
            self.register(point.name, point.value, source=f"entry point {point.dist.name if point.dist else ''}",
                          replace=True)
        path = user_registry_file()
        if self.from_table is not None and path.exists():  # a folder or a FIFO by that name is refused, not skipped
            tables = read_toml(path, "registry file").get(self.kind, {})
            if not isinstance(tables, Mapping):
                raise BadInputError(f"{path}: {self.kind} = {_shown(tables)}: accepted: tables [{self.kind}.NAME]")
            for name, table in tables.items():
                if not isinstance(table, Mapping):
                    raise BadInputError(f"{path}: [{self.kind}] {name} = {_shown(table)}: accepted: a table "
                                        f"[{self.kind}.{name}] of settings")
                try:
                    target = self.from_table(name, table)
                except BadInputError as exc:  # the same checks serve the built-in catalogs; name the user's file
                    raise BadInputError(f"{path}: {exc}") from exc
                self.register(name, target, summary=str(table.get("summary", "")), source=f"user ({path.name})",
                              replace=True)

    def reset_plugins(self) -> None:
        """Forget user entries so they are read again (the user file changed, or a test moved the home)."""
        self._entries = {k: e for k, e in self._entries.items() if e.source == "built-in"} | self._shadowed
        self._shadowed = {}
        self._aliases = {a: n for a, n in self._aliases.items() if n in self._entries}
        self._plugins_loaded = False

    # -- reading ----------------------------------------------------------------------------------------
    def canonical(self, name: str) -> str:
        self._load_plugins()
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise UnknownNameError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        candidates = sorted(set(self._entries) | set(self._aliases))
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(candidates)}"
        return f"unknown {self.noun} {name!r}; {hint}"

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._entries or name in self._aliases

    def entry(self, name: str) -> Entry[T]:
        return self._entries[self.canonical(name)]

    def get(self, name: str) -> T:
        return self.entry(name).resolve()

    def names(self) -> list[str]:
        self._load_plugins()
        return list(self._entries)

    def __iter__(self) -> Iterator[Entry[T]]:
        self._load_plugins()
        return iter(list(self._entries.values()))
