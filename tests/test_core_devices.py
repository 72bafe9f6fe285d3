"""Devices in the core: roles, state-cache repeats, debounce, doors, health. Hand-stepped clock."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from monitor.core.booth import BoothView
from monitor.core.events import (
    BoothChanged,
    Command,
    DeviceReading,
    IncidentChanged,
    MotionState,
    Occupancy,
    SendPage,
)
from monitor.core.readings import Reading
from monitor.core.settings import BoothConfig, DeviceConfig
from tests.harness.core import T0, CoreDriver, make_config


def _devices(door_booth: bool = False) -> tuple[DeviceConfig, ...]:
    return (
        DeviceConfig("btn", "zigbee2mqtt", "zigbee2mqtt/btn", "b1", "call_button"),
        DeviceConfig("staff", "zigbee2mqtt", "zigbee2mqtt/staff", "b1", "presence_button"),
        DeviceConfig("radar", "zigbee2mqtt", "zigbee2mqtt/radar", "b1", "motion"),
        DeviceConfig("door", "zigbee2mqtt", "zigbee2mqtt/door", "b1", "door"),
        DeviceConfig("pir2", "esphome", "n2/binary_sensor/pir/state", "b2", "occupancy"),
    )


class Site(CoreDriver):
    def __init__(self, door: bool = False, stillness: float = 60.0) -> None:
        config = make_config(stillness=stillness, long_session=3600)
        booths = tuple(
            replace(b, occupancy_from="door", device_timeout=600.0) if door and b.id == "b1"
            else replace(b, device_timeout=600.0) for b in config.booths
        )
        super().__init__(replace(config, booths=booths, devices=_devices()), ids="i",
                         start=True)

    def read(self, device: str, retained: bool = False, **fields: Any) -> list[Command]:
        return self.send(DeviceReading(device, Reading(**fields), retained))

    def booth(self, booth: str = "b1") -> BoothView:
        return next(v for v in self.core.booth_views() if v.id == booth)


def pages(commands: list[Command]) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.responder, c.priority, c.triggers) for c in commands if isinstance(c, SendPage)]


def test_button_press_pages_and_retained_press_does_not() -> None:
    """A press from the call button pages; the same message retained is only a snapshot."""
    site = Site()
    assert pages(site.read("btn", retained=True, press="single", battery=97)) == []
    assert pages(site.read("btn", press="single", battery=97)) == [("ana", "high", ("call",))]


def test_presence_button_attends_and_hold_clears() -> None:
    """Staff's button: single is presence at the booth, hold is clear."""
    site = Site()
    out = site.read("btn", press="double")
    iid = [c for c in out if isinstance(c, IncidentChanged)][-1].view.id
    site.read("staff", press="single")
    assert site.core.incident_view(iid).state == "attended"
    out = site.read("staff", press="hold")
    assert [c for c in out if isinstance(c, IncidentChanged)][-1].view.state == "resolved"


def test_state_cache_repeats_are_not_events() -> None:
    """The same motion reading again (with a new battery) changes nothing on the booth."""
    site = Site()
    site.read("radar", occupancy=True, motion=MotionState.MOVING)
    out = site.read("radar", occupancy=True, motion=MotionState.MOVING, battery=80)
    assert not [c for c in out if isinstance(c, BoothChanged)]


def test_flapping_sensor_is_debounced() -> None:
    """A move/presence flap shorter than the debounce never reaches the booth."""
    site = Site()
    site.read("pir2", binary=True)
    site.read("radar", motion=MotionState.MOVING)
    for _ in range(5):
        site.advance(0.3)
        site.read("radar", motion=MotionState.STILL)
        site.advance(0.3)
        assert not [c for c in site.read("radar", motion=MotionState.MOVING)
                    if isinstance(c, BoothChanged)]
    assert site.booth().motion == "moving"
    site.read("radar", motion=MotionState.STILL)
    out = site.advance(2.0)
    assert [c for c in out if isinstance(c, BoothChanged)][-1].view.motion == "still"


