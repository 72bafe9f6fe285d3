"""Incident ids made of what repeats: a crash before the commit, or another process taking
the site over from the store, raises the same incident again under the same id.

Each test keeps "the store" as the runtime would (the last booth, incident and device
views the core emitted, through the store's codec), cuts it where the crash falls, and
restores a fresh core from it; the events the broker redelivers reach the new core later,
with the same cause. With random ids every one of these fails.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

from ulid import ULID as ULIDType

from monitor.codec import booth_from_record, booth_record, incident_from_record, incident_record
from monitor.core.booth import BoothView
from monitor.core.events import (
    Acknowledge,
    BoothChanged,
    Button,
    Command,
    DeviceChanged,
    DeviceReading,
    IncidentChanged,
    Motion,
    MotionState,
    Occupancy,
    Press,
    SendPage,
)
from monitor.core.ids import Cause, incident_id, time_ms
from monitor.core.incident import IncidentView
from monitor.core.readings import Reading
from monitor.core.settings import Config, DeviceConfig
from monitor.core.site import SiteCore
from tests.harness.core import T0, CoreDriver, incident, make_config

ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
CALL = b'{"kind":"button","press":"call"}'  # a button that sends no event id


class Store:
    """What the runtime's store would hold: the latest of each view, as records."""

    def __init__(self) -> None:
        self.booths: dict[str, dict[str, Any]] = {}
        self.incidents: dict[str, dict[str, Any]] = {}
        self.devices: dict[str, dict[str, Any]] = {}

    def commit(self, commands: list[Command]) -> None:
        for cmd in commands:
            if isinstance(cmd, BoothChanged):
                self.booths[cmd.view.id] = json.loads(json.dumps(booth_record(cmd.view)))
            elif isinstance(cmd, IncidentChanged):
                self.incidents[cmd.view.id] = json.loads(json.dumps(incident_record(cmd.view)))
            elif isinstance(cmd, DeviceChanged):
                self.devices[cmd.snapshot["id"]] = json.loads(json.dumps(cmd.snapshot))

    def booth_views(self) -> list[BoothView]:
        return [booth_from_record(r) for r in self.booths.values()]

    def incident_views(self) -> list[IncidentView]:
        return [incident_from_record(r) for r in self.incidents.values()]

    def restore(self, config: Config, now: float) -> CoreDriver:
        """A fresh process on this store at ``now`` (its own random-id source)."""
        driver = CoreDriver(config, now=now, ids="other")
        driver.core.restore(now=now, booths=self.booth_views(),
                            incidents=self.incident_views(),
                            devices=list(self.devices.values()))
        driver.core.start(now)
        return driver


def send(driver: CoreDriver, store: Store | None, event: Any, cause: str | bytes | None = None
         ) -> list[Command]:
    out = driver._keep(driver.core.handle(event, driver.now, cause))
    if store is not None:
        store.commit(out)
    return out


def late(driver: CoreDriver, now: float) -> list[Command]:
    """What falls due fired at ``now``, late (a restart's first turn of its timers)."""
    driver.now = now
    return driver._keep(driver.core.on_timer(now))


def page_ids(commands: list[Command]) -> set[str]:
    return {c.incident for c in commands if isinstance(c, SendPage)}


def test_a_call_lost_before_its_commit_is_raised_again_under_the_same_id() -> None:
    """The page left, the process died before the commit; the redelivered call raises the
    incident again with the id the nurse was paged with, and her ack naming it lands."""
    config = make_config()
    store = Store()
    first = CoreDriver(config)
    first.core.start(T0)
    send(first, store, Occupancy("b1", True), "occ-1")
    first.advance(5)
    out = send(first, None, Button("b1", Press.CALL), "call-1")  # paged, never committed
    paged = page_ids(out)
    assert len(paged) == 1 and ULID.fullmatch(next(iter(paged)))

    second = store.restore(config, T0 + 9)  # down for 4 s
    out = send(second, store, Button("b1", Press.CALL), "call-1")  # the broker redelivers
    assert page_ids(out) == paged
    (iid,) = paged
    assert incident(out).view.raised_at == T0 + 9
    out = send(second, store, Acknowledge(iid, "ana", via="mqtt"))
    assert incident(out).view.state == "acknowledged"


