"""A call is handled before the other booths' messages read with it, against a real Mosquitto.

A power cut makes every sensor's availability say offline at once; a call pressed then used
to wait until the service had raised an incident for each of those messages read before it
(bench/burst.py --burst-kind offline: p99 0.23-0.31 s on a fast box). The MQTT link reads
ahead of its handling, and the ingest says which messages may be calls
(`Ingest.order`): those go first, each booth's messages keeping their order.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devices.mqtt import Message
from tests.harness.broker import Mosquitto, Publish
from tests.harness.service import event, events_topic, eventually, start_service
from tests.harness.site import Site, booths, device

pytestmark = pytest.mark.integration

SENSORS = 300


def message(topic: str, payload: bytes | str) -> Message:
    return Message(topic, payload.encode() if isinstance(payload, str) else payload, 1, 1,
                   False, False)


def burst_site(site: Site) -> None:
    """A Zigbee2MQTT occupancy sensor in each of b1..b300, b301 with none, and z2m call and
    presence buttons in b302."""
    site.booths = booths(SENSORS + 2)
    site.devices = [
        *(device(f"s{i}", "zigbee2mqtt", f"z2m/s{i}", f"b{i}", "occupancy")
          for i in range(1, SENSORS + 1)),
        device("button", "zigbee2mqtt", "z2m/button", f"b{SENSORS + 2}", "call_button"),
        device("presence", "zigbee2mqtt", "z2m/presence", f"b{SENSORS + 2}", "presence_button"),
    ]
    site.no_rate_limit()


async def test_what_a_person_sends_is_urgent_and_keeps_its_booths_order(
        tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish) -> None:
    """`Ingest.order`: a booth event that may be a press, a button's topics and the pager
    gateways' topics are urgent; sensor readings are not. A booth's messages share its
    key whatever their topic, so a call never overtakes its own booth's "clear"."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, edit=burst_site) as svc:
        order = svc.runtime.ingest.order
        topics = svc.runtime.ingest.topics
        button = f"b{SENSORS + 2}"
        assert order(message(events_topic("b1"), event("button", press="call"))) == ("b1", True)
        assert order(message(events_topic("b1"), b'{"kind":"\\u0062utton","press":"call"}')) \
            == ("b1", True)
        assert order(message(events_topic("b1"), event("button", press="clear"))) == ("b1", True)
        assert order(message(events_topic("b1"), event("motion", still=True))) == ("b1", False)
        assert order(message("z2m/button", '{"action":"single"}')) == (button, True)
        assert order(message("z2m/presence", '{"action":"double"}')) == (button, True)
        assert order(message("z2m/button/availability", '{"state":"offline"}')) == (button, True)
        assert order(message("z2m/s1", '{"occupancy":true}')) == ("b1", False)
        assert order(message("z2m/s1/availability", '{"state":"offline"}')) == ("b1", False)
        for topic in (topics.ack, topics.duty, topics.steps):
            assert order(message(topic, "{}")) == (topic, True)
        assert order(message("elsewhere/x", "call")) == ("elsewhere/x", False)


async def test_a_clear_then_a_call_from_one_booth_keep_their_order_in_a_burst(
        tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish) -> None:
    """A nurse clears a call with the booth's presence button, then the person calls again
    on the call button (another topic), both behind a burst of offline sensors: the clear
    ends the first incident and the second call opens a new one. Handled the other way
    round, the call would join the open incident and the clear would end both."""
    booth = f"b{SENSORS + 2}"
    async with start_service(tmp_path, mosquitto, mqtt_publish, step2="1h",
                             edit=burst_site) as svc:
        rt = svc.runtime
        mqtt_publish("z2m/button", '{"action":"single"}')
        first = await eventually(lambda: [v.id for v in rt.core.open_incident_views()
                                          if v.booth == booth], timeout=10)
        rt.mqtt.pause_reading()
        for i in range(1, SENSORS + 1):
            mqtt_publish(f"z2m/s{i}/availability", '{"state":"offline"}')
        mqtt_publish("z2m/presence", '{"action":"double"}')  # clear
        mqtt_publish("z2m/button", '{"action":"single"}')  # and a new call
        rt.mqtt.resume_reading()

        def settled() -> list[str] | None:
            views = list(rt.core.open_incident_views())
            if len(views) < SENSORS + 1:
                return None
            return [v.id for v in views if v.booth == booth]

        now_open = await eventually(settled, timeout=30)
        assert len(now_open) == 1 and now_open != first, \
            "the second call did not open an incident of its own"


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
