"""What every command shares: the console that shows user text as typed (and its stderr twin for the error
lines), `printable`, the key/value table and the list of records (a table, or one block per record where
the terminal is too narrow for the table to read). The one module of the CLI that every command module imports; it
imports none of them, nor the app."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rich.cells import cell_len
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

# C0 and C1 control characters (ESC starts terminal sequences that clear the screen or retitle the window; CR
# and BS overwrite what was printed) and the bidi overrides that reorder a line on screen.
_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """`text` with every control character shown as a visible escape (\\x1b, \\n, \\u202e), as repr() would, so
    that prompts, paths and registry entries print as what they are instead of acting on the terminal."""
    def escape(match: re.Match) -> str:
        char = match.group()
        return _SHORT_ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")

    return _CONTROL_CHARACTERS.sub(escape, text)


class UserTextConsole(Console):
    """A rich Console for text that is largely the user's (prompts, paths, names from user registry files): every
    string, in a print, a table cell or a title, shows as typed. Rich markup is off, so "[bold]" in a prompt is
    text and "[/x]" cannot fail, and control characters become visible escapes (see `printable`)."""

    def render_str(self, text: str, **kwargs) -> Text:
        kwargs["markup"] = False
        return super().render_str(printable(text), **kwargs)


console = UserTextConsole(emoji=False, markup=False)
err_console = UserTextConsole(stderr=True, emoji=False, markup=False)


KEY_SHARE = 3  # a key column takes at most a third of the width: long keys wrap, the values keep the room


def kv_table(title: str, values: dict) -> Table:
    """Keys and values, two columns. Values fold rather than end in an ellipsis (a repository id, a path or a
    fingerprint cut short is no use), and a long key wraps within a third of the console's width."""
    table = Table(title=title, show_header=False)
    table.add_column(style="bold", max_width=max(12, console.width // KEY_SHARE), overflow="fold")
    table.add_column(overflow="fold")
    for key, value in values.items():
        table.add_row(str(key), str(value))
    return table


PROSE_MIN_WIDTH = 24  # below this a wrapped summary is a column of single words: the records print as blocks


def _table_width(columns: Sequence[str], rows: Sequence[Sequence[str]], prose: Sequence[str]) -> int:
    """The width of the records' table (rich's default box, one space of padding each side) with every column
    but the prose ones whole and each prose column wrapped to PROSE_MIN_WIDTH (or its own width if narrower)."""
    total = 1  # the left edge
    for i, column in enumerate(columns):
        natural = max([cell_len(column), *(cell_len(printable(str(row[i]))) for row in rows)])
        total += (min(natural, PROSE_MIN_WIDTH) if column in prose else natural) + 3  # padding and a rule
    return total


def print_records(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str]], *,
                  prose: Sequence[str] = ("summary",), numeric: Sequence[str] = (),
                  out: Console | None = None) -> None:
    """Registry entries and the like, one row each, named by the first column. As a table when the console is
    wide enough for every column but the prose ones (`prose`: summaries, descriptions, which wrap) to stay whole
    and the prose ones to be at least PROSE_MIN_WIDTH wide; otherwise, as at 80 columns, one block per record:
    its name, then `column  value` lines (empty values left out), which reads at any width. `numeric` columns are
    right-aligned in the table; `title` None: none (a caller's own line says what the records are)."""
    out = out or console
    if _table_width(columns, rows, prose) <= out.width:
        table = Table(title=title)
        for column in columns:
            # the other columns fit whole (measured above); prose wraps at words, and folds a word too long
            table.add_column(column, no_wrap=column not in prose, overflow="fold",
                             justify="right" if column in numeric else "left")
        for row in rows:
            table.add_row(*(str(cell) for cell in row))
        out.print(table)
        return
    if title:
        out.print(title, style="bold")
    for i, row in enumerate(rows):
        if title or i:  # a blank line between blocks, and after a title
            out.print("")
        out.print(str(row[0]), style="bold", overflow="fold")
        fields = Table.grid(padding=(0, 2))
        fields.add_column(no_wrap=True, style="dim")
        fields.add_column(overflow="fold")
        for column, cell in zip(columns[1:], row[1:], strict=True):
            if str(cell):
                fields.add_row(column, str(cell))
        out.print(Padding(fields, (0, 0, 0, 2), expand=False))
