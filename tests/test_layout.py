"""The layout stays what docs/architecture.md describes: every module tested or said to be
covered, no import cycles between modules, few top-level modules beside the sub-packages."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

from tests.processes import ROOT

PIPELINE = ROOT / "pipeline"


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module and package of `pipeline`."""
    found = {}
    for path in PIPELINE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def module_level_imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The `pipeline` modules a file imports when it is imported (not inside functions)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                out.add(name if name in known else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_modules() -> None:
    known = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in known.items():
        graph[name] = module_level_imports(path, known) - {name}
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_module_has_a_test_or_a_coverage_row() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    rows = set(re.findall(r"^\| `([\w/]+\.py)` \| .+\|$", doc, re.M))
    tests = {p.stem.removeprefix("test_") for p in (ROOT / "tests").glob("test_*.py")}
    missing = [str(p.relative_to(PIPELINE)) for p in sorted(PIPELINE.rglob("*.py"))
               if p.name != "__init__.py" and p.stem not in tests and str(p.relative_to(PIPELINE)) not in rows]
    assert missing == [], "add tests/test_<module>.py or a row in docs/architecture.md for: " + ", ".join(missing)


def test_few_top_level_modules_beside_the_packages() -> None:
    top = [p.name for p in PIPELINE.glob("*.py") if p.name != "__init__.py"]
    assert len(top) <= 8, top


def test_every_worker_is_wiring_under_120_lines() -> None:
    """A role's work lives in pipeline/; its `workers/` entry point parses options and wires."""
    long = {p.name: n for p in sorted((ROOT / "workers").glob("*.py"))
            if (n := len(p.read_text().splitlines())) >= 120}
    assert long == {}
