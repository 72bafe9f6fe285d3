"""A call is handled before the other booths' messages read with it, against a real Mosquitto.

A power cut makes every sensor's availability say offline at once; a call pressed then used
to wait until the service had raised an incident for each of those messages read before it
(bench/burst.py --burst-kind offline: p99 0.23-0.31 s on a fast box). The MQTT link reads
ahead of its handling, and the ingest says which messages may be calls
(`Ingest.urgent`): those go first, each topic keeping its own order.
"""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as paho
import pytest

from tests.harness.broker import Mosquitto, Publish
from tests.harness.service import event, events_topic, eventually, start_service
from tests.harness.site import Site, booths, device

pytestmark = pytest.mark.integration

SENSORS = 300


def message(topic: str, payload: bytes | str) -> paho.MQTTMessage:
    msg = paho.MQTTMessage(mid=1, topic=topic.encode())
    msg.payload = payload.encode() if isinstance(payload, str) else payload
    return msg


def burst_site(site: Site) -> None:
    """A Zigbee2MQTT occupancy sensor in each of b1..b300, b301 with none, and a z2m call
    button in b302."""
    site.booths = booths(SENSORS + 2)
    site.devices = [
        *(device(f"s{i}", "zigbee2mqtt", f"z2m/s{i}", f"b{i}", "occupancy")
          for i in range(1, SENSORS + 1)),
        device("button", "zigbee2mqtt", "z2m/button", f"b{SENSORS + 2}", "call_button"),
    ]
    site.no_rate_limit()


async def test_what_may_be_a_call_is_urgent(tmp_path: Path, mosquitto: Mosquitto,
                                            mqtt_publish: Publish) -> None:
    """A booth event that may say "call" and anything on a call button's topics are urgent;
    other booth events, a sensor's messages and the pager gateways' topics are not."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, edit=burst_site) as svc:
        urgent = svc.runtime.ingest.urgent
        topics = svc.runtime.ingest.topics
        assert urgent(message(events_topic("b1"), event("button", press="call")))
        assert urgent(message(events_topic("b1"), b'{"kind":"button","press":"\\u0063all"}'))
        assert not urgent(message(events_topic("b1"), event("button", press="presence")))
        assert not urgent(message(events_topic("b1"), event("motion", still=True)))
        assert urgent(message("z2m/button", '{"action":"single"}'))
        assert urgent(message("z2m/button/availability", '{"state":"offline"}'))
        assert not urgent(message("z2m/s1", '{"occupancy":true}'))
        assert not urgent(message("z2m/s1/availability", '{"state":"offline"}'))
        assert not urgent(message(topics.ack, '{"incident":"call","responder":"ana"}'))


async def test_a_call_behind_a_burst_of_offline_sensors_is_raised_first(
        tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish) -> None:
    """300 sensors go offline at once, then b301 calls: the call's incident is raised
    before most of the 300 (it used to be raised last), and all 301 are raised, once."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, edit=burst_site) as svc:
        rt = svc.runtime
        rt.mqtt.pause_reading()  # the burst and the call wait for the service together
        for i in range(1, SENSORS + 1):
            mqtt_publish(f"z2m/s{i}/availability", '{"state":"offline"}')
        caller = f"b{SENSORS + 1}"
        mqtt_publish(events_topic(caller), event("button", press="call"))
        rt.mqtt.resume_reading()

        def raised() -> dict[str, float] | None:
            views = list(rt.core.open_incident_views())
            return {v.booth: v.raised_at for v in views} if len(views) > SENSORS else None

        incidents = await eventually(raised, timeout=30)
        assert len(incidents) == SENSORS + 1
        call_at = incidents.pop(caller)
        after = sum(1 for at in incidents.values() if at > call_at)
        assert after >= SENSORS // 2, f"the call was raised after {SENSORS - after} of the burst"
        triggers = {v.booth: v.triggers for v in rt.core.open_incident_views()}
        assert "call" in triggers[caller]
