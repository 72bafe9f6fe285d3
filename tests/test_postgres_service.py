"""The real service on PostgreSQL (issue 13, ``[store] url``): real Mosquitto, a real
PostgreSQL database of the test's own (tests/harness/postgres.py), real HTTP; a restart
opens the same database."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from monitor.store import SCHEMA_VERSION
from tests.harness.broker import Mosquitto, Publish
from tests.harness.postgres import PASSWORD, StoreAt
from tests.harness.service import Service, event, events_topic, eventually, start_service

pytestmark = pytest.mark.integration


async def test_a_call_is_stored_paged_acknowledged_and_survives_a_restart(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish, postgres_url: str
) -> None:
    """A call press on a service whose store is PostgreSQL: the event is stored, the page
    goes out and is recorded, the ack link acknowledges once; restarted on the same
    database, the service has the open incident back, refuses the used link, and a
    resolve lands in the same tables `boothwatch report` reads."""
    at = StoreAt("postgresql", postgres_url, PASSWORD)

    def service() -> AbstractAsyncContextManager[Service]:
        return start_service(tmp_path, mosquitto, mqtt_publish, store_url=postgres_url,
                             env={"BOOTHWATCH_DB_PASSWORD": PASSWORD}, step2="1h",
                             repeat="1h", ack_timeout="1h")

    async with service() as svc:
        assert svc.runtime.store.where == postgres_url
        svc.publish(events_topic("b1"), event("button", press="call", id="press-1"))
        page = (await svc.hook.wait(1))[0]
        incident = page["incident"]
        async with svc.http.post(page["ack_url"]) as resp:
            assert resp.status == 200
        await svc.runtime.store.flush()
        assert at.query("SELECT booth, event_id FROM events") == [("b1", "press-1")]
        assert at.query("SELECT id, state FROM incidents") == [(incident, "acknowledged")]
        assert at.query("SELECT responder, status FROM pages WHERE incident = ?",
                        (incident,)) == [("ana", "sent")]
        assert at.query("SELECT count(*) FROM used_ack_links") == [(1,)]
        assert ("ack",) in at.query("SELECT kind FROM timeline WHERE incident = ?",
                                    (incident,))
    assert at.query("SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)]

    async with service() as svc:
        assert incident in svc.runtime.core.incidents  # restored from the database
        (restored,) = await svc.incidents("open")
        assert (restored["id"], restored["state"]) == (incident, "acknowledged")
        link = page["ack_url"].split("/ack/", 1)[1]  # the new service listens elsewhere
        async with svc.http.post(f"{svc.base}/ack/{link}") as resp:
            assert resp.status == 403 and "already used" in await resp.text()
        # the broker's redelivery of the press (same id) is no second event
        svc.publish(events_topic("b1"), event("button", press="call", id="press-1"))
        status, body = await svc.post(f"/api/incidents/{incident}/resolve",
                                      {"responder": "ana", "outcome": "ok"})
        assert status == 200, body
        await eventually(lambda: at.query("SELECT state, outcome FROM incidents") == [
            ("resolved", "ok")])
        assert at.query("SELECT count(*) FROM events WHERE event_id = 'press-1'") == [(1,)]
        assert len(svc.hook.pages) == 0  # nothing paged again after the restart
