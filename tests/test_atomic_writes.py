"""Every file rpo-bench writes goes through rpo_bench.core.atomic (temp file in the same folder, fsync, rename).

The scan reads the package's source and fails on any call that writes a file directly (write_text, write_bytes,
open for writing, torch.save, safetensors' save_file, PIL's and matplotlib's save, shutil copies, os.replace of a
hand-made temporary file, save_pretrained) unless the call writes to the temporary path of an `atomic_path` block,
or its line, or a comment line earlier in the same function, says `# atomic: <why>` (files inside a temporary
folder that is renamed as a whole, a lock file, an append-only log repaired on resume, ...). Writes into an
in-memory buffer (io.BytesIO) are not file writes.
"""

from __future__ import annotations

import ast
import os
import signal
from pathlib import Path

import pytest

from rpo_bench.core.atomic import atomic_path, atomic_write

PACKAGE = Path(__file__).resolve().parents[1] / "rpo_bench"
WRITING_METHODS = {"write_text", "write_bytes", "savefig", "save_pretrained", "save_lora_weights"}
WRITING_FUNCTIONS = {"save_file", "copyfile", "copy", "copy2", "copytree", "replace", "rename", "save"}
WRITE_MODES = ("w", "a", "x", "+")


def _atomic_targets(tree: ast.AST) -> set[str]:
    """Names bound by `with atomic_path(...) as NAME`: writing to them is the helper's job done right."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With):
            for item in node.items:
                call = item.context_expr
                if (isinstance(call, ast.Call) and getattr(call.func, "id", getattr(call.func, "attr", "")) ==
                        "atomic_path" and isinstance(item.optional_vars, ast.Name)):
                    names.add(item.optional_vars.id)
    return names


def _writes_to(call: ast.Call, names: set[str]) -> bool:
    """One of the call's arguments (or the object it is called on) is one of `names`."""
    candidates = list(call.args)
    if isinstance(call.func, ast.Attribute):
        candidates.append(call.func.value)
    # str(tmp), as safetensors' save_file wants
    candidates += [c.args[0] for c in list(candidates) if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "str"
                   and c.args]
    return any(isinstance(c, ast.Name) and c.id in names for c in candidates)


def _is_write(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if name in WRITING_METHODS:
        return True
    if name == "open" and not isinstance(func, ast.Attribute) or name == "fdopen":
        mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
        return isinstance(mode, ast.Constant) and isinstance(mode.value, str) and any(m in mode.value
                                                                                       for m in WRITE_MODES)
    if name in WRITING_FUNCTIONS and isinstance(func, ast.Attribute):
        owner = getattr(func.value, "id", "")
        if name == "save":  # torch.save, or PIL's image.save(path, ...) (not a method like state.save())
            return owner == "torch" or len(call.args) >= 1 and any(k.arg == "format" for k in call.keywords)
        return owner in {"os", "shutil", "safetensors", "torch"} or name == "save_file"
    return name == "save_file"


def _buffers(tree: ast.AST) -> set[str]:
    """Names assigned an io.BytesIO(): saving into them writes memory, not a file."""
    names = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "attr", getattr(node.value.func, "id", "")) == "BytesIO"):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _marked(node: ast.Call, lines: list[str], functions: list[ast.AST]) -> bool:
    """`# atomic:` on the call's lines, or on a line of its innermost function before it."""
    if any("# atomic:" in line for line in lines[node.lineno - 1:(node.end_lineno or node.lineno)]):
        return True
    enclosing = [f for f in functions if f.lineno <= node.lineno <= (f.end_lineno or f.lineno)]
    if not enclosing:
        return False
    start = max(f.lineno for f in enclosing)
    return any(line.strip().startswith("# atomic:") for line in lines[start - 1:node.lineno])


def unsafe_writes(root: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        if path == root / "core" / "atomic.py":
            continue
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        tree = ast.parse(source)
        safe_names = _atomic_targets(tree) | _buffers(tree)
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not _is_write(node) or _writes_to(node, safe_names):
                continue
            if _marked(node, lines, functions):
                continue
            found.append(f"{path.relative_to(root.parent)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return sorted(found)


def test_no_file_is_written_around_the_atomic_helper():
    assert unsafe_writes() == []


def test_the_scan_finds_a_planted_direct_write(tmp_path):
    package = tmp_path / "rpo_bench"
    package.mkdir()
    (package / "planted.py").write_text("from pathlib import Path\n\n\ndef save(path: Path) -> None:\n"
                                        "    path.write_text('x')\n", encoding="utf-8")
    assert [line.split(": ", 1)[1] for line in unsafe_writes(package)] == ["path.write_text('x')"]


def test_a_write_killed_midway_leaves_the_old_file(tmp_path):
    """SIGKILL while the new bytes are being written: the file holds the old bytes, whole."""
    target = atomic_write(tmp_path / "README.md", "old text\n")
    pid = os.fork()
    if pid == 0:  # the child dies with the temporary file half written
        with atomic_path(target) as tmp, open(tmp, "wb") as handle:
            handle.write(b"new te")
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL
    assert target.read_text(encoding="utf-8") == "old text\n"


def test_new_files_are_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "report.html", "<html></html>")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("blocker", ["folder", "file"])
def test_a_refused_write_is_one_line_and_leaves_the_old_file(tmp_path, blocker):
    from rpo_bench.core.errors import BadInputError

    target = atomic_write(tmp_path / "report.md", "old\n")
    if blocker == "folder":  # the folder cannot take the temporary file: a path below a regular file
        bad = tmp_path / "report.md" / "inner.md"
    else:
        bad = target
        os.chmod(tmp_path, 0o555)
    try:
        if blocker == "file" and os.geteuid() == 0:
            pytest.skip("root writes into a read-only folder")
        with pytest.raises(BadInputError, match="cannot write the report .*nothing was changed there"):
            atomic_write(bad, "new\n", what="report")
    finally:
        os.chmod(tmp_path, 0o755)
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]
