"""An incident paged by an owner that died before it could commit it keeps its id when the
standby takes the site over (issue 13: stable incidents across a switch).

The pair of `tests/test_failover.py`, real processes on a real PostgreSQL and Mosquitto:
the store is stopped, so the owner pages a call from memory and commits nothing; it is
killed; the store comes back and the standby takes the site over from what the store has,
without the incident. The broker redelivers the call to the new owner, which raises the
incident again under the id of the first page, and a gateway's ack naming that id
acknowledges it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.harness.broker import Mosquitto, Publish
from tests.harness.postgres import PASSWORD, Postgres, StoreAt
from tests.harness.receivers import Webhook
from tests.harness.service import event, events_topic, eventually
from tests.harness.site import SITE
from tests.test_failover import pair, pair_site

pytestmark = pytest.mark.integration


async def test_a_call_paged_by_an_owner_killed_before_its_commit_keeps_its_id(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish, hook: Webhook,
    postgres: Postgres, postgres_url: str
) -> None:
    """Owner pages with the store away, dies; the standby pages the redelivered call under
    the same incident id, and an MQTT ack naming the first page's id acknowledges it."""
    site = pair_site(mosquitto, hook, postgres_url, step2="1h")
    at = StoreAt("postgresql", postgres_url, PASSWORD)
    async with pair(site, tmp_path) as (a, b):
        await asyncio.to_thread(postgres.stop)
        try:
            mqtt_publish(events_topic("b1"), event("button", press="call", id="press-1"))
            (first,) = await hook.wait(1, timeout=10)  # paged from memory, nothing committed
            assert a.proc is not None
            a.proc.kill()
            a.proc.wait(5)
        finally:
            await asyncio.to_thread(postgres.start)
        await b.ready(timeout=30)
        pages = await hook.wait(2, timeout=15)  # the new owner pages the redelivered call
        assert [p["incident"] for p in pages] == [first["incident"]] * 2, pages
        mqtt_publish(f"boothwatch/{SITE}/ack",
                     json.dumps({"incident": first["incident"], "responder": "ana"}).encode())
        await eventually(lambda: at.query(
            "SELECT state, acknowledged_by FROM incidents WHERE id = ?",
            (first["incident"],)) == [("acknowledged", "ana")], timeout=10)
        assert at.query("SELECT count(*) FROM incidents") == [(1,)]
