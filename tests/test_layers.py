"""kdexp's floors: the import-linter contracts in pyproject.toml hold, and no import cycle exists
between kdexp's modules (imports inside functions count), even where import-linter is not installed."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import REPO


def test_the_import_contracts_are_kept() -> None:
    pytest.importorskip("importlinter")
    lint = Path(sys.executable).with_name("lint-imports")
    command = [str(lint)] if lint.exists() else [shutil.which("lint-imports") or "lint-imports"]
    done = subprocess.run([*command, "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module → the kdexp modules it imports, anywhere in its file (inside functions too)."""
    files = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def owner(name: str) -> str:  # the module a dotted name lives in
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in files.items():
        package_name = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                graph[name] |= {owner(a.name) for a in node.names if a.name.startswith(package.name)}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package_name.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                if base.startswith(package.name):
                    graph[name] |= {owner(f"{base}.{a.name}") for a in node.names}
        graph[name].discard(name)
    return graph


def ignored_edges() -> set[tuple[str, str]]:
    """The acyclic contract's ignore lines (today's back arrows, cut step by step), as edges."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    lines = next(c for c in contracts if c["id"] == "acyclic").get("ignore_imports", [])
    return {tuple(part.strip() for part in line.split("->")) for line in lines}


def is_ignored(edge: tuple[str, str], ignored: set[tuple[str, str]]) -> bool:
    def matches(name: str, pattern: str) -> bool:  # import-linter's wildcards: ".**" any depth, ".*" one
        if pattern.endswith(".**"):
            return name.startswith(pattern[:-2])
        if pattern.endswith(".*"):
            return name.rpartition(".")[0] == pattern[:-2]
        return name == pattern

    return any(matches(edge[0], a) and matches(edge[1], b) for a, b in ignored)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while component[-1:] != [v]:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_kdexp_modules() -> None:
    ignored = ignored_edges()
    graph = {m: {n for n in imported if not is_ignored((m, n), ignored)} for m, imported in import_graph(REPO / "kdexp").items()}
    assert cycles(graph) == []


def test_the_cycle_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    package = tmp_path / "kdexp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def f():\n    from kdexp import high\n")
    (package / "high.py").write_text("from kdexp.low import f\n")
    assert cycles(import_graph(package)) == [["kdexp.high", "kdexp.low"]]
