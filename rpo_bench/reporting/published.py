"""Published numbers ("reported"), kept apart from measured ones.

They come from rpo_bench/reporting/published.toml (METHOD.md's table, with its source). A report attaches them to the
section measured under the same prompt set, protocol and metric, as rows marked "reported" in a table of their
own: they were made with other scorer copies and other images, so they are never ranked or compared with ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from rpo_bench.core.user_files import tomllib


@dataclass(frozen=True)
class ReportedValue:
    model: str
    value: float
    source: str
    note: str


@dataclass(frozen=True)
class ReportedTable:
    name: str
    source: str
    prompt_set: str
    protocol: str
    note: str
    metrics: tuple[str, ...]
    rows: tuple[tuple[str, tuple[float, ...]], ...]


@lru_cache(maxsize=1)
def reported_tables() -> tuple[ReportedTable, ...]:
    text = resources.files("rpo_bench.reporting").joinpath("published.toml").read_text(encoding="utf-8")
    tables = []
    for name, table in tomllib.loads(text).items():
        metrics = tuple(table["metrics"])
        rows = tuple((str(row[0]), tuple(float(v) for v in row[1:])) for row in table["rows"])
        if any(len(values) != len(metrics) for _model, values in rows):
            raise ValueError(f"published.toml [{name}]: every row needs one value per metric")
        tables.append(ReportedTable(name, table["source"], table["prompt_set"], table["protocol"],
                                    table.get("note", ""), metrics, rows))
    return tuple(tables)


def reported_for(prompt_set: str, protocol: str, metric: str) -> list[ReportedValue]:
    """The published values measured on this prompt set under this protocol with this metric."""
    found = []
    for table in reported_tables():
        if (table.prompt_set, table.protocol) == (prompt_set, protocol) and metric in table.metrics:
            column = table.metrics.index(metric)
            found += [ReportedValue(model, values[column], table.source, table.note) for model, values in table.rows]
    return found


def reported_markdown() -> str:
    """Every published table, as markdown, each with its source and setting."""
    blocks = []
    for table in reported_tables():
        lines = [f"{table.source}: prompt set {table.prompt_set}, protocol {table.protocol} ({table.note}).", "",
                 "| model (reported) | " + " | ".join(table.metrics) + " |",
                 "|---|" + "---:|" * len(table.metrics)]
        lines += [f"| {model} | " + " | ".join(f"{v:g}" for v in values) + " |" for model, values in table.rows]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
