"""The driver's ports in the order a call's page needs: the page submitted first, the
metrics and log lines of the incident only once the page's first step and body are out."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from monitor.core.booth import BoothView
from monitor.core.events import Audit, Button, IncidentChanged, Press, SendNotice, SendPage
from monitor.core.incident import IncidentView, TimelineEntry
from monitor.core.site import SiteCore
from monitor.driver import Driver
from tests.harness.core import T0, make_config


class Ports:
    """Every port of the driver, writing what it was asked into one list."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.done = asyncio.get_running_loop().create_future()
        self.done.set_result(None)

    def page(self, cmd: SendPage, now: float) -> asyncio.Future[None]:
        self.order.append("page")

        async def deliver() -> None:  # a delivery: its first step, then aiohttp's body task
            self.order.append("page step")

            async def body() -> None:
                self.order.append("page body")

            await asyncio.get_running_loop().create_task(body())

        asyncio.get_running_loop().create_task(deliver())
        return self.done

    def notice(self, cmd: SendNotice, now: float) -> asyncio.Future[None]:
        return self.done

    def stop(self, incident: str) -> None:
        pass

    def command(self, cmd: IncidentChanged | Audit) -> None:
        self.order.append("observe")

    def put_booth(self, view: BoothView, now: float) -> asyncio.Future[None]:
        self.order.append("store")
        return self.done

    def put_incident(self, view: IncidentView,
                     new: tuple[TimelineEntry, ...]) -> asyncio.Future[None]:
        self.order.append("store")
        return self.done

    def add_audit(self, at: float, kind: str, subject: str,
                  detail: dict[str, Any]) -> asyncio.Future[None]:
        return self.done

    def put_duty(self, snapshot: dict[str, Any], now: float) -> asyncio.Future[None]:
        return self.done

    def put_device(self, booth: str, snapshot: dict[str, Any],
                   now: float) -> asyncio.Future[None]:
        return self.done

    def booth(self, view: BoothView) -> None:
        self.order.append("publish")

    def incident(self, view: IncidentView) -> None:
        self.order.append("publish")

    def duty(self) -> None:
        pass


async def test_an_incidents_metrics_wait_behind_its_page() -> None:
    """A call's incident is stored and its publishes queued in the read's own turn, and
    its metrics and log lines (an incident's first series for a booth costs about 0.1 ms
    to make) only once the page's first step and its body have run; nothing is lost."""
    ids = itertools.count()
    core = SiteCore(make_config(booths=2), lambda: f"id{next(ids)}")
    ports = Ports()
    driver = Driver(core, store=ports, publish=ports, pages=ports, observe=ports)
    driver.handle(Button("b1", Press.CALL), T0, b"call")
    assert "observe" not in ports.order
    assert ports.order[0] == "page" and "store" in ports.order
    for _ in range(3):
        await asyncio.sleep(0)
    assert ports.order.index("page body") < ports.order.index("observe")
    assert ports.order.count("observe") == 1
