"""Self-monitoring: the broker-outage watch (pure, hand-stepped), its config key, and the
real `boothwatch run` talking sd_notify to a unix datagram socket bound by the test."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from alerts.delivery import Delivery
from monitor.config import ConfigError, parse_config
from monitor.core.selfwatch import (
    MonitoringDown,
    MonitoringRestored,
    Recipient,
    SelfWatch,
    State,
    outage_recipients,
)
from monitor.core.settings import ChannelConfig, ResponderConfig
from monitor.sdnotify import Notifier
from tests.harness.broker import Mosquitto, free_port
from tests.harness.process import ROOT, ServiceProcess
from tests.harness.receivers import Webhook
from tests.harness.site import example_site, service_site

ANA = Recipient("ana", ("pager",))
RUI = Recipient("rui", ("sms", "pager"))


class Watch:
    """A SelfWatch with a page limit of 60 s, a settle time of 10 s, and counted ids."""

    def __init__(self, now: float = 0.0, up: bool = True) -> None:
        self.picked: tuple[Recipient, ...] = (ANA,)
        self.ids = 0
        self.w = SelfWatch(60.0, 10.0, lambda now: (self.picked, False), self._id, now=now)
        if up:
            assert self.w.observe(True, now) == []

    def _id(self) -> str:
        self.ids += 1
        return f"o{self.ids}"


def test_a_short_drop_pages_nobody() -> None:
    """Down for less than the limit, then back: nothing is sent, no deadline is left."""
    t = Watch()
    assert t.w.observe(False, 100.0) == []
    assert t.w.next_deadline() == 160.0
    assert t.w.on_timer(159.9) == []
    assert t.w.observe(True, 159.9) == []
    assert t.w.state is State.UP and t.w.next_deadline() is None
    assert t.w.on_timer(1000.0) == []


def test_an_outage_pages_once_then_restored_to_the_same_people() -> None:
    """At the limit one MonitoringDown; while down nothing more; back and settled: restored."""
    t = Watch()
    t.w.observe(False, 100.0)
    assert t.w.observe(False, 130.0) == []  # a repeated observation does not move `since`
    (down,) = t.w.on_timer(160.0)
    assert down == MonitoringDown("o1", since=100.0, at=160.0, recipients=(ANA,),
                                  everyone=False)
    assert t.w.on_timer(400.0) == [] and t.w.observe(False, 500.0) == []
    assert t.w.next_deadline() is None  # no repeat page while it stays down
    t.picked = (RUI,)  # the duty changed meanwhile: the restored message still goes to Ana
    assert t.w.observe(True, 600.0) == []
    assert t.w.next_deadline() == 610.0
    assert t.w.on_timer(609.9) == []
    (back,) = t.w.on_timer(610.0)
    assert back == MonitoringRestored("o1", since=100.0, back=600.0, at=610.0,
                                      recipients=(ANA,))
    assert back.down_for == 500.0
    assert t.w.state is State.UP and t.w.on_timer(10_000.0) == []


def test_a_flapping_link_never_pages_twice() -> None:
    """Back and gone again while settling stays the same outage: one down, one restored."""
    t = Watch()
    t.w.observe(False, 0.0)
    sent = t.w.on_timer(60.0)
    now = 60.0
    for _ in range(20):  # up 5 s, down 1 s, twenty times: never settled
        now += 1
        sent += t.w.observe(True, now)
        now += 5
        sent += t.w.on_timer(now)
        sent += t.w.observe(False, now)
    assert [type(n) for n in sent] == [MonitoringDown]
    sent += t.w.observe(True, now + 1)
    sent += t.w.on_timer(now + 11)
    assert [type(n) for n in sent] == [MonitoringDown, MonitoringRestored]
    assert sent[1].since == 0.0 and sent[1].outage == sent[0].outage


def test_a_second_outage_is_paged_again_under_a_new_id() -> None:
    """Once per outage: after the restored message, the next long outage pages again."""
    t = Watch()
    t.w.observe(False, 0.0)
    t.w.on_timer(60.0)
    t.w.observe(True, 70.0)
    t.w.on_timer(80.0)
    t.w.observe(False, 90.0)
    (down,) = t.w.on_timer(150.0)
    assert isinstance(down, MonitoringDown) and (down.outage, down.since) == ("o2", 90.0)


def test_a_broker_never_reached_after_start_is_paged() -> None:
    """The watch starts down at the process start: a broker that never answers is paged."""
    t = Watch(now=1000.0, up=False)
    assert t.w.next_deadline() == 1060.0
    (down,) = t.w.on_timer(1060.0)
    assert isinstance(down, MonitoringDown) and down.since == 1000.0


def test_resume_after_a_restart_sends_only_the_restored_message() -> None:
    """Paged before a restart: no second down page, and the restored one to those told."""
    t = Watch(now=5000.0, up=False)
    t.w.resume("o-before", since=4000.0, recipients=[RUI])
    assert t.w.on_timer(5060.0) == []
    assert t.w.down_seconds(5060.0) == 1060.0
    t.w.observe(True, 5100.0)
    assert t.w.down_seconds(5100.0) == 0.0
    (back,) = t.w.on_timer(5110.0)
    assert back == MonitoringRestored("o-before", 4000.0, 5100.0, 5110.0, (RUI,))


def test_down_seconds_counts_the_link_not_the_outage() -> None:
    """The metric's seconds restart at each drop and are 0 while connected."""
    t = Watch()
    assert t.w.down_seconds(5.0) == 0.0
    t.w.observe(False, 10.0)
    assert t.w.down_seconds(25.0) == 15.0
    t.w.observe(True, 30.0)
    assert t.w.down_seconds(31.0) == 0.0


