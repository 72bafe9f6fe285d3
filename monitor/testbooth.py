"""`boothwatch test-booth`: a guided walk-through of one booth's devices, paging nobody.

Like `boothwatch test-page` for channels, this tests a booth end to end through the
running service: it starts a device self-test of the booth over the HTTP API
(`monitor.core.boothtest`: while it runs, the booth's triggers are recorded
instead of raised, and only ``--responder``, the person testing, hears of them),
then tells the person in the booth what to do and waits for each step:

1. go in and press the call button: the call trigger must fire;
2. stay still for the booth's ``stillness``: the unresponsive trigger must fire.

It ends the test and reports which devices were heard (and what each sent), the
booth's configured devices that were not, and whether the right triggers fired.
The service is found at the config's ``[http] listen``; with
``BOOTHWATCH_API_TOKEN`` set, its token is sent.

Exit status: 0 when both triggers fired, 1 when one did not, 2 for a config
problem, an unknown booth or responder, a booth that cannot be tested now (an open
incident, a test running) or a service that does not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import aiohttp

from monitor.config import ConfigError, load_config
from monitor.core.boothtest import MAX_TEST
from monitor.core.durations import format_duration
from monitor.core.settings import BoothConfig, Config

POLL = 0.5  # seconds between looks at the test
CALL_WAIT = 120.0  # seconds for the person to get in and press the button
SLACK = 60.0  # seconds past the stillness before the unresponsive step is given up
EXPECTED = ("call", "unresponsive")


class Unavailable(Exception):
    """The service did not answer, or refused the test; the message says why."""


def main(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config: {problem}", file=err)
        return 2
    booth = config.booth(args.booth)
    if booth is None:
        known = ", ".join(b.id for b in config.booths)
        print(f"boothwatch test-booth: unknown booth {args.booth!r} (known: {known})", file=err)
        return 2
    if args.responder is not None and args.responder not in {r.id for r in config.responders}:
        print(f"boothwatch test-booth: unknown responder {args.responder!r}", file=err)
        return 2
    try:
        return asyncio.run(walk(config, booth, args.responder, out, call_wait=args.call_wait))
    except Unavailable as exc:
        print(f"boothwatch test-booth: {exc}", file=err)
        return 2


def base_url(config: Config) -> str:
    """The service's own address ([http] listen; an address for every interface is this box)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.http.host, config.http.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{config.http.port}"


async def walk(config: Config, booth: BoothConfig, tester: str | None, out: TextIO,
               call_wait: float = CALL_WAIT) -> int:
    token = os.environ.get("BOOTHWATCH_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{base_url(config)}/api/booths/{booth.id}/test"
    budget = min(call_wait + booth.stillness + SLACK, MAX_TEST)
    async with aiohttp.ClientSession(headers=headers) as http:
        test = await _call(http, "POST", url, {"until": budget, **(
            {"tester": tester} if tester else {})})
        zone = ZoneInfo(config.site.timezone)
        until = datetime.fromisoformat(test["until"]).astimezone(zone)
        say(out, f"Testing {booth.name} ({booth.id}) until {until:%H:%M}: its alarms page "
                 + (f"only {tester}." if tester else "nobody."))
        try:
            say(out, f"1. Go into {booth.name} and press the call button (within "
                     f"{format_duration(call_wait)}).")
            test = await _until(http, url, lambda t: "call" in _fired(t), call_wait)
            say(out, "   " + ("the call trigger fired" if "call" in _fired(test)
                              else "NO call trigger: is the button paired, its battery good?"))
            say(out, f"2. Now stay still, sitting, for {format_duration(booth.stillness)}.")
            test = await _until(http, url, lambda t: "unresponsive" in _fired(t),
                                booth.stillness + SLACK)
            say(out, "   " + ("the unresponsive trigger fired" if "unresponsive" in _fired(test)
                              else "NO unresponsive trigger: does the motion sensor see the "
                                   "booth?"))
        finally:
            test = await _call(http, "POST", f"{url}/end", None, missing_ok=True) or test
    return report(test, out)


def say(out: TextIO, line: str) -> None:
    print(line, file=out, flush=True)  # a person reads it as it happens


def _fired(test: dict[str, Any]) -> list[str]:
    return [f["trigger"] for f in test["fired"]]


async def _call(http: aiohttp.ClientSession, method: str, url: str,
                body: dict[str, Any] | None, missing_ok: bool = False) -> Any:
    try:
        async with http.request(method, url, json=body) as resp:
            answer = await resp.json(content_type=None)
            if resp.status == 409 and missing_ok:
                return None  # ended meanwhile (it expired): the last look stands
            if resp.status != 200:
                raise Unavailable(f"{method} {url}: HTTP {resp.status}: "
                                  f"{answer.get('error') if isinstance(answer, dict) else answer}")
            return answer
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise Unavailable(f"the service at {url} does not answer ({exc}): is boothwatch "
                          "running with this config?") from None


async def _until(http: aiohttp.ClientSession, url: str,
                 done: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
    """The test once `done` says so, or as it is when `timeout` runs out."""
    give_up = time.monotonic() + timeout
    while True:
        test: dict[str, Any] = await _call(http, "GET", url, None)
        if done(test) or not test["running"] or time.monotonic() >= give_up:
            return test
        await asyncio.sleep(POLL)


def report(test: dict[str, Any], out: TextIO) -> int:
    """What was heard and fired; 0 when both expected triggers fired, else 1."""
    say(out, "")
    say(out, "Devices heard:" if test["heard"] else "Devices heard: none")
    for device, kinds in sorted(test["heard"].items()):
        say(out, f"  {device}: {', '.join(kinds)}")
    silent = [d for d in test["devices"] if d not in test["heard"]]
    if silent:
        say(out, f"Configured but not heard: {', '.join(silent)}")
    fired = _fired(test)
    say(out, f"Triggers fired: {', '.join(dict.fromkeys(fired)) or 'none'}")
    missing = [t for t in EXPECTED if t not in fired]
    if missing:
        say(out, f"FAILED: {', '.join(missing)} did not fire")
        return 1
    say(out, "PASSED: the call and unresponsive triggers fired")
    return 0
