"""The documentation cannot drift silently: the site builds in strict mode, every metric
the code registers is in the metrics reference, and the OpenAPI document has every HTTP
route the app registers (tests/test_openapi.py holds the running service to it)."""

from __future__ import annotations

import ast
import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema_rs
from aiohttp import web

from monitor.core.events import MAX_DOSES, NOTE_MAX, OUTCOMES, STEPS
from monitor.core.incident import CLEARED_OUTCOME, Trigger
from monitor.core.settings import PRIORITIES, RISKS, ROUTES
from monitor.http import routes
from monitor.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
METRICS_PAGE = ROOT / "docs" / "reference" / "metrics.md"
DOCUMENT: dict[str, Any] = json.loads((ROOT / "monitor" / "openapi.json").read_text())
PRODUCT = ("monitor", "devices", "alerts")
METHODS = ("get", "post", "put", "patch", "delete")


def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    """`mkdocs build --strict`: any warning (a broken link or anchor, a page left out of
    the nav, a missing snippet) fails the build, and so this test."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    # the OpenAPI document is rendered into the HTTP reference, every operation of it
    page = (tmp_path / "reference" / "http" / "index.html").read_text()
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    for path, item in DOCUMENT["paths"].items():
        for method in item:
            assert f"{method.upper()} {path}" in text, f"{method} {path} not in the HTTP reference"
    # the shipped example config is included as it is
    config = (tmp_path / "reference" / "config" / "index.html").read_text()
    assert "boothwatch-lisbon-1" in config


def _registered_metrics() -> set[str]:
    """Every metric name as Prometheus shows it: the registry's families (counters end
    in _total), and every name the product code passes as a string (scrape-time gauges)."""
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                        and re.fullmatch(r"boothwatch_[a-z_]+", node.value)):
                    names.add(node.value)
    return names


def _documented(name: str, page: str) -> bool:
    """`name` (a counter also as name_total) as a whole word of the page."""
    return re.search(rf"(?<![\w]){re.escape(name)}(_total)?(?![\w])", page) is not None


def test_every_metric_is_in_the_reference() -> None:
    page = METRICS_PAGE.read_text()
    registered = _registered_metrics()
    assert len(registered) > 40  # the scan finds them at all
    missing = sorted(name for name in registered if not _documented(name, page))
    assert not missing, f"not in {METRICS_PAGE.relative_to(ROOT)}: {missing}"


def test_the_reference_names_no_metric_the_code_lacks() -> None:
    registered = {name.removesuffix("_total") for name in _registered_metrics()}
    named = {name.removesuffix("_total")
             for name in re.findall(r"boothwatch_[a-z_]+", METRICS_PAGE.read_text())}
    assert named - registered == set()


def _app_routes() -> set[tuple[str, str]]:
    """(method, path) of every route the HTTP app registers (HEAD comes with each GET)."""
    app = web.Application()
    app.add_routes(routes())
    return {(route.method.lower(), route.resource.canonical)
            for route in app.router.routes()
            if route.method != "HEAD" and route.resource is not None}


def test_every_route_is_in_the_openapi_document_and_no_more() -> None:
    documented = {(method, path) for path, item in DOCUMENT["paths"].items()
                  for method in item if method in METHODS}
    routes = _app_routes()
    assert len(routes) >= 18
    assert routes - documented == set(), "routes missing from monitor/openapi.json"
    assert documented - routes == set(), "documented operations the app does not have"


def test_every_operation_says_what_it_answers() -> None:
    """Each operation has a summary and its responses; each /api/ one but the document itself
    takes the token or a station session, and what needs either says it answers 401."""
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            assert operation.get("summary") and operation.get("responses"), (method, path)
            security = operation.get("security")
            api = path.startswith("/api/") and path != "/api/openapi.json"
            if api:
                assert security == [{"bearer": []}, {"station": []}], (method, path)
            assert security is None or "401" in operation["responses"], (method, path)


def test_the_documents_vocabularies_are_the_cores() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    assert schemas["Outcome"]["enum"] == list(OUTCOMES)
    assert schemas["Note"]["maxLength"] == NOTE_MAX
    assert schemas["Step"]["enum"] == list(STEPS)
    assert schemas["StepRequest"]["properties"]["count"]["maximum"] == MAX_DOSES
    assert schemas["Trigger"]["enum"] == [t.value for t in Trigger]
    assert schemas["Priority"]["enum"] == list(PRIORITIES)
    assert schemas["Risk"]["enum"] == list(RISKS)
    assert schemas["Route"]["enum"] == list(ROUTES)
    incident_outcomes = schemas["Incident"]["properties"]["outcome"]["enum"]
    assert incident_outcomes == [*OUTCOMES, *CLEARED_OUTCOME.values(), None]


def _examples(node: Any, where: str = "#") -> list[tuple[str, dict[str, Any], Any]]:
    """(where, schema, example) for every schema in the document that gives an example."""
    found = []
    if isinstance(node, dict):
        if "example" in node and ("type" in node or "properties" in node):
            found.append((where, node, node["example"]))
        for key, value in node.items():
            found += _examples(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _examples(value, f"{where}/{index}")
    return found


def test_the_documents_examples_match_its_schemas() -> None:
    """The examples the reference shows are valid by the document's own schemas."""
    examples = _examples(DOCUMENT)
    assert len(examples) > 10
    for where, schema, example in examples:
        # the document is the root, so its #/components/... references resolve
        validator = jsonschema_rs.validator_for({**DOCUMENT, **schema})
        errors = [e.message for e in validator.iter_errors(example)]
        assert not errors, (where, errors)
