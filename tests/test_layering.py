"""The house's layers, enforced: an import may only go down, and packages of one layer never import each other in
a circle; no module imports another at load time that imports it back.

    cli -> workflows -> training, evaluation, reporting, style -> models, metrics, micro -> hub -> core

Every `import` and `from ... import` counts, at module level or inside a function (a lazy import is still a
dependency). Names a registry resolves at run time from a "module:attr" string are not imports: that is how a
registry keeps optional dependencies optional (and how the metrics registry finds the style metrics, which live
above it).
"""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rpo_bench"
LAYERS = {"core": 0, "hub": 1, "models": 2, "metrics": 2, "micro": 2, "evaluation": 3, "style": 3, "training": 3,
          "reporting": 3, "workflows": 4, "cli": 5}
ENTRY_POINTS = {"rpo_bench", "rpo_bench.__main__"}  # the package's own lazy API and `python -m rpo_bench`


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported rpo_bench module
    line: int
    in_function: bool


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path, modules: set[str]) -> list[Import]:
    name = _module_name(path, root)
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def resolve(dotted: str) -> str | None:
        parts = dotted.split(".")
        return next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in modules), None)

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = name.split(".")[: len(name.split(".")) - child.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" for a in child.names]
            for target in targets:
                resolved = resolve(target)
                if resolved and resolved != name and resolved.startswith("rpo_bench"):
                    found.append(Import(name, resolved, child.lineno, nested))
            visit(child, nested)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def package_imports(root: Path = PACKAGE) -> list[Import]:
    files = sorted(root.rglob("*.py"))
    modules = {_module_name(p, root) for p in files}
    return [imp for path in files for imp in _imports(path, root, modules)]


def _layer_package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layering_problems(root: Path = PACKAGE) -> list[str]:
    """Upward imports, circles between packages of one layer, and load-time import cycles, one line each."""
    imports = package_imports(root)
    problems = []
    same_layer: dict[str, set[str]] = {}
    for imp in imports:
        if imp.source in ENTRY_POINTS:
            continue
        low, high = _layer_package(imp.source), _layer_package(imp.target)
        if low not in LAYERS or high not in LAYERS:
            problems.append(f"{imp.source}:{imp.line}: {low or high!r} is in no layer (add it to LAYERS)")
        elif LAYERS[high] > LAYERS[low]:
            where = "inside a function" if imp.in_function else "at module level"
            problems.append(f"{imp.source}:{imp.line} imports {imp.target} {where}: {low} (layer {LAYERS[low]}) may "
                            f"not depend on {high} (layer {LAYERS[high]})")
        elif low != high:
            same_layer.setdefault(low, set()).add(high)
    problems += [f"packages of one layer import each other in a circle: {' -> '.join(c)}"
                 for c in _cycles(same_layer)]
    load_time: dict[str, set[str]] = {}
    for imp in imports:
        if not imp.in_function:
            load_time.setdefault(imp.source, set()).add(imp.target)
    problems += [f"modules import each other at load time: {' -> '.join(c)}" for c in _cycles(load_time)]
    return list(dict.fromkeys(problems))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One representative path per strongly connected circle (depth-first search, in sorted order)."""
    found, done = [], set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycle = path[path.index(nxt):] + [nxt]
                key = frozenset(cycle)
                if key not in done:
                    done.add(key)
                    found.append(cycle)
            elif nxt not in visited:
                visited.add(nxt)
                walk(nxt, [*path, nxt])

    visited: set[str] = set()
    for start in sorted(graph):
        if start not in visited:
            visited.add(start)
            walk(start, [start])
    return found


def test_every_import_goes_down_the_layers():
    assert layering_problems() == []


def test_a_planted_upward_import_fails_the_check(tmp_path):
    copy = tmp_path / "rpo_bench"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("assets", "__pycache__"))
    (copy / "core" / "planted.py").write_text("def run():\n    from rpo_bench.workflows import demo\n\n"
                                              "    return demo\n", encoding="utf-8")
    problems = layering_problems(copy)
    assert problems == ["rpo_bench.core.planted:2 imports rpo_bench.workflows.demo inside a function: core (layer 0) "
                        "may not depend on workflows (layer 4)"]


def test_a_planted_cycle_between_two_packages_of_one_layer_fails_the_check(tmp_path):
    copy = tmp_path / "rpo_bench"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("assets", "__pycache__"))
    (copy / "evaluation" / "planted.py").write_text("from rpo_bench.reporting import report  # noqa\n",
                                                    encoding="utf-8")
    assert any(p.startswith("packages of one layer import each other in a circle") and "evaluation" in p
               for p in layering_problems(copy))
