"""`boothwatch demo`: the whole service in one process, with four simulated booths.

An embedded amqtt broker (pure Python, MQTT 3.1.1 only) listens on a free
127.0.0.1 port, so a Mosquitto already on 1883 does not matter. The real
`Runtime` runs against it with thresholds short enough to watch, pages go to
the console channel (stdout), and the simulator plays one story per booth.
Nothing is special-cased in the service: the demo runs the code a site runs.

Why the broker config looks as it does (amqtt 0.12.1, checked against its source
and with our `MqttLink`): QoS 1 with our manual acks and ``clean_session=False``
works while connected, but amqtt keeps nothing for a client that is away. It
drops a message whose PUBACK takes over 5 s, and one unacknowledged when the
connection drops; it discards an anonymous client's session as soon as it
disconnects; and for a client with a username it does queue messages, but
replays them with the retain flag set, which the service rightly rejects as
snapshots. So the demo stays anonymous and persists nothing in the broker: the
two live and die together in this process, and the service is never away from
this broker while booths talk.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from typing import Any, NoReturn

from amqtt.broker import Broker
from amqtt.errors import BrokerError

from devices import simulator as sim
from monitor.config import ConfigError, parse_config
from monitor.core.durations import format_duration
from monitor.core.settings import Config
from monitor.runtime import Runtime

SITE = "demo"
BOOTHS = ("b1", "b2", "b3", "b4")
STILLNESS = 20.0
LONG_SESSION = 45.0
CALL_AT = 3.0  # the call button is pressed this long after the booths start talking
_BROKER_ATTEMPTS = 3  # a free port can be taken by someone else before the broker binds it


def scenario() -> Iterator[sim.Step]:
    """Booth 1 calls, Booth 2 overdoses, Booth 3 stays long, Booth 4 is fine; heartbeats."""
    return sim.merge(
        sim.delayed(sim.call("b1"), CALL_AT),
        sim.overdose("b2"),
        sim.long_session("b3"),
        sim.normal("b4"),
        sim.heartbeats(BOOTHS),
    )


def demo_config(mqtt_port: int, http: str, db: str, speed: float) -> Config:
    """The demo site; every threshold and escalation delay is divided by `speed`."""

    def s(seconds: float) -> float:
        return seconds / speed

    data: dict[str, Any] = {
        "site": {"id": SITE, "name": "boothwatch demo", "timezone": "Europe/Lisbon"},
        "mqtt": {
            "url": f"mqtt://127.0.0.1:{mqtt_port}",
            "client_id": "boothwatch-demo",
            "protocol": "3.1.1",  # amqtt speaks nothing else
        },
        "store": {"path": db},
        "http": {"listen": http, "public_url": f"http://{http}"},
        "defaults": {"stillness": s(STILLNESS), "long_session": s(LONG_SESSION)},
        "booths": [{"id": b, "name": f"Booth {b[1:]}"} for b in BOOTHS],
        # the newcomer watches this terminal: a page printed there has reached a person
        "channels": {"screen": {"type": "console", "watched": True}},
        "responders": [
            {"id": "ana", "name": "Ana", "roles": ["nurse"], "channels": ["screen"]},
            {"id": "rui", "name": "Rui", "roles": ["coordinator"], "channels": ["screen"]},
        ],
        "escalation": {
            "high": {
                "steps": [
                    {"after": 0, "notify": ["role:nurse"]},
                    {"after": s(15), "notify": ["role:nurse", "role:coordinator"]},
                ],
                "repeat": s(30),
                "ack_timeout": s(40),
            },
            "medium": {
                "steps": [{"after": 0, "notify": ["role:nurse"]}],
                "repeat": s(60),
                "ack_timeout": s(60),
            },
            "low": {"steps": [{"after": 0, "notify": ["role:coordinator"]}]},
        },
    }
    return parse_config(data, os.environ, source="boothwatch demo")


def banner(config: Config, speed: float) -> str:
    base = config.http.public_url
    booths = config.booths

    def about(seconds: float) -> str:
        return "~" + format_duration(seconds / speed)

    return "\n".join([
        "boothwatch demo: the whole service in one process, with four simulated booths",
        f"  MQTT broker  {config.mqtt.url} (embedded amqtt, MQTT 3.1.1)",
        f"  HTTP         {base}",
        f"  database     {config.store.path}",
        "",
        "In the next minute (pages appear below as [PAGE] lines; logs go to stderr):",
        f"  {booths[0].name}  the call button is pressed      -> a high page within seconds",
        f"  {booths[1].name}  a person moves, then goes still -> \"no movement\" page "
        f"{about(STILLNESS)} later",
        f"  {booths[2].name}  a session runs too long         -> a medium page after "
        f"{about(LONG_SESSION)}",
        f"  {booths[3].name}  a normal short session          -> no page",
        f"A high page nobody acknowledges goes to the coordinator too after {about(15)},",
        f"and repeats every {about(30)}.",
        "",
        "Acknowledge: open the ack link printed in a page, or",
        f"  curl -X POST {base}/api/incidents/<id>/ack -H 'content-type: application/json' "
        """-d '{"responder":"ana"}'""",
        f"Look: {base}/api/booths",
        f"      {base}/api/incidents?state=all",
        f"      {base}/metrics",
        "Ctrl-C to stop.",
        "",
    ])


async def run_demo(http: str, db: str | None, speed: float) -> None:
    """Run broker, service and simulator until cancelled; then stop all three cleanly."""
    if not (math.isfinite(speed) and speed > 0):
        _fail(f"--speed must be a positive number, got {speed!r}")
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)
    db = db or os.path.join(tempfile.mkdtemp(prefix="boothwatch-demo-"), "demo.db")
    broker, config = await _start_broker(http, db, speed)
    try:
        print(banner(config, speed), flush=True)
        runtime = Runtime(config)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(runtime.run(), name="runtime")
            tg.create_task(_simulate(runtime, broker, config, speed), name="simulator")
    finally:
        await broker.shutdown()


async def _start_broker(http: str, db: str, speed: float) -> tuple[Any, Config]:
    """A started broker on a free port, and the demo config that points at it."""
    attempt = 0
    while True:
        attempt += 1
        port = _free_port()
        try:
            config = demo_config(port, http, db, speed)
        except ConfigError as exc:
            _fail("; ".join(exc.problems))
        _check_can_listen(config)
        broker = Broker({
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            # only the auth plugin: the default set adds $SYS topics and packet logging
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        })
        try:
            await broker.start()
        except BrokerError:
            if attempt == _BROKER_ATTEMPTS:
                raise
            continue
        return broker, config


async def _simulate(runtime: Runtime, broker: Any, config: Config, speed: float) -> None:
    await runtime.started.wait()
    # the broker drops what nobody subscribes to: wait until the service is listening
    while runtime.topics.events not in broker.subscriptions:  # noqa: ASYNC110 - amqtt has no event
        await asyncio.sleep(0.05)
    await sim.play(config.mqtt.url, SITE, scenario(), speed, "3.1.1")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _check_can_listen(config: Config) -> None:
    """Say plainly that --http is taken, rather than fail later inside the service."""
    host, port = config.http.host, config.http.port
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp does
            sock.bind(address)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
              "choose another address with --http HOST:PORT")


def _fail(message: str) -> NoReturn:
    print(f"boothwatch demo: {message}", file=sys.stderr)
    raise SystemExit(2)
