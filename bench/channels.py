"""Page delivery latency per channel type, against local stand-ins for each service.

One receiver (aiohttp, in its own thread and event loop, so the sender's loop
is not also serving) answers as each service does: a webhook receiver (200),
ntfy's JSON publish API (the message id), Pushover's messages API (a high page
is an emergency: a receipt) and a plain endpoint for Apprise's ``json://``
notifier. The console channel writes to /dev/null. Each channel is built by
`build_channels` from a `ChannelConfig`, as the service builds it, and every
page goes through the `Dispatcher`; the latency is the delivery record's
(`Attempt.latency`: the channel's send, from start to the service's answer).
Pages are sent one after another (``--count`` each, after ``--warmup``).

    .venv/bin/python bench/channels.py [--count 300] [--warmup 20]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import structlog
from aiohttp import web

from alerts.delivery import Attempt, Delivery, Dispatcher
from alerts.factory import build_channels
from alerts.text import SOURCE_TEXT
from bench.harness import summarise
from monitor.core.settings import ChannelConfig, Policy, Step

PAGE: dict[str, Any] = {  # interface section 8, plus kind and urgent
    "kind": "page", "incident": "01JDX5K3ZQ4T8W6V2N9M7B1C0D", "site": "lisbon-1",
    "booth": "b1", "booth_name": "Booth 1", "priority": "high", "triggers": ["call"],
    "level": 1, "responder": "ana", "message": "Booth 1: call button pressed",
    "raised_at": "2026-11-23T20:15:03.120Z", "urgent": False,
    "ack_url": "http://127.0.0.1:8080/ack/" + "x" * 120,
}  # fmt: skip
ADDRESSES = {"ntfy": "ana-x7", "pushover": "uQiRzpo4DXghDmr9QzzfQu27cmVRsG"}
HIGH = Policy(steps=(Step(0.0, ("role:nurse",)),), repeat=60.0)


class Receiver:
    """The services' stand-in, on its own thread and event loop."""

    def __init__(self) -> None:
        self.port = 0
        self.requests = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="receiver", daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the receiver did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            await request.read()
            self.requests += 1
            if request.path == "/ntfy/":
                return web.json_response({"id": "hwQ2YpKdmg", "event": "message"})
            if request.path == "/1/messages.json":
                return web.json_response({"status": 1, "request": "r",
                                          "receipt": "rLqVuqTRh62UzxtmqiaLzQmVcPgiCy"})
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()


def configs(port: int) -> dict[str, ChannelConfig]:
    base = f"http://127.0.0.1:{port}"
    return {
        "webhook": ChannelConfig("webhook", "webhook", url=f"{base}/hook"),
        "ntfy": ChannelConfig("ntfy", "ntfy", url=f"{base}/ntfy/", token="tk_bench"),
        "pushover": ChannelConfig("pushover", "pushover", url=base, token="a" * 30),
        "apprise": ChannelConfig("apprise", "apprise", url=f"json://127.0.0.1:{port}/apprise"),
        "console": ChannelConfig("console", "console"),
    }


async def measure(port: int, count: int, warmup: int, console: TextIO) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {}
    failures: list[str] = []

    def on_attempt(delivery: Delivery, attempt: Attempt) -> None:
        if not attempt.ok:
            failures.append(f"{attempt.channel}: {attempt.error}")
        elif not delivery.page_id.startswith("warmup"):
            latencies.setdefault(attempt.channel, []).append(attempt.latency)

    async with aiohttp.ClientSession() as session:

        async def no_mqtt(topic: str, body: bytes) -> None:
            raise RuntimeError("no mqtt channel in this bench")

        channels = build_channels(configs(port), session, no_mqtt, "lisbon-1", console,
                                  gettext=SOURCE_TEXT, policies={"high": HIGH})
        dispatcher = Dispatcher(channels, on_attempt, lambda d, r: None, retry_delays=())
        for name in channels:
            for n in range(warmup + count):
                kind = "warmup" if n < warmup else "page"
                dispatcher.submit(Delivery(f"{kind}-{name}-{n}", "inc", "ana", 1, (name,),
                                           PAGE, addresses=ADDRESSES))
                await dispatcher.drain(30)
    if failures:
        raise RuntimeError(f"{len(failures)} failed attempts, first: {failures[0]}")
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="pages per channel type")
    parser.add_argument("--warmup", type=int, default=20, help="pages first, not counted")
    args = parser.parse_args()
    # quiet: a log line per page would be most of what is measured, and of the output
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with Receiver() as receiver, open(os.devnull, "w") as console:
        latencies = asyncio.run(measure(receiver.port, args.count, args.warmup, console))
        requests = receiver.requests
    print(f"page delivery latency per channel type (Attempt.latency), {args.count} pages each, "
          f"sequential, local stand-in services on 127.0.0.1")
    for name, values in latencies.items():
        print(f"{name + ':':<10} {summarise(values)}")
    expected = 4 * (args.count + args.warmup)  # every channel but the console makes a request
    print(f"requests received by the stand-ins: {requests} (expected {expected})")
    return 0 if requests == expected else 1


if __name__ == "__main__":
    raise SystemExit(main())