def test_limits_are_checked() -> None:
    """A zero page limit would page on every blip; refused."""
    with pytest.raises(ValueError):
        SelfWatch(0.0, 10.0, lambda now: ((), False), str, now=0.0)


# --- who is told --------------------------------------------------------------------------

CHANNELS = {
    "pager": ChannelConfig("pager", "webhook", url="http://x/"),
    "radio": ChannelConfig("radio", "mqtt"),
    "sms": ChannelConfig("sms", "apprise", url="x://y"),
}


def _responder(rid: str, *channels: str) -> ResponderConfig:
    return ResponderConfig(id=rid, name=rid.title(), roles=("nurse",), channels=channels)


def test_recipients_on_duty_over_their_channels_without_mqtt() -> None:
    """On-duty staff only, each over their non-MQTT channels in fallback order."""
    people = [_responder("ana", "radio", "sms", "pager"), _responder("bo", "pager"),
              _responder("cy", "radio")]
    got = outage_recipients(people, CHANNELS, lambda rid: rid in ("ana", "cy"))
    assert got == ((Recipient("ana", ("sms", "pager")),), False)


def test_recipients_fall_back_to_everyone_reachable_when_nobody_on_duty_is() -> None:
    """Nobody on duty (or only over MQTT): everyone reachable is told, and it says so."""
    people = [_responder("ana", "pager"), _responder("bo", "radio", "sms"),
              _responder("cy", "radio")]
    everyone = ((Recipient("ana", ("pager",)), Recipient("bo", ("sms",))), True)
    assert outage_recipients(people, CHANNELS, lambda rid: False) == everyone
    assert outage_recipients(people, CHANNELS, lambda rid: rid == "cy") == everyone
    assert outage_recipients([_responder("cy", "radio")], CHANNELS, lambda r: True) == ((), True)


def test_a_console_nobody_watches_tells_nobody_that_monitoring_is_down() -> None:
    """An unwatched console is left out like MQTT; a watched one (the demo's) is used."""
    channels = {**CHANNELS, "screen": ChannelConfig("screen", "console"),
                "tty": ChannelConfig("tty", "console", watched=True)}
    people = [_responder("ana", "screen", "pager"), _responder("bo", "screen", "tty")]
    assert outage_recipients(people, channels, lambda rid: True) == (
        (Recipient("ana", ("pager",)), Recipient("bo", ("tty",))), False)
    assert outage_recipients([_responder("cy", "screen")], channels, lambda r: True) == (
        (), True)


# --- how channels carry a system message --------------------------------------------------


def _system(priority: str) -> Delivery:
    return Delivery(page_id="p1", incident="outage-1", responder="ana", level=0,
                    channels=("phone",), kind="system", payload={
                        "kind": "system", "event": "monitoring_down", "priority": priority,
                        "title": "MONITORING DOWN · Sala Mouraria", "message": "check booths"})


