"""The shape of alerts/: delivery at the bottom, channels over it, the factory on top;
no import cycle, and nothing of monitor/ but its pure core."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
FIRST_PARTY = ("alerts", "monitor", "devices")


def runtime_imports(source: str) -> set[str]:
    """The first-party modules `source` imports when it runs (not under TYPE_CHECKING)."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(alias.name for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            found.add(node.module or "")

    Visitor().visit(ast.parse(source))
    return {name for name in found if name.split(".")[0] in FIRST_PARTY}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


GRAPH = {module_name(p): runtime_imports(p.read_text())
         for p in sorted((ROOT / "alerts").rglob("*.py"))}


def test_the_modules_are_found() -> None:
    """The walk sees the package, so the checks below cannot pass on an empty graph."""
    assert {"alerts.delivery", "alerts.http", "alerts.factory", "alerts.channels.webhook",
            "alerts.channels.pushover", "alerts.receipts"} <= set(GRAPH)


def test_delivery_imports_no_sibling() -> None:
    """The delivery module is the bottom layer every channel builds on."""
    assert {m for m in GRAPH["alerts.delivery"] if m.startswith("alerts")} == set()


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_only_the_pure_core_of_monitor(module: str) -> None:
    """alerts/ reads the config types and durations, never the runtime, store or config loader."""
    assert {m for m in GRAPH[module]
            if m.startswith("monitor") and not m.startswith("monitor.core")} == set()


def test_no_import_cycle() -> None:
    """Each module can be imported on its own: no cycle among the alerts modules."""
    graph = {m: {d for d in deps if d in GRAPH} for m, deps in GRAPH.items()}
    graphlib.TopologicalSorter(graph).prepare()


def test_the_checks_see_cycles_and_skip_type_checking_imports() -> None:
    """The walk ignores TYPE_CHECKING imports, and a cycle fails the sort."""
    source = ("from typing import TYPE_CHECKING\nimport alerts.b\n"
              "if TYPE_CHECKING:\n    from alerts.c import C\n")
    assert runtime_imports(source) == {"alerts.b"}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter({"a": {"b"}, "b": {"a"}}).prepare()