def test_fp1e_no_movement_in_an_occupied_booth_pages_unresponsive() -> None:
    """An mmWave sensor reporting no_movement while occupied raises unresponsive."""
    site = Site(stillness=60)
    site.read("door", contact=True)
    site.read("radar", occupancy=True, motion=MotionState.MOVING)
    site.core.handle(_occupancy("b1"), site.now)
    site.advance(5)
    site.read("radar", occupancy=True, motion=MotionState.STILL)
    out = site.advance(61 + 2)
    assert ("ana", "high", ("unresponsive",)) in pages(out)


def _occupancy(booth: str) -> Occupancy:
    return Occupancy(booth, True)


def test_door_closes_then_presence_starts_a_session() -> None:
    """In a door booth, door closed plus presence within the window starts a session."""
    site = Site(door=True)
    site.read("door", contact=False)
    site.read("door", contact=True)
    assert not site.booth().occupied
    site.advance(10)
    site.read("radar", occupancy=True, motion=MotionState.MOVING)
    view = site.booth()
    assert view.occupied and view.session_started_at == T0 + 10


def test_presence_after_the_window_starts_nothing() -> None:
    """Presence 31 s after the door closed does not start a session (default window 30 s)."""
    site = Site(door=True)
    site.read("door", contact=True)
    site.advance(31)
    site.read("radar", occupancy=True, motion=MotionState.MOVING)
    assert not site.booth().occupied


def test_no_presence_with_door_closed_does_not_end_the_session() -> None:
    """An mmWave sensor dropping to no_presence behind a closed door keeps the session."""
    site = Site(door=True, stillness=60)
    site.read("radar", occupancy=True, motion=MotionState.MOVING)
    site.read("door", contact=True)
    assert site.booth().occupied
    site.read("radar", occupancy=False, motion=MotionState.ABSENT)
    out = site.advance(62)
    assert site.booth().occupied
    assert ("ana", "high", ("unresponsive",)) in pages(out)  # absent counts as still


def test_door_open_ends_and_closed_again_means_a_missed_open() -> None:
    """Opening ends the session; closed twice in a row restarts it (an open was missed)."""
    site = Site(door=True)
    site.read("radar", occupancy=True, motion=MotionState.MOVING)
    site.read("door", contact=True)
    first = site.booth().session_started_at
    assert first is not None
    site.advance(100)
    cfg = replace(site.core.registry.devices["door"].config, source="esphome")
    site.core.registry.devices["door"].config = cfg  # esphome reports only changes
    site.read("door", binary=False)  # closed again (binary OFF = closed)
    assert site.booth().session_started_at == first + 100
    site.read("door", binary=True)  # open
    assert not site.booth().occupied


def test_sensor_offline_in_occupied_booth_pages_high_and_recovers() -> None:
    """Availability offline of an occupied booth's sensor is a high device_offline."""
    site = Site()
    site.core.handle(_occupancy("b1"), site.now)
    out = site.read("radar", online=False)
    assert pages(out) == [("ana", "high", ("device_offline",))]
    assert site.booth().unmonitored
    out = site.read("radar", occupancy=True, motion=MotionState.MOVING)
    view = [c for c in out if isinstance(c, IncidentChanged)][-1].view
    assert (view.state, view.outcome) == ("resolved", "device_back")
    assert not site.booth().unmonitored


def test_booth_view_names_each_device_in_trouble() -> None:
    """The booth says which device is offline or low, so the board can show it in words."""
    site = Site()
    assert site.booth().troubles == ()
    site.read("radar", online=False)
    site.read("btn", battery=15)
    assert site.booth().troubles == (
        {"device": "btn", "role": "call_button", "trouble": "low_battery"},
        {"device": "radar", "role": "motion", "trouble": "offline"})
    site.read("radar", occupancy=False, motion=MotionState.ABSENT)
    site.read("btn", battery=90)
    assert site.booth().troubles == ()


def test_sensor_offline_in_vacant_booth_is_low_until_someone_enters() -> None:
    """Vacant: low priority (coordinator); a session starting re-plans it as high at once."""
    site = Site()
    out = site.read("radar", online=False)
    assert pages(out) == [("rui", "low", ("device_offline",))]
    out = site.core.handle(_occupancy("b1"), site.now)
    assert pages(out) == [("ana", "high", ("device_offline",))]


def test_silence_past_device_timeout_is_offline() -> None:
    """A chatty sensor silent for device_timeout goes offline; quiet devices get 2 h."""
    site = Site()
    out = site.advance(599)
    assert pages(out) == []
    out = site.advance(1)
    assert {p[2] for p in pages(out)} == {("device_offline",)}
    assert {d.id for d in site.core.device_views() if not d.online} == {"radar"}
    site.advance(7200 - 600)
    offline = {d.id for d in site.core.device_views() if not d.online}
    assert offline == {"radar", "door", "pir2", "btn", "staff"}


def test_low_battery_pages_low_at_most_daily() -> None:
    """A call button under 20 % pages low once, then again only after a day."""
    site = Site()
    assert pages(site.read("btn", battery=15)) == [("rui", "low", ("low_battery",))]
    assert pages(site.read("btn", battery=14)) == []
    iid = site.core.open_incident_views()[0].id
    from monitor.core.events import Resolve

    site.core.handle(Resolve(iid, "rui", "ok"), site.now)
    notified, seen = T0, []
    while site.now < notified + 86_400 + 500:
        site.read("btn", battery=14)
        site.read("radar", motion=MotionState.ABSENT)
        site.read("door", contact=True)
        site.read("pir2", binary=False)
        site.read("staff", battery=90)
        seen += [(site.now, p) for p in pages(site.advance(500))]
    assert [p for _t, p in seen] == [("rui", "low", ("low_battery",))]
    assert seen[0][0] >= notified + 86_400


def test_booths_default_to_sensor_sessions_and_a_30s_door_window() -> None:
    """Without occupancy_from a booth's sessions come from sensors; the door window is 30 s."""
    booth = BoothConfig("b", "B", 1.0, 1.0, 1.0)
    assert (booth.occupancy_from, booth.door_window) == ("sensor", 30.0)


def test_first_binary_button_press_after_restart_pages() -> None:
    """A retained OFF on reconnect is recorded; the first real ON is then a press."""
    site = Site()
    site.core.registry.devices["btn"].config = replace(
        site.core.registry.devices["btn"].config, source="esphome")
    assert pages(site.read("btn", retained=True, binary=False)) == []
    assert pages(site.read("btn", binary=True)) == [("ana", "high", ("call",))]


def test_first_binary_on_with_nothing_known_is_a_press_but_retained_on_is_not() -> None:
    """With no earlier state a live ON pages (better twice than never); a retained ON never."""
    site = Site()
    assert pages(site.read("btn", retained=True, binary=True)) == []
    site2 = Site()
    assert pages(site2.read("btn", binary=True)) == [("ana", "high", ("call",))]


def test_periodic_door_telemetry_does_not_end_the_session() -> None:
    """Tasmota repeats its Switch state every TelePeriod: a repeat is not a missed open."""
    site = Site(door=True)
    dev = site.core.registry.devices["door"]
    dev.config = replace(dev.config, source="tasmota")
    site.read("radar", occupancy=True, motion=MotionState.MOVING)
    site.read("door", binary=False)  # closed (ON = open)
    started = site.booth().session_started_at
    site.advance(300)
    site.read("door", binary=False)  # the same state again, five minutes later
    assert site.booth().session_started_at == started


def test_battery_devices_and_doors_may_stay_quiet_for_two_hours() -> None:
    """A battery PIR and a door that say nothing for an hour are not offline; mmWave is."""
    site = Site()
    site.read("radar", occupancy=False, motion=MotionState.ABSENT, battery=90)
    site.read("pir2", binary=False)
    site.read("door", contact=True)
    site.advance(3600)
    offline = {d.id for d in site.core.device_views() if not d.online}
    assert offline == set()  # esphome pir2 has a Last Will; radar reported a battery
    site2 = Site()
    site2.read("radar", occupancy=False, motion=MotionState.ABSENT)  # mains mmWave
    site2.advance(601)
    assert {d.id for d in site2.core.device_views() if not d.online} == {"radar"}