async def test_channels_send_monitoring_down_loudly_and_restored_quietly() -> None:
    """ntfy at max priority, Pushover at high (never an emergency), Apprise as a failure,
    the console as [SYSTEM]; restored (low) at ordinary loudness."""
    import io

    import aiohttp
    import apprise

    from alerts.channels.apprise import AppriseChannel
    from alerts.channels.console import ConsoleChannel
    from alerts.channels.ntfy import NtfyChannel
    from alerts.channels.pushover import PushoverChannel

    async with aiohttp.ClientSession() as session:
        ntfy = NtfyChannel(ChannelConfig("phone", "ntfy", url="http://127.0.0.1:1"), session)
        down = ntfy.message(_system("high"), "ana-topic")
        assert (down["priority"], down["title"]) == (5, "MONITORING DOWN · Sala Mouraria")
        assert "actions" not in down and "click" not in down  # nothing to acknowledge
        assert ntfy.message(_system("low"), "ana-topic")["priority"] == 3
        po = PushoverChannel(ChannelConfig("po", "pushover", url="http://127.0.0.1:1",
                                           token="t"), session)
        assert po.form(_system("high"), "u")["priority"] == "1"
        assert "retry" not in po.form(_system("high"), "u")
        assert po.form(_system("low"), "u")["priority"] == "0"
    sms = AppriseChannel(ChannelConfig("sms", "apprise", url="json://127.0.0.1:1/"))
    assert sms.notify_type(_system("high")) == apprise.NotifyType.FAILURE
    out = io.StringIO()
    await ConsoleChannel(ChannelConfig("screen", "console"), out).send(_system("high"), None)
    assert out.getvalue() == "[SYSTEM] check booths -> ana\n"


# --- the config key ------------------------------------------------------------------------


def _mqtt_problems(**mqtt: object) -> list[str]:
    data = example_site().document()
    data["mqtt"].update(mqtt)
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    return [p for p in info.value.problems if p.startswith("mqtt.outage_page_after")]


def test_outage_page_after_default_and_value() -> None:
    """Default 60 s; a duration string is read like every other duration."""
    data = example_site().document()
    assert parse_config(data, {}).mqtt.outage_page_after == 60.0
    data["mqtt"]["outage_page_after"] = "2m"
    assert parse_config(data, {}).mqtt.outage_page_after == 120.0


@pytest.mark.parametrize(("value", "words"), [
    ("0s", "greater than 0"), ("2h", "at most 1h"), ("soon", "soon"), (True, "got true"),
])
def test_outage_page_after_mistakes_are_named_by_key(value: object, words: str) -> None:
    """Zero, over an hour, or not a duration: a problem under mqtt.outage_page_after."""
    problems = _mqtt_problems(outage_page_after=value)
    assert len(problems) == 1 and words in problems[0], problems


# --- sd_notify ------------------------------------------------------------------------------


def test_notifier_is_a_no_op_without_systemd() -> None:
    """No NOTIFY_SOCKET: nothing is sent and nothing fails."""
    n = Notifier({"WATCHDOG_USEC": "1000000"})
    assert not n.enabled and n.watchdog_interval is None
    assert n.ready("x") is False and n.stopping("x") is False


def test_notifier_watchdog_interval_is_half_and_only_for_our_pid(tmp_path: Path) -> None:
    """WATCHDOG_USEC halved; a WATCHDOG_PID naming another process means no pings."""
    sock = str(tmp_path / "n.sock")
    assert Notifier({"NOTIFY_SOCKET": sock, "WATCHDOG_USEC": "3000000"}).watchdog_interval == 1.5
    other = {"NOTIFY_SOCKET": sock, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}
    assert Notifier(other, pid=4242).watchdog_interval is None
    assert Notifier({**other, "WATCHDOG_PID": "4242"}, pid=4242).watchdog_interval == 1.5


def test_notifier_reaches_an_abstract_socket() -> None:
    """An address starting with @ is in the abstract namespace, as systemd may hand out."""
    name = f"boothwatch-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(5)
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready("serving\nsoon") is True
        assert server.recv(4096) == b"READY=1\nSTATUS=serving soon\n"
        n.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A unix datagram socket bound where NOTIFY_SOCKET will point, as systemd's is."""
    # unix socket paths are short (108 bytes): pytest's tmp_path can be longer
    path = Path("/tmp") / f"bw-notify-{os.getpid()}-{time.monotonic_ns()}.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        try:
            yield sock
        finally:
            path.unlink(missing_ok=True)


