"""The whole service in-process, as the integration tests run it.

`start_service` writes the test site (`tests.harness.site`), starts a `Webhook`
pager and the real `Runtime` against a real Mosquitto, real SQLite (or PostgreSQL) and
real HTTP, and yields a `Service` to talk to it. Given a `HandClock`, the service lives in
time the test moves: `Service.advance` steps it from deadline to deadline through
the runtime's driver and its self-tests, as the timer tasks would, so an escalation,
an ack timeout or a scheduled self-test is tested without waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from monitor.config import load_config
from monitor.runtime import Runtime
from tests.harness.broker import Mosquitto, Publish, free_port
from tests.harness.receivers import Webhook
from tests.harness.site import SITE, Site, service_site


class HandClock:
    """Service time that moves only when the test moves it. It starts at the wall
    clock's now: ack links are signed in real time and must not look expired."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


@dataclass
class Service:
    runtime: Runtime
    hook: Webhook
    http: aiohttp.ClientSession
    base: str
    publish: Publish
    broker: Mosquitto

    def advance(self, seconds: float) -> None:
        """Move the hand clock on by ``seconds``, firing every deadline on the way at its
        own time through the runtime's driver: its pages go out through the real
        channels, its changes into the real store. Effects that travel (a page to the
        webhook) are awaited as usual."""
        clock = self.runtime.clock
        assert isinstance(clock, HandClock), "start_service(..., clock=HandClock())"
        driver, tests = self.runtime.driver, self.runtime.selftests
        end = clock.now + seconds
        while True:  # the core's deadlines and the self-tests' rounds, in time order
            due = [(at, fire) for at, fire in ((driver.core.next_deadline(), driver.fire),
                                               (tests.next_deadline(), tests.fire))
                   if at is not None and at <= end]
            if not due:
                break
            at, fire = min(due, key=lambda item: item[0])
            clock.now = max(clock.now, at)
            fire(clock.now)
        clock.now = end
        driver.wake.set()  # the timer task re-arms against the new time

    async def incidents(self, state: str = "all", **kw: Any) -> list[dict[str, Any]]:
        async with self.http.get(f"{self.base}/api/incidents?state={state}", **kw) as resp:
            assert resp.status == 200
            result: list[dict[str, Any]] = await resp.json()
            return result

    async def post(self, path: str, body: dict[str, Any], **kw: Any) -> tuple[int, Any]:
        async with self.http.post(f"{self.base}{path}", json=body, **kw) as resp:
            return resp.status, await resp.json()

    async def metric(self, line_start: str) -> float:
        async with self.http.get(f"{self.base}/metrics") as resp:
            text = await resp.text()
        for line in text.splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@contextlib.asynccontextmanager
async def start_service(
    tmp_path: Path, broker: Mosquitto, publish: Publish, *, env: dict[str, str] | None = None,
    edit: Callable[[Site], object] | None = None, clock: Callable[[], float] | None = None,
    stillness: str = "3m", long_session: str = "20m", step2: str = "1s", repeat: str = "1s",
    ack_timeout: str = "1.5s", store_url: str | None = None,
) -> AsyncIterator[Service]:
    """The service on the test site; ``edit`` may change the site before it is written.
    Its store is a SQLite file in ``tmp_path``, or the PostgreSQL database at ``store_url``
    (its password in ``env`` as BOOTHWATCH_DB_PASSWORD)."""
    http_port = free_port()
    async with Webhook() as hook:
        site = service_site(mqtt_port=broker.port, http_port=http_port, webhook_url=hook.url,
                            store=tmp_path / "boothwatch.db", stillness=stillness,
                            long_session=long_session, step2=step2, repeat=repeat,
                            ack_timeout=ack_timeout, store_url=store_url)
        if edit is not None:
            edit(site)
        path = site.write(tmp_path / "boothwatch.toml")
        # the config reads `env` too (BOOTHWATCH_DB_PASSWORD), over this process's own
        runtime = Runtime(load_config(path, {**os.environ, **(env or {})}), env=env or {},
                          retry_delays=(0.05, 0.05), clock=clock)
        async with running(runtime):
            async with aiohttp.ClientSession() as http:
                yield Service(runtime, hook, http, f"http://127.0.0.1:{http_port}", publish,
                              broker)


@contextlib.asynccontextmanager
async def running(runtime: Runtime) -> AsyncIterator[Runtime]:
    """Run ``runtime`` until the block ends: started, subscribed; then cancelled."""
    task = asyncio.create_task(runtime.run())
    try:
        await asyncio.wait_for(runtime.started.wait(), 10)
        await eventually(lambda: runtime.mqtt.ready, 10)
        yield runtime
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def eventually(check: Callable[[], Any], timeout: float = 5.0, every: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy (an awaitable is awaited)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        await asyncio.sleep(every)


def event(kind: str, **fields: Any) -> bytes:
    """A canonical booth event's payload."""
    return json.dumps({"kind": kind, **fields}).encode()


def events_topic(booth: str) -> str:
    return f"boothwatch/{SITE}/booths/{booth}/events"
