"""`boothwatch demo`: the whole service in one process, with four simulated booths.

An embedded amqtt broker (pure Python, MQTT 3.1.1 only) listens on a free
127.0.0.1 port, so a Mosquitto already on 1883 does not matter. The real
`Runtime` runs against it with thresholds short enough to watch, pages go to
the console channel (stdout, a terminal a person watches: `watched = true`),
and the simulator plays one story per booth. Nothing is special-cased in the
service: the demo runs the code a site runs.

The terminal is for the person watching: the banner, then one line per page
and notice (the console channel) and per incident change (a client of the
broker reading the incidents topic, as a dashboard would). The service's logs
go to a file in the demo's directory, or to stderr with ``--verbose``.

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
import dataclasses
import json
import logging
import math
import os
import secrets
import socket
import sys
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn, TextIO

from amqtt.broker import Broker
from amqtt.errors import BrokerError

from devices import simulator as sim
from devices.mqtt import Message, MqttLink
from monitor.api import TOKEN_ENV
from monitor.config import ConfigError, parse_config
from monitor.core.durations import format_duration
from monitor.core.settings import Config
from monitor.logs import LogFormat, configure
from monitor.runtime import Runtime
from monitor.station import PASSWORD_ENV
from monitor.topics import Topics

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


def banner(config: Config, speed: float, log_file: str | None, password: str, token: str
           ) -> str:
    base = config.http.public_url
    booths = config.booths

    def about(seconds: float) -> str:
        return "~" + format_duration(seconds / speed)

    return "\n".join([
        "boothwatch demo: the whole service in one process, with four simulated booths",
        f"  board        {base}/board  (open it in a browser; password: {password})",
        f"  MQTT broker  {config.mqtt.url} (embedded amqtt, MQTT 3.1.1)",
        f"  HTTP         {base}",
        f"  database     {config.store.path}",
        f"  logs         {log_file} (--verbose: on stderr instead)" if log_file
        else "  logs         on stderr (--verbose)",
        "",
        "In the next minute, below: a [PAGE] line per page (its ack link under it),",
        "an [INCIDENT] line per incident change, a [NOTICE] line per notice.",
        f"  {booths[0].name}  the call button is pressed      -> a high page within seconds",
        f"  {booths[1].name}  a person moves, then goes still -> \"no movement\" page "
        f"{about(STILLNESS)} later",
        f"  {booths[2].name}  a session runs too long         -> a medium page after "
        f"{about(LONG_SESSION)}",
        f"  {booths[3].name}  a normal short session          -> no page",
        f"A high page nobody acknowledges goes to the coordinator too after {about(15)},",
        f"and repeats every {about(30)}.",
        "",
        "Acknowledge: on the board, with the ack link printed under a page, or, with the",
        "id an [INCIDENT] line gives:",
        f"  curl -X POST {base}/api/incidents/<id>/ack -H 'Authorization: Bearer {token}' \\",
        """       -H 'content-type: application/json' -d '{"responder":"ana"}'""",
        f"Look (in the browser logged in at the board; curl with the token): {base}/api/booths",
        f"      {base}/api/incidents?state=all",
        f"      {base}/metrics",
        "Ctrl-C to stop.",
        "",
    ])


async def run_demo(http: str, db: str | None, speed: float, *, verbose: bool = False,
                   log_format: LogFormat = "console") -> None:
    """Run broker, service and simulator until cancelled; then stop all three cleanly.

    Logs go to ``demo.log`` in the demo's new directory, or to stderr when `verbose`.
    """
    if not (math.isfinite(speed) and speed > 0):
        _fail(f"--speed must be a positive number, got {speed!r}")
    workdir = tempfile.mkdtemp(prefix="boothwatch-demo-")
    log_file = None if verbose else os.path.join(workdir, "demo.log")
    _configure_logs(log_format, log_file)
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)
    db = db or os.path.join(workdir, "demo.db")
    broker, config = await _start_broker(http, db, speed)
    # the station's login and the API's token: those set for this demo's process, else
    # fresh ones each run (with a station password, /api/... needs one or the other)
    env = {**os.environ}
    password = env.setdefault(PASSWORD_ENV, f"demo-{secrets.token_hex(3)}")
    token = env.setdefault(TOKEN_ENV, secrets.token_urlsafe(12))
    try:
        print(banner(config, speed, log_file, password, token), flush=True)
        runtime = Runtime(config, env=env)
        watcher = _watch_incidents(config, sys.stdout)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(runtime.run(), name="runtime")
            tg.create_task(watcher.run(), name="incident watcher")
            tg.create_task(_simulate(runtime, broker, config, speed), name="simulator")
    finally:
        await broker.shutdown()


class IncidentLines:
    """One line for a person per change of an incident worth telling: opened, a new
    trigger, acknowledged, someone at the booth (or the person answered), open again,
    resolved. Reads the incident JSON of the incidents topic (interface section 5)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, str, tuple[str, ...]]] = {}

    def line(self, incident: Mapping[str, Any]) -> str | None:
        """The line for this version of the incident, or None when nothing worth a line
        changed (an escalation step: its pages have their own lines)."""
        state, priority = str(incident.get("state")), str(incident.get("priority"))
        triggers = tuple(str(t) for t in incident.get("triggers") or ())
        now = (state, priority, triggers)
        key = str(incident.get("id"))
        # a demo's few incidents, all kept: an outcome recorded later says nothing new
        before, self._last[key] = self._last.get(key), now
        if before == now:
            return None
        what = f"{priority}: {', '.join(triggers)}"
        response = incident.get("response") or {}

        def after(key: str) -> str:
            seconds = response.get(key)
            return "" if seconds is None else f" after {format_duration(round(seconds))}"

        if before is None:
            text = f"opened ({what}), id {incident.get('id')}"
        elif state == "acknowledged" and before[0] != state:
            text = f"acknowledged by {incident.get('acknowledged_by')}{after('to_acknowledge')}"
        elif state == "attended" and before[0] != state and incident.get("presence_by") is None:
            # attended by the person's answer through the door: nobody is at the booth
            answers = [s for s in incident.get("steps") or () if s.get("step") == "answered"]
            who = answers[-1].get("responder") if answers else "staff"
            text = f"the person answered {who}: nobody else need come"
        elif state == "attended" and before[0] != state:
            text = f"{incident.get('presence_by')} at the booth{after('to_presence')}"
        elif state == "resolved":
            by = incident.get("resolved_by")
            text = (f"resolved{f' by {by}' if by else ''}{after('to_resolve')} "
                    f"({incident.get('outcome')})")
        elif state == "open" and before[0] != state:
            text = f"open again ({what}): escalation goes on"
        else:
            text = f"now {what}"
        return f"[INCIDENT] {incident.get('booth_name') or incident.get('booth')}: {text}"