class Received:
    """Datagrams from the service, each split into its KEY=VALUE lines, with arrival times."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.messages: list[tuple[float, dict[str, str]]] = []

    async def until(self, key: str, count: int = 1, timeout: float = 20.0) -> list[float]:
        """Wait until ``count`` datagrams carried ``key``; return their arrival times."""
        deadline = time.monotonic() + timeout
        while True:
            while True:
                try:
                    data = self.sock.recv(65536)
                except BlockingIOError:
                    break
                fields = dict(line.split("=", 1) for line in data.decode().splitlines())
                self.messages.append((time.monotonic(), fields))
            times = [t for t, m in self.messages if key in m]
            if len(times) >= count:
                return times
            if time.monotonic() > deadline:
                raise TimeoutError(f"{key} x{count} not received: {self.messages}")
            await asyncio.sleep(0.02)

    def statuses(self) -> list[str]:
        return [m["STATUS"] for _, m in self.messages if "STATUS" in m]


@pytest.mark.integration
async def test_run_speaks_sd_notify_ready_watchdog_stopping(
    tmp_path: Path, mosquitto: Mosquitto, notify_socket: socket.socket
) -> None:
    """The real process: READY once serving, WATCHDOG about every half WATCHDOG_USEC,
    STATUS lines that say what is going on, STOPPING on SIGTERM, exit 0."""
    http_port = free_port()
    async with Webhook() as hook:
        site = service_site(mqtt_port=mosquitto.port, http_port=http_port, webhook_url=hook.url,
                            store=tmp_path / "boothwatch.db")
        svc = ServiceProcess.of(site, tmp_path, env={
            "NOTIFY_SOCKET": notify_socket.getsockname(), "WATCHDOG_USEC": "1000000"})
        started = time.monotonic()
        svc.start()
        assert svc.proc is not None
        proc = svc.proc
        got = Received(notify_socket)
        try:
            (ready_at,) = await got.until("READY")
            # READY comes after start and subscription: /readyz agrees at that moment
            import aiohttp

            async with aiohttp.ClientSession() as http, http.get(
                    f"http://127.0.0.1:{http_port}/readyz") as resp:
                assert resp.status == 200
            assert ready_at > started
            # sent only once subscribed: its own STATUS says the broker is connected
            ready = next(m for _, m in got.messages if "READY" in m)
            assert "broker connected" in ready.get("STATUS", ""), ready
            pings = await got.until("WATCHDOG", count=6)
            gaps = [b - a for a, b in itertools.pairwise(pings[1:])]
            # every ~0.5 s: never as late as the 1 s after which systemd would kill us
            assert all(0.2 < g < 1.0 for g in gaps), gaps
            assert any("watching 2 booths" in s and "broker connected" in s
                       for s in got.statuses()), got.statuses()
            proc.send_signal(signal.SIGTERM)
            await got.until("STOPPING")
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stopping = next(m for _, m in got.messages if "STOPPING" in m)
        assert stopping["STOPPING"] == "1" and "stopping" in stopping["STATUS"]
        keys = [m for _, m in got.messages]
        first_ready = next(i for i, m in enumerate(keys) if "READY" in m)
        assert first_ready < next(i for i, m in enumerate(keys) if "STOPPING" in m)


# --- the unit file ----------------------------------------------------------------------------

UNIT = ROOT / "deploy" / "systemd" / "boothwatch.service"


def test_unit_file_declares_notify_and_watchdog() -> None:
    """Type=notify with a watchdog and NotifyAccess=main: what the service speaks."""
    lines = {line.split("=", 1)[0]: line.split("=", 1)[1]
             for line in UNIT.read_text().splitlines() if "=" in line and line[0] not in "#;"}
    assert lines["Type"] == "notify"
    assert lines["NotifyAccess"] == "main"
    assert lines["WatchdogSec"].rstrip("s").isdigit()
    assert lines["Restart"] == "always"


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit (with our ExecStart paths stubbed)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    # verify checks that ExecStart binaries exist: point them at a stand-in under tmp_path
    binary = tmp_path / "opt" / "boothwatch" / "bin" / "boothwatch"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    unit = tmp_path / "boothwatch.service"
    unit.write_text(UNIT.read_text().replace("/opt/boothwatch/bin/boothwatch", str(binary)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "boothwatch.service" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr
