"""The HTTP API against its OpenAPI document: schemathesis drives the real `boothwatch run`.

One service (its own Mosquitto, SQLite file and API token) serves the whole module.
Schemathesis generates requests for every operation from the document and checks
each answer: no server error, a documented status code, content type and headers,
a body that matches the schema, and invalid input refused. A walk through one
incident's life then checks the answers that random input never reaches (200s on a
real incident, a spent ack link, an outcome recorded twice) the same way.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from paho.mqtt.enums import CallbackAPIVersion
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.schemas import BaseSchema

from tests.harness.broker import Mosquitto, free_port, require_mosquitto
from tests.harness.process import ServiceProcess
from tests.harness.service import event, events_topic
from tests.harness.site import SITE, service_site

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "api-token-for-the-openapi-test"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection]
WAIT = 15.0


@dataclass(frozen=True)
class Site:
    base: str
    page: dict[str, Any]  # the first page of the call raised at b1, read from MQTT
    log: Path


def _first_page(broker: Mosquitto, responder: str, publish_call: bytes) -> dict[str, Any]:
    """Press the call at b1 and return the page `responder` gets on the mqtt channel."""
    got: list[dict[str, Any]] = []
    done, subscribed = threading.Event(), threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        got.append(json.loads(msg.payload))
        done.set()

    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(f"boothwatch/{SITE}/pages/{responder}", qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert subscribed.wait(WAIT), "no SUBACK"
        client.publish(events_topic("b1"), publish_call, qos=1).wait_for_publish(WAIT)
        assert done.wait(WAIT), "no page on the mqtt channel"
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("openapi")
    with Mosquitto(tmp / "mosquitto", binary=require_mosquitto()) as broker:
        # nobody listens at the webhook: pages go over MQTT, where the test reads them
        config = service_site(mqtt_port=broker.port, http_port=free_port(),
                              webhook_url=f"http://127.0.0.1:{free_port()}/page",
                              store=tmp / "boothwatch.db", step2="1h", repeat="1h",
                              ack_timeout="1h")
        config.channels["bus"] = {"type": "mqtt"}
        for responder in config.responders:
            responder["channels"] = ["bus"]
        service = ServiceProcess.of(config, tmp, env={"BOOTHWATCH_API_TOKEN": TOKEN,
                                                      "BOOTHWATCH_BOARD_PASSWORD": "station"})
        service.start()
        try:
            asyncio.run(service.ready(WAIT))
            page = _first_page(broker, "ana", event("button", press="call", id="call-1"))
            yield Site(service.base, page, service.log)
        finally:
            assert asyncio.run(service.stop()) == 0, service.log.read_text()[-2000:]


@pytest.fixture(scope="module")
def api(site: Site) -> BaseSchema:
    """The document as the service serves it."""
    return schemathesis.openapi.from_url(f"{site.base}/api/openapi.json")


# Loaded from the package at collection, so every operation is a test of its own; the
# served copy is checked against it below. (schemathesis.pytest.from_fixture would load
# the served one, but it relies on a pytest internal that pytest 9.2 removed.) The board's
# stream never ends, so no generated request could read its answer: tests/test_board.py
# reads it.
schema = schemathesis.openapi.from_path(ROOT / "monitor" / "openapi.json").exclude(
    path="/board/stream")


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_to_the_document(case: schemathesis.Case[Any], site: Site) -> None:
    """Generated requests, valid and not, get answers the document describes."""
    case.call_and_validate(base_url=site.base, headers=AUTH, checks=CHECKS, timeout=10)


def test_the_served_document_is_the_packaged_one(site: Site) -> None:
    served = requests.get(f"{site.base}/api/openapi.json", timeout=5)
    assert served.status_code == 200
    assert served.headers["Content-Type"].startswith("application/json")
    assert served.content == (ROOT / "monitor" / "openapi.json").read_bytes()


def test_one_incident_keeps_to_the_document(site: Site, api: BaseSchema) -> None:
    """A real incident through every action: each answer matches the document."""
    incident = site.page["incident"]
    link = site.page["ack_url"].removeprefix(site.base)
    token = link.removeprefix("/ack/")

    def call(method: str, path: str, expect: int, **case: Any) -> Any:
        """The answer's JSON (None for HTML), once the checks passed."""
        response = api[path][method].Case(**case).call_and_validate(
            headers=AUTH, checks=CHECKS[:-1], timeout=10)
        assert response.status_code == expect, (method, path, response.text)
        return response.json() if "json" in response.headers["content-type"][0] else None

    ids = {"id": incident}
    call("GET", "/api/incidents", 200, query={"state": "open"})
    call("GET", "/ack/{token}", 200, path_parameters={"token": token})
    call("POST", "/ack/{token}", 200, path_parameters={"token": token})
    call("POST", "/ack/{token}", 403, path_parameters={"token": token})  # spent
    form = "application/x-www-form-urlencoded"
    call("POST", "/ack/{token}/steps", 200, path_parameters={"token": token},
         body={"step": "knocked", "seen": 0}, media_type=form)
    call("POST", "/ack/{token}/presence", 200, path_parameters={"token": token})
    call("POST", "/ack/{token}/steps", 200, path_parameters={"token": token},
         body={"step": "naloxone", "count": 2}, media_type=form)
    call("POST", "/ack/{token}/steps", 400, path_parameters={"token": token},
         body={"step": "oxygen", "count": 2}, media_type=form)
    steps = call("POST", "/api/incidents/{id}/steps", 200, path_parameters=ids,
                 body={"responder": "rui", "step": "note", "note": "breathing"})
    assert [s["step"] for s in steps["steps"]] == ["knocked", "naloxone", "note"]
    call("POST", "/api/incidents/{id}/steps", 400, path_parameters=ids,
         body={"responder": "rui", "step": "entered", "count": 1})
    call("POST", "/api/incidents/{id}/ack", 200, path_parameters=ids, body={"responder": "rui"})
    call("POST", "/api/incidents/{id}/presence", 200, path_parameters=ids,
         body={"responder": "rui"})
    call("POST", "/api/incidents/{id}/resolve", 200, path_parameters=ids,
         body={"responder": "rui"})
    call("POST", "/api/incidents/{id}/ack", 409, path_parameters=ids, body={"responder": "ana"})
    call("POST", "/api/incidents/{id}/steps", 409, path_parameters=ids,
         body={"responder": "ana", "step": "ems_arrived"})
    call("POST", "/ack/{token}/presence", 409, path_parameters={"token": token})
    call("GET", "/ack/{token}", 200, path_parameters={"token": token})  # the outcome form
    call("POST", "/ack/{token}/outcome", 200, path_parameters={"token": token},
         body={"outcome": "ok", "note": "talking"}, media_type="application/x-www-form-urlencoded")
    call("POST", "/api/incidents/{id}/outcome", 409, path_parameters=ids,
         body={"responder": "rui", "outcome": "false_alarm"})
    call("POST", "/api/booths/{id}/maintenance", 200, path_parameters={"id": "b2"},
         body={"until": "2h", "reason": "sensor replaced", "by": "rui"})
    call("POST", "/api/booths/{id}/maintenance/end", 200, path_parameters={"id": "b2"},
         body={"by": "rui"})
    b2 = {"id": "b2"}
    started = call("POST", "/api/booths/{id}/test", 200, path_parameters=b2,
                   body={"tester": "ana", "until": "5m"})
    assert (started["running"], started["tester"], started["fired"]) == (True, "ana", [])
    call("GET", "/api/booths/{id}/test", 200, path_parameters=b2)
    call("POST", "/api/booths/{id}/test", 409, path_parameters=b2, body={})  # running
    call("POST", "/api/booths/{id}/test/end", 200, path_parameters=b2)
    call("POST", "/api/booths/{id}/test/end", 409, path_parameters=b2)
    call("POST", "/api/responders/{id}/duty", 200, path_parameters={"id": "ana"},
         body={"on": False, "by": "rui"})
    call("GET", "/api/responders", 200)
    audit = call("GET", "/api/audit", 200, query={"limit": 10})
    assert {e["kind"] for e in audit} >= {"duty", "maintenance_started", "maintenance_ended"}
    resolved = call("GET", "/api/incidents", 200, query={"state": "all"})
    assert [(i["id"], i["state"], i["outcome"]) for i in resolved] == [
        (incident, "resolved", "ok")]
    call("GET", "/api/booths", 200)


def test_a_post_without_the_token_is_refused(site: Site, api: BaseSchema) -> None:
    """Bearer auth as the document says: 401 with WWW-Authenticate, nothing changed."""
    before = requests.get(f"{site.base}/api/audit", timeout=5).json()
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        response = api["/api/responders/{id}/duty"]["POST"].Case(
            path_parameters={"id": "rui"}, body={"on": False}, headers=headers).call(timeout=10)
        assert response.status_code == 401
        api["/api/responders/{id}/duty"]["POST"].validate_response(response)
    assert requests.get(f"{site.base}/api/audit", timeout=5).json() == before
