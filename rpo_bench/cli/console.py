"""What every command shares: the console that shows user text as typed (and its stderr twin for the error
lines), `printable`, and the key/value table. The one module of the CLI that every command module imports; it
imports none of them, nor the app."""

from __future__ import annotations

import re

from rich.console import Console
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


def kv_table(title: str, values: dict) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in values.items():
        table.add_row(str(key), str(value))
    return table