def _watch_incidents(config: Config, out: TextIO) -> MqttLink:
    """A client of the broker that prints `IncidentLines` as incidents change."""
    lines = IncidentLines()

    def on_message(message: Message, generation: int) -> None:
        try:
            incident = json.loads(message.payload)
        except ValueError:
            incident = None
        if isinstance(incident, dict) and (line := lines.line(incident)) is not None:
            print(line, file=out, flush=True)
        link.ack(message.mid, generation)

    own = dataclasses.replace(config.mqtt, client_id=f"{config.mqtt.client_id}-watch")
    link = MqttLink(own, subscriptions=[Topics(config.site.id).incident("+")],
                    on_message=on_message)
    return link


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
    # the broker drops what nobody subscribes to: wait until the service and the incident
    # watcher are listening
    topics = (runtime.topics.events, runtime.topics.incident("+"))
    while not all(t in broker.subscriptions for t in topics):  # noqa: ASYNC110 - amqtt has no event
        await asyncio.sleep(0.05)
    await sim.play(config.mqtt.url, SITE, scenario(), speed, "3.1.1")


def _configure_logs(log_format: LogFormat, path: str | None) -> None:
    """Logs to the file at `path`, else to stderr."""
    # the file stays open for the life of the process: a logger keeps its stream once used
    configure(log_format, stream=None if path is None
              else open(path, "a", encoding="utf-8", buffering=1))


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