def test_a_button_without_event_ids_is_known_by_its_payload() -> None:
    """A device that sends no event id: the redelivered payload, byte for byte, gives the
    same id; and the same payload pressed again later is a new incident, not the old one."""
    config = make_config()
    store = Store()
    first = CoreDriver(config)
    out = send(first, None, Button("b1", Press.CALL), CALL)
    second = store.restore(config, T0 + 2)
    again = send(second, store, Button("b1", Press.CALL), CALL)
    assert page_ids(again) == page_ids(out)
    (iid,) = page_ids(out)
    send(second, store, Button("b1", Press.PRESENCE), b'{"kind":"button","press":"presence"}')
    send(second, store, Button("b1", Press.CLEAR), b'{"kind":"button","press":"clear"}')
    second.advance(60)
    out = send(second, store, Button("b1", Press.CALL), CALL)  # pressed again: new incident
    (later,) = page_ids(out)
    assert later != iid and store.incidents[iid]["state"] == "resolved"


def test_a_reused_event_id_after_a_day_is_a_new_incident() -> None:
    """A device that counts its ids from 1 again after a reboot: the previous incident is
    in the id, so the old one's record is never overwritten."""
    core = CoreDriver()
    first = incident(send(core, None, Button("b1", Press.CALL), "1")).view.id
    send(core, None, Button("b1", Press.CLEAR), "2")
    core.advance(86_400 * 2)
    second = incident(send(core, None, Button("b1", Press.CALL), "1")).view.id
    assert second != first


def test_stillness_fired_before_the_commit_is_raised_again_from_the_stored_deadline() -> None:
    """The unresponsive alarm fired and paged; killed before the commit, the restarted core
    fires the stored deadline late, under the same id, whose time is that deadline."""
    config = make_config(stillness=60)
    store = Store()
    first = CoreDriver(config)
    send(first, store, Occupancy("b1", True), "occ")
    send(first, store, Motion("b1", MotionState.STILL), "still")
    out = first.advance(60)  # fired, paged, never committed
    (iid,) = page_ids(out)
    assert time_ms(iid) == int((T0 + 60) * 1000)

    second = store.restore(config, T0 + 63)
    out = late(second, T0 + 63)
    assert page_ids(out) == {iid}
    assert incident(out).view.raised_at == T0 + 63


def test_a_long_session_raised_again_by_another_process_keeps_its_id() -> None:
    """A standby taking the site over from the store raises the long session its owner
    paged about under the owner's id."""
    config = make_config(long_session=600)
    store = Store()
    owner = CoreDriver(config)
    send(owner, store, Occupancy("b2", True), "occ")
    (iid,) = page_ids(owner.advance(600))
    standby = store.restore(config, T0 + 612)
    assert page_ids(late(standby, T0 + 612)) == {iid}


def test_device_silence_raised_again_keeps_its_id() -> None:
    """A device gone silent: the offline alarm's deadline comes from its stored last
    sighting, so the alarm raised again after a crash has the same id."""
    base = make_config()
    config = replace(base, devices=(
        DeviceConfig("radar", "zigbee2mqtt", "zigbee2mqtt/radar", "b1", "motion"),),
        booths=tuple(replace(b, device_timeout=600.0) for b in base.booths))
    store = Store()
    first = CoreDriver(config, start=True)
    send(first, store, DeviceReading("radar", Reading(occupancy=False)), b'{"presence":false}')
    out = first.advance(600)
    (iid,) = page_ids(out)
    assert time_ms(iid) == int((T0 + 600) * 1000)
    second = store.restore(config, T0 + 700)
    assert page_ids(late(second, T0 + 700)) == {iid}


def test_a_whole_uncommitted_run_replays_to_the_same_ids() -> None:
    """Commits failing for a while (a store outage), then a crash: every incident of the
    booth raised meanwhile, each after the last, comes back under the id that was paged,
    though the redelivered events arrive 30 s later."""
    config = make_config()
    store = Store()
    first = CoreDriver(config)
    send(first, store, Occupancy("b2", True), "occ")  # committed before the outage
    script: list[tuple[float, Any, str | bytes | None]] = [
        (1, Button("b1", Press.CALL), CALL), (2, Button("b1", Press.CLEAR), b"clear"),
        (3, Button("b1", Press.CALL), "c3"), (4, Button("b1", Press.CLEAR), b"clear"),
        (5, Button("b2", Press.CALL), CALL), (100, Button("b1", Press.CALL), CALL)]

    def play(driver: CoreDriver, shift: float) -> list[str]:
        ids: list[str] = []
        for at, event, cause in script:
            out = driver.at(T0 + shift + at)
            out += send(driver, None, event, cause)
            ids += [i for i in dict.fromkeys(c.incident for c in out
                                             if isinstance(c, SendPage)) if i not in ids]
        return ids

    paged = play(first, 0)
    assert len(paged) == 4 and len(set(paged)) == 4
    assert play(store.restore(config, T0 + 30), 30) == paged


def test_the_chain_survives_the_store_and_old_records_take_the_open_incident() -> None:
    """The booth's last incident is kept in its stored record; a record from before it was
    kept restores with the booth's open incident in its place."""
    config = make_config()
    store = Store()
    core = CoreDriver(config)
    iid = incident(send(core, store, Button("b1", Press.CALL), "c1")).view.id
    assert store.booths["b1"]["last_incident"] == iid
    old = Store()
    old.booths = {b: {k: v for k, v in r.items() if k != "last_incident"}
                  for b, r in store.booths.items()}
    old.incidents = store.incidents
    restored = old.restore(config, T0 + 1)
    assert restored.core.booths["b1"].last_incident == iid
    send(restored, None, Button("b1", Press.CLEAR), "c2")
    nxt = incident(send(restored, None, Button("b1", Press.CALL), "c1")).view.id
    assert nxt == incident_id("lisbon-1", "b1", iid, "call", Cause.message("c1"))


def test_ids_are_ulids_ordered_within_a_booth() -> None:
    """A timer's incident carries its deadline as the ULID time; a message's, which has no
    time a redelivery repeats, its booth's previous id's: never after raised_at."""
    config = make_config(long_session=600)
    core = CoreDriver(config)
    first = incident(send(core, None, Button("b1", Press.CALL), "c1")).view
    assert ULID.fullmatch(first.id) and time_ms(first.id) == 0  # the booth's first
    send(core, None, Button("b1", Press.CLEAR), "c2")
    send(core, None, Occupancy("b1", True), "o1")
    timed = incident(core.advance(600)).view
    assert time_ms(timed.id) == int((T0 + 600) * 1000)
    send(core, None, Button("b1", Press.CLEAR), "c3")
    core.advance(1)
    later = incident(send(core, None, Button("b1", Press.CALL), "c4")).view
    assert time_ms(later.id) == time_ms(timed.id) <= later.raised_at * 1000
    assert sorted([first.id, timed.id, later.id], key=time_ms) == [first.id, timed.id, later.id]
    assert time_ms("not-an-id") == 0 and time_ms(None) == 0


def test_other_sites_and_booths_never_share_an_id() -> None:
    """The same cause at another booth or another site is another incident."""
    cause = Cause.message("same")
    ids = {incident_id(site, booth, None, "call", cause)
           for site in ("a", "b") for booth in ("b1", "b2")}
    assert len(ids) == 4
    site = SiteCore(make_config(booths=2), lambda: "unused")
    out = site.handle(Button("b1", Press.CALL), T0, "same")
    out += site.handle(Button("b2", Press.CALL), T0, "same")
    assert len(page_ids(out)) == 2


def test_ids_read_as_ulids_and_old_ulids_read_back() -> None:
    """What the ULID library makes of an id is what went in, and the time part of a random
    ULID (an id stored before) reads back the same."""
    made = incident_id("lisbon-1", "b1", None, "unresponsive", Cause.deadline(T0 + 0.25))
    parsed = ULIDType.from_str(made)
    assert parsed.milliseconds == int((T0 + 0.25) * 1000) == time_ms(made)
    assert str(parsed) == made
    for _ in range(50):
        old = ULIDType()
        assert time_ms(str(old)) == old.milliseconds
    assert time_ms("ZZZZZZZZZZZZZZZZZZZZZZZZZZ") == 0  # past 48 bits: not a ULID
