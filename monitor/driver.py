"""The driver: feeds the site core and carries out its commands through small ports.

Every adapter reaches the core through here: ingest hands it an MQTT event, the
API a person's action, paging a page that failed, the timer task the time. The
core's commands go out through four ports, in this order:

* **pages** first (`PagePort`): their delivery tasks are queued before the store
  writer wakes, so a page leaves before the batch holding its cause is built;
* **publish** (`PublishPort`): a booth's retained state, an incident's change (MQTT
  and the station boards), a change of duty (the boards);
* **store** (`StorePort`): every change joins the store's current batch; the
  future returned completes when the batch has committed, and ingest
  acknowledges the MQTT message only then;
* **observe** (`ObservePort`): metrics and log lines, from the typed news of an
  incident's change and from audit records, once the pages of the same turn are out
  (`after_pages`): nobody waits for them, and an incident's first metric series for a
  booth costs about 0.1 ms to make.

Nothing here awaits: `handle` and `fire` run to the end on the caller's turn of
the event loop, so a test can drive the whole service with a hand-stepped clock
(`fire(now)` at each deadline: `tests/harness/service.py` steps the whole service
so, as `tests/harness/core.py` steps the bare core).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol, assert_never

from alerts.delivery import after_pages
from monitor.core.booth import BoothView
from monitor.core.events import (
    Audit,
    BoothChanged,
    Command,
    DeviceChanged,
    DutyChanged,
    Event,
    IncidentChanged,
    SendNotice,
    SendPage,
    StopPaging,
)
from monitor.core.incident import IncidentView, TimelineEntry
from monitor.core.site import SiteCore

Stored = asyncio.Future[None]

#: how long the timer task fires deadlines in one turn of the event loop (seconds), and
#: how many it asks the core for at a time: 1,000 sensors falling silent at once are
#: 1,000 incidents, about 0.3 ms each of the core, the page's start and the rows, and
#: each brings as much again in the turns after (its publishes, its page's request and
#: records). A call read during the burst waits for about three turns (its read, its
#: delivery's first step, aiohttp writing the body): fired 5 ms (10 deadlines) a turn,
#: its page took p99 100-500 ms; 1 ms (one deadline at a time), p99 14-17 ms
#: (bench/burst.py). The MQTT reader's slice is 2 ms, the store's encoding 1 ms.
FIRE_SLICE = 0.001
FIRE_BATCH = 1


class StorePort(Protocol):
    def put_booth(self, view: BoothView, now: float) -> Stored: ...
    def put_incident(self, view: IncidentView, new: tuple[TimelineEntry, ...]) -> Stored: ...
    def add_audit(self, at: float, kind: str, subject: str, detail: dict[str, Any]) -> Stored: ...
    def put_duty(self, snapshot: dict[str, Any], now: float) -> Stored: ...
    def put_device(self, booth: str, snapshot: dict[str, Any], now: float) -> Stored: ...


class PublishPort(Protocol):
    def booth(self, view: BoothView) -> None: ...
    def incident(self, view: IncidentView) -> None: ...
    def duty(self) -> None: ...


class PagePort(Protocol):
    def page(self, cmd: SendPage, now: float) -> Stored | None: ...
    def notice(self, cmd: SendNotice, now: float) -> Stored | None: ...
    def stop(self, incident: str) -> None: ...


class ObservePort(Protocol):
    def command(self, cmd: IncidentChanged | Audit) -> None: ...


@dataclass(frozen=True, slots=True)
class Handled:
    """What the core made of an event, and the future of its storing."""

    commands: list[Command]
    stored: Stored


class Driver:
    def __init__(self, core: SiteCore, *, store: StorePort, publish: PublishPort,
                 pages: PagePort, observe: ObservePort) -> None:
        self.core = core
        self._store = store
        self._publish = publish
        self._pages = pages
        self._observe = observe
        self.wake = asyncio.Event()  # set when an event moved the next deadline earlier
        self._armed: float | None = None  # the deadline the timer task sleeps towards

    def handle(self, event: Event, now: float, cause: str | bytes | None = None) -> Handled:
        """Apply ``event`` at ``now``; raises what the core raises (unknown incident...).
        ``cause``: the MQTT message's event id, or its payload (see `SiteCore.handle`)."""
        commands = self.core.handle(event, now, cause)
        stored = self.execute(commands, now)
        self.rearm()
        return Handled(commands, stored)

    def fire(self, now: float) -> Stored:
        """Fire every deadline due at ``now`` (a test stepping time)."""
        return self.execute(self.core.on_timer(now), now)

    def fire_some(self, now: float) -> Stored | None:
        """Fire deadlines due at ``now`` for about `FIRE_SLICE` (the timer task, which
        comes back for the rest after the event loop's next turn)."""
        stop = time.perf_counter() + FIRE_SLICE
        done: Stored | None = None
        while True:
            commands = self.core.on_timer(now, FIRE_BATCH)
            if not commands:
                return done
            done = self.execute(commands, now)
            if time.perf_counter() >= stop:
                return done

    def next_deadline(self) -> float | None:
        """When `fire` is due next; the timer task arms itself with this."""
        self._armed = self.core.next_deadline()
        return self._armed

    def rearm(self) -> None:
        """Wake the timer task only if an event moved the next deadline earlier."""
        deadline = self.core.next_deadline()
        if deadline is not None and (self._armed is None or deadline < self._armed):
            self.wake.set()

    def execute(self, commands: list[Command], now: float) -> Stored:
        """Carry out the core's commands; the future completes when they are stored."""
        done: Stored | None = None
        for cmd in commands:  # pages first: see the module docstring
            if isinstance(cmd, SendPage):
                done = self._pages.page(cmd, now) or done
        for cmd in commands:
            match cmd:
                case SendPage():
                    pass
                case SendNotice():
                    done = self._pages.notice(cmd, now) or done
                case StopPaging(incident=incident):
                    self._pages.stop(incident)
                case Audit(at=at, kind=kind, subject=subject, detail=detail):
                    done = self._store.add_audit(at, kind, subject, detail)
                    after_pages(self._observe.command, cmd)
                case DutyChanged(snapshot=snapshot):
                    self._publish.duty()
                    done = self._store.put_duty(snapshot, now)
                case BoothChanged(view=view):
                    self._publish.booth(view)
                    done = self._store.put_booth(view, now)
                case IncidentChanged(view=view, new=new):
                    self._publish.incident(view)
                    done = self._store.put_incident(view, new)
                    after_pages(self._observe.command, cmd)
                case DeviceChanged(view=dview, snapshot=snapshot):
                    done = self._store.put_device(dview.booth, snapshot, now)
                case _:
                    assert_never(cmd)
        if done is None:
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
        return done
