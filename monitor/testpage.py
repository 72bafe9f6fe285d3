"""`boothwatch test-page`: a clearly marked test page through each real channel.

Like a fire-alarm test: it builds the site's real channels from the config
(an mqtt channel connects to the config's broker for the moment of the test,
under its own client id so the running service keeps its session), sends one
``kind="test"`` delivery to the responder on each of their channels (or only
``--channel``), one attempt each and no fallback, and reports per channel:
delivered or failed, latency, the service's receipt and the reason.

"Delivered" means the channel's service accepted the page (HTTP 2xx, broker
PUBACK, Apprise success); whether the phone rang is for the responder to
confirm, and the last line says so. A console nobody watches prints the test
page here but fails the test, as the service counts it: it reaches nobody.

Exit status: 0 when every channel delivered, 1 when one failed, 2 for a config
problem or an unknown responder or channel.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import os
import sys
import time
import zoneinfo
from collections.abc import AsyncIterator, Sequence
from typing import TextIO

import aiohttp
from ulid import ULID

from alerts.channels.mqtt import Publish
from alerts.delivery import PRINTED_ONLY, Channel, Delivery, DeliveryError
from alerts.factory import build_channels
from devices.mqtt import MqttLink, NotConnected
from monitor import i18n
from monitor.config import ConfigError, load_config
from monitor.core.settings import Config, ResponderConfig
from monitor.core.words import test_page_message
from monitor.i18n import Language
from monitor.logs import protect

MQTT_CONNECT_TIMEOUT = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    channel: str
    type: str
    ok: bool
    latency: float  # seconds
    receipt: str | None = None
    reason: str | None = None


def main(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config: {problem}", file=err)
        return 2
    protect(config, os.environ)  # a library's log line (Apprise's) names no one
    chosen = choose(config, args.responder, args.channel)
    if isinstance(chosen, str):
        print(f"boothwatch test-page: {chosen}", file=err)
        return 2
    responder, names = chosen
    outcomes = asyncio.run(send_test_pages(config, responder, names))
    return report(outcomes, responder, out)


def choose(
    config: Config, responder_id: str, channel: str | None
) -> tuple[ResponderConfig, tuple[str, ...]] | str:
    """The responder and the channels to test, or why not."""
    responder = next((r for r in config.responders if r.id == responder_id), None)
    if responder is None:
        known = ", ".join(r.id for r in config.responders)
        return f"unknown responder {responder_id!r} (known: {known})"
    if channel is None:
        return responder, responder.channels
    if channel not in responder.channels:
        where = "one of" if channel in config.channels else "a channel of the config nor"
        return (f"{channel!r} is not {where} {responder.id}'s channels "
                f"({', '.join(responder.channels)})")
    return responder, (channel,)


def delivery_for(config: Config, responder: ResponderConfig, channel: str,
                 language: Language) -> Delivery:
    """One test page to `responder` over `channel` only, in the site's language."""
    page_id = f"test-{ULID()}"
    payload = test_payload(config, responder, channel, time.time(), language)
    return Delivery(page_id, page_id, responder.id, 0, (channel,), payload,
                    addresses=dict(responder.address), kind="test")


def test_payload(config: Config, responder: ResponderConfig, channel: str, at: float,
                 language: Language, ack_url: str | None = None) -> dict[str, object]:
    """What a test page says, in the site's language; with `ack_url` (a scheduled
    self-test) it asks for a tap."""
    # in the site's time, with its offset: the responder reads it on a phone, in the room
    when = datetime.datetime.fromtimestamp(at, zoneinfo.ZoneInfo(config.site.timezone)
                                           ).isoformat(sep=" ", timespec="seconds")
    payload: dict[str, object] = {
        "kind": "test",
        "site": config.site.id,
        "responder": responder.id,
        "message": language.say(test_page_message(config.site.name, responder.name, channel,
                                                  when, answer=ack_url is not None)),
    }
    if ack_url is not None:
        payload["ack_url"] = ack_url
    return payload


async def send_test_pages(
    config: Config, responder: ResponderConfig, names: Sequence[str], stream: TextIO = sys.stdout,
) -> list[Outcome]:
    """Send one test delivery per channel in `names`, at once; outcomes in `names` order."""
    needs_mqtt = any(config.channels[name].type == "mqtt" for name in names)
    language = i18n.load(config.site.language, config.site.catalogs)  # checked with the config
    async with aiohttp.ClientSession() as session, _mqtt(config, needs_mqtt) as publish:
        channels = build_channels(
            {name: config.channels[name] for name in names}, session, publish, config.site.id,
            stream, gettext=language.gettext, policies=config.escalation,
        )
        return list(await asyncio.gather(*(
            _attempt(channels[name], delivery_for(config, responder, name, language), responder)
            for name in names
        )))


async def _attempt(channel: Channel, delivery: Delivery, responder: ResponderConfig) -> Outcome:
    started = time.monotonic()
    try:
        receipt = await channel.send(delivery, responder.address.get(channel.name))
    except DeliveryError as exc:
        reason = str(exc) or "delivery failed"
    except Exception as exc:  # a bug in a channel: still a failed test, with its name
        reason = f"internal error: {type(exc).__name__}: {exc}"
    else:
        if channel.reaches_a_person:
            return Outcome(channel.name, channel.type, True, time.monotonic() - started, receipt)
        reason = PRINTED_ONLY
    return Outcome(channel.name, channel.type, False, time.monotonic() - started, reason=reason)


@contextlib.asynccontextmanager
async def _mqtt(config: Config, wanted: bool) -> AsyncIterator[Publish]:
    """A publish function on a short-lived connection to the config's broker (if wanted)."""

    async def not_connected(topic: str, payload: bytes) -> None:
        raise DeliveryError(f"broker not connected within {MQTT_CONNECT_TIMEOUT:g}s")

    if not wanted:
        yield not_connected
        return
    # Our own client id: connecting with the service's would take over its session.
    mqtt_config = dataclasses.replace(config.mqtt, client_id=f"{config.mqtt.client_id}-test-page",
                                      session_expiry=0)
    connected = asyncio.Event()
    link = MqttLink(mqtt_config, subscriptions=[], on_message=lambda msg, gen: None,
                    on_connected=lambda present: connected.set())
    runner = asyncio.create_task(link.run(), name="test-page mqtt")
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(MQTT_CONNECT_TIMEOUT):
                await connected.wait()

        async def publish(topic: str, payload: bytes) -> None:
            try:
                await link.publish_confirmed(topic, payload)
            except NotConnected as exc:
                raise DeliveryError(str(exc)) from None

        yield publish if connected.is_set() else not_connected
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await link.close()


def report(outcomes: Sequence[Outcome], responder: ResponderConfig, out: TextIO) -> int:
    """Print one line per channel and a verdict; the exit status (0 all delivered, else 1)."""
    for o in outcomes:
        head = f"{o.channel} ({o.type}): "
        took = f"{o.latency * 1000:.0f} ms"
        if o.ok:
            line = head + f"delivered in {took}" + (f", receipt {o.receipt}" if o.receipt else "")
        else:
            line = head + f"FAILED after {took}: {o.reason}"
        print(line, file=out)
    delivered = sum(o.ok for o in outcomes)
    if delivered == len(outcomes):
        print(f"all {delivered} channel(s) delivered; ask {responder.name} to confirm the test "
              "page arrived on each", file=out)
        return 0
    print(f"FAILED: {len(outcomes) - delivered} of {len(outcomes)} channel(s) did not deliver",
          file=out)
    return 1
