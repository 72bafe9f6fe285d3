"""The shape of the product packages: no import cycle anywhere in monitor/, devices/ and
alerts/; in alerts/, delivery at the bottom, channels over it, the factory on top, and
nothing of monitor/ but its pure core. (The core's own purity: tests/test_core.py.)"""

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
            module = node.module or ""
            found.add(module)
            # `from devices import adapters` imports the module devices.adapters
            found.update(f"{module}.{alias.name}" for alias in node.names
                         if f"{module}.{alias.name}" in MODULES)

    Visitor().visit(ast.parse(source))
    return {name for name in found if name.split(".")[0] in FIRST_PARTY}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = {module_name(p): p for package in FIRST_PARTY
           for p in sorted((ROOT / package).rglob("*.py"))}
MODULES = frozenset(SOURCES)
PRODUCT = {m: runtime_imports(p.read_text()) for m, p in SOURCES.items()}
GRAPH = {m: deps for m, deps in PRODUCT.items() if m.startswith("alerts")}


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
    """Each module can be imported on its own: no cycle among the product's modules,
    counting imports inside functions (a cycle hidden in a function is still one)."""
    assert {"monitor.runtime", "monitor.http", "devices.mqtt", "alerts.factory"} <= MODULES
    graph = {m: {d for d in deps if d in MODULES and d != m} for m, deps in PRODUCT.items()}
    graphlib.TopologicalSorter(graph).prepare()


def test_the_checks_see_cycles_and_skip_type_checking_imports() -> None:
    """The walk ignores TYPE_CHECKING imports, and a cycle fails the sort."""
    source = ("from typing import TYPE_CHECKING\nimport alerts.b\n"
              "if TYPE_CHECKING:\n    from alerts.c import C\n")
    assert runtime_imports(source) == {"alerts.b"}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter({"a": {"b"}, "b": {"a"}}).prepare()
