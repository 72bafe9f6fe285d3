"""The MQTT adapter against a real Mosquitto: what happens while a connection is being opened.

paho's ``connect()`` opens the socket in an executor thread (so a slow broker does not block
the loop) while the loop may be publishing: restored incidents are paged and announced the
moment the service starts. The crash harness once caught a restart that published in the
instant between the socket opening and the CONNECT being queued: the PUBLISH went out first,
the broker dropped the connection as a protocol error, and the service waited 15 s for a
CONNACK that could not come, hearing no acks meanwhile. These tests force that instant.

And the socket the adapter tunes for a broker that is not tuned (Mosquitto's default: no
``set_tcp_nodelay``): see docs/architecture/latency.md for the 40 ms it cost a call press.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
import structlog.testing
from paho.mqtt.enums import CallbackAPIVersion

from devices.mqtt import TCP_QUICKACK, Message, MqttLink, Order
from monitor.core.settings import MqttConfig
from tests.harness.broker import Mosquitto, Publisher

WAIT = 20.0  # longer than the adapter's own 15 s CONNACK timeout, so a stall shows as a retry


class Listener:
    """A plain paho client in its own thread, recording what reaches ``topic``."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.got = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError("listener: no SUBACK")

    def _message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self.got:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self.got.notify_all()

    def wait_for(self, count: int, timeout: float = WAIT) -> list[tuple[str, bytes, bool]]:
        with self.got:
            self.got.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def listener(mosquitto: Mosquitto) -> Iterator[Listener]:
    lst = Listener(mosquitto, "race/#")
    yield lst
    lst.close()


@contextlib.asynccontextmanager
async def running(link: MqttLink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(link.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await link.close()


def make_link(broker: Mosquitto, client_id: str) -> tuple[MqttLink, asyncio.Event]:
    """The adapter, and an event set once it is connected and subscribed."""
    cfg = MqttConfig(url=broker.url, host=broker.host, port=broker.port, tls=False,
                     client_id=client_id)
    up = asyncio.Event()
    link = MqttLink(cfg, subscriptions=["race-in/#"], on_message=lambda _m, _g: None,
                    on_link=lambda ready: up.set() if ready else None)
    return link, up


async def wait_up(up: asyncio.Event) -> bool:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(WAIT):
            await up.wait()
    return up.is_set()


def publish_when_the_socket_opens(link: MqttLink, loop: asyncio.AbstractEventLoop,
                                  opened: list[float]) -> None:
    """Make every connection attempt publish from the loop between paho's socket opening and
    its CONNECT being queued: the window the executor thread leaves open."""
    client: paho.Client = link._client  # the paho client the adapter drives
    hook = client.on_socket_open

    def on_socket_open(c: paho.Client, userdata: Any, sock: Any) -> None:
        assert hook is not None
        hook(c, userdata, sock)
        opened.append(time.monotonic())
        done = threading.Event()

        def publish_now() -> None:
            n = len(opened)
            link.publish(f"race/incident/{n}", b"raised", qos=1)
            link.publish(f"race/state/{n}", b"occupied", qos=0, retain=True)
            done.set()

        loop.call_soon_threadsafe(publish_now)
        assert done.wait(5), "the loop did not run the publish"

    client.on_socket_open = on_socket_open


async def test_a_publish_while_the_socket_opens_does_not_break_the_connection(
        mosquitto: Mosquitto, listener: Listener) -> None:
    link, up = make_link(mosquitto, "race-publish")
    opened: list[float] = []
    publish_when_the_socket_opens(link, asyncio.get_running_loop(), opened)
    async with running(link):
        assert await wait_up(up), f"not up within {WAIT:g} s; broker:\n{mosquitto.log_text()}"
        # the first attempt held: the broker never saw a PUBLISH before a CONNECT
        assert len(opened) == 1, f"{len(opened)} connection attempts"
        assert link.generation == 1
        # in a thread: waiting on the loop would stop the link from writing what it holds
        got = await asyncio.to_thread(listener.wait_for, 2)
    assert sorted((t, p) for t, p, _r in got) == [("race/incident/1", b"raised"),
                                                 ("race/state/1", b"occupied")]
    assert "protocol error" not in mosquitto.log_text().lower()


async def test_a_connection_closed_before_its_connack_is_retried_at_once(
        mosquitto: Mosquitto) -> None:
    """The broker hangs up on the CONNECT: the adapter notices at once and tries again, not
    after waiting out the CONNACK timeout."""
    link, up = make_link(mosquitto, "race-hangup")
    client: paho.Client = link._client
    hook = client.on_socket_open
    opened: list[float] = []

    def on_socket_open(c: paho.Client, userdata: Any, sock: Any) -> None:
        assert hook is not None
        hook(c, userdata, sock)
        opened.append(time.monotonic())
        if len(opened) == 1:
            sock.sendall(b"\xff\x00")  # a reserved packet type: the broker hangs up on us

    client.on_socket_open = on_socket_open
    with structlog.testing.capture_logs() as logs:
        async with running(link):
            assert await wait_up(up)
    assert len(opened) == 2, f"{len(opened)} connection attempts"
    failures = [e["error"] for e in logs if e["event"] == "mqtt_connect_failed"]
    # the hang-up itself ended the attempt, not the 15 s CONNACK timeout
    assert failures == ["connection closed before CONNACK"], failures


@pytest.mark.skipif(TCP_QUICKACK is None, reason="TCP_QUICKACK is Linux's")
async def test_the_link_neither_delays_its_packets_nor_its_acks(mosquitto: Mosquitto) -> None:
    """Nagle is off on our side, and after reading a message the socket acknowledges at once
    again, even when the kernel had gone back to delaying ACKs (the broker's Nagle would hold
    the next message, a call, until our delayed ACK)."""
    assert TCP_QUICKACK is not None
    loop = asyncio.get_running_loop()
    after_read: asyncio.Queue[int] = asyncio.Queue()
    link, up = make_link(mosquitto, "socket-options")

    def on_message(_m: Message, _g: int) -> None:
        # runs inside the link's read; the read is over by the time call_soon runs
        assert link._sock is not None
        sock = link._sock
        loop.call_soon(lambda: after_read.put_nowait(
            sock.getsockopt(socket.IPPROTO_TCP, TCP_QUICKACK)))

    link._on_message = on_message
    publisher = Publisher(mosquitto.host, mosquitto.port)
    # the test's own publish must not wait for an ACK either (its Nagle)
    publisher_sock = publisher.client.socket()
    assert isinstance(publisher_sock, socket.socket)
    publisher_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    quick = []
    try:
        async with running(link):
            assert await wait_up(up)
            sock = link._sock
            assert sock is not None
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            for _ in range(3):
                await asyncio.sleep(0.1)  # every ACK of the connection's start is out
                # what the kernel does by itself once we answer within its window: delay
                # ACKs (until its delayed-ACK timer, 40 ms at least: publish right away)
                sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 0)
                publisher.client.publish("race-in/press", b"call", qos=0)
                async with asyncio.timeout(WAIT):
                    quick.append(await after_read.get())
    finally:
        publisher.close()
    assert quick == [1, 1, 1]


async def test_a_burst_through_the_buffered_socket_arrives_whole_and_is_acknowledged(
        mosquitto: Mosquitto) -> None:
    """Through the link's buffered socket (many packets per read, packets split across
    reads): messages with and without MQTT 5 properties arrive with their topic, payload,
    QoS, retain flag and packet id, in order; a burst of QoS 1 messages, each acknowledged
    with `ack` (the acks of a turn written at once), leaves nothing for the broker to
    redeliver to the session."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    got: list[tuple[str, bytes, int, bool]] = []
    burst = 300
    all_in = asyncio.Event()
    link, up = make_link(mosquitto, "fast-path")

    def on_message(msg: Message, generation: int) -> None:
        got.append((msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))
        if msg.qos:
            assert msg.mid > 0
            assert link.ack(msg.mid, generation)
        if len(got) == burst + 3:
            all_in.set()

    link._on_message = on_message
    publisher = Publisher(mosquitto.host, mosquitto.port)
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: untyped
    props.UserProperty = ("firmware", "1.2")
    try:
        async with running(link):
            assert await wait_up(up)
            publisher.client.publish("race-in/props", b"with properties", qos=1,
                                     properties=props).wait_for_publish(5)
            await asyncio.to_thread(publisher.publish, "race-in/plain", b"plain", 1)
            await asyncio.to_thread(publisher.publish, "race-in/zero", "qos 0 \u00e9", 0)
            for i in range(burst):
                publisher.client.publish(f"race-in/burst/{i}", b"x" * (i % 200), qos=1)
            async with asyncio.timeout(WAIT):
                await all_in.wait()
    finally:
        publisher.close()
    assert got[:3] == [("race-in/props", b"with properties", 1, False),
                       ("race-in/plain", b"plain", 1, False),
                       ("race-in/zero", "qos 0 \u00e9".encode(), 0, False)]
    assert got[3:] == [(f"race-in/burst/{i}", b"x" * (i % 200), 1, False) for i in range(burst)]
    # the link closed cleanly: resuming its session, the broker has nothing left for it
    again, up_again = make_link(mosquitto, "fast-path")
    redelivered: list[str] = []
    marker = asyncio.Event()

    def record(msg: Message, _g: int) -> None:
        redelivered.append(msg.topic)
        if msg.topic == "race-in/marker":
            marker.set()

    again._on_message = record
    async with running(again):
        assert await wait_up(up_again)
        # a message of our own after any the broker kept: once it is in, nothing was kept
        publisher = Publisher(mosquitto.host, mosquitto.port)
        try:
            await asyncio.to_thread(publisher.publish, "race-in/marker", b"", 1)
            async with asyncio.timeout(WAIT):
                await marker.wait()
        finally:
            publisher.close()
    assert redelivered == ["race-in/marker"]


async def test_a_confirmed_publish_is_confirmed_by_its_own_puback_only(
        mosquitto: Mosquitto) -> None:
    """`publish_confirmed` returns on the broker's PUBACK of its message, and paho's
    on_publish is set only while one waits. paho numbers QoS 0 publishes too (16 bits,
    wrapping) and calls on_publish as it writes each: the retained states written while a
    page waits for its PUBACK came round to the page's number and confirmed it before the
    broker had it."""
    link, up = make_link(mosquitto, "confirm-own")
    async with running(link):
        assert await wait_up(up)
        client: paho.Client = link._client
        assert client.on_publish is None  # QoS 0 writes build nothing for it
        link.pause_reading()  # the page's PUBACK waits in the kernel meanwhile
        confirmed = asyncio.create_task(link.publish_confirmed("race-out/page", b"page"))
        await asyncio.sleep(0)  # published, waiting for its PUBACK
        assert client.on_publish is not None
        for i in range(65535):  # the numbers come round to the waiting page's
            link.publish("race-out/state", b"%d" % i, qos=0, retain=False)
            if i % 1000 == 999:
                await asyncio.sleep(0)  # the link writes them
        for _ in range(3):
            await asyncio.sleep(0)
        assert not confirmed.done()
        link.resume_reading()
        async with asyncio.timeout(WAIT):
            await confirmed
        assert client.on_publish is None


def _busy(seconds: float) -> None:
    """Hold the loop as handling a message that raises an incident does."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


async def _queue_while_away(broker: Mosquitto, client_id: str,
                            messages: list[tuple[str, bytes]]) -> None:
    """The link's session subscribed, then ``messages`` queued by the broker while the link
    is away: on its next connection they arrive at once, a burst already in its socket."""
    link, up = make_link(broker, client_id)
    async with running(link):
        assert await wait_up(up)
    publisher = Publisher(broker.host, broker.port)
    try:
        infos = [publisher.client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(WAIT)
    finally:
        publisher.close()


class Slow:
    """A listener that takes ``busy`` seconds a message (as raising an incident does),
    keeps each message, acknowledges it, then calls ``also`` with it."""

    def __init__(self, link: MqttLink, busy: float,
                 also: Callable[[Message], None] | None = None) -> None:
        self.link, self.busy, self.also = link, busy, also
        self.messages: list[Message] = []
        self._waits: list[tuple[Callable[[], bool], asyncio.Event]] = []

    @property
    def topics(self) -> list[str]:
        return [m.topic for m in self.messages]

    def __call__(self, msg: Message, generation: int) -> None:
        _busy(self.busy)
        self.messages.append(msg)
        self.link.ack(msg.mid, generation)
        if self.also is not None:
            self.also(msg)
        for check, event in self._waits:
            if check():
                event.set()

    async def until(self, check: Callable[[], bool]) -> None:
        """Wait (WAIT at most) until ``check()`` holds (checked after each message)."""
        if check():
            return
        event = asyncio.Event()
        self._waits.append((check, event))
        async with asyncio.timeout(WAIT):
            await event.wait()


def listen(link: MqttLink, up: asyncio.Event, busy: float, *, order: Order | None = None,
           also: Callable[[Message], None] | None = None) -> Slow:
    """`link` (from `make_link`) subscribed to race-in/# with a `Slow` listener."""
    slow = Slow(link, busy, also)
    link.attach(subscriptions=["race-in/#"], on_message=slow, order=order,
                on_link=lambda ready: up.set() if ready else None)
    return slow


def calls_urgent(msg: Message) -> tuple[str, bool]:
    return msg.topic, msg.payload == b"call"


async def test_a_call_read_behind_a_burst_is_handled_before_the_burst(
        mosquitto: Mosquitto) -> None:
    """Messages are read ahead of their handling: a call (``urgent``) that arrives behind 400
    other messages, each of which takes 0.5 ms to handle, is handled long before the last
    of them, instead of 400th. A topic keeps its order: a call on a topic whose earlier
    message is still waiting is handled after that message."""
    burst = [(f"race-in/burst/{i}", b"offline") for i in range(400)]
    burst[200] = ("race-in/booth/b", b"occupied")
    messages = [*burst, ("race-in/booth/a", b"call"), ("race-in/booth/b", b"call")]
    await _queue_while_away(mosquitto, "calls-first", messages)

    link, up = make_link(mosquitto, "calls-first")
    slow = listen(link, up, 0.0005, order=calls_urgent)
    async with running(link):
        await slow.until(lambda: len(slow.messages) == len(messages))
    handled = [(m.topic, m.payload) for m in slow.messages]
    assert sorted(handled) == sorted(messages)  # each once
    first_call = handled.index(("race-in/booth/a", b"call"))
    assert first_call < 200, f"the call was handled {first_call + 1}th of {len(messages)}"
    # b's call came behind b's own earlier message, which waited in the burst
    assert handled.index(("race-in/booth/b", b"occupied")) < \
        handled.index(("race-in/booth/b", b"call"))
    # the rest in the order read
    rest = [m for m in handled if m[1] != b"call"]
    assert rest == [m for m in messages if m[1] != b"call"]


async def test_reading_ahead_stops_at_the_inbox_limit_and_loses_nothing(
        mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    """At most INBOX_MAX messages wait read and unhandled (reading stops, the broker keeps
    the rest); every message is still handled once, in order. Closed with messages read and
    not handled, the link leaves them unacknowledged: the broker delivers them again."""
    monkeypatch.setattr("devices.mqtt.INBOX_MAX", 40)
    messages = [(f"race-in/burst/{i}", b"x") for i in range(300)]
    await _queue_while_away(mosquitto, "inbox-limit", messages)

    link, up = make_link(mosquitto, "inbox-limit")
    waiting: list[int] = []
    slow = listen(link, up, 0.0002, also=lambda _m: waiting.append(len(link._inbox)))
    async with running(link):
        await slow.until(lambda: len(slow.messages) >= 200)
    handled = slow.topics
    # closed at the 200th: what was read and not handled must come again
    assert handled[:200] == [t for t, _ in messages[:200]]
    assert max(waiting) <= 40
    assert max(waiting) >= 30, "the burst was never read ahead: the test proves nothing"

    again, _ = make_link(mosquitto, "inbox-limit")
    rest: list[str] = []
    done = asyncio.Event()

    def record(msg: Message, generation: int) -> None:
        rest.append(msg.topic)
        again.ack(msg.mid, generation)
        if msg.topic == messages[-1][0]:
            done.set()

    again._on_message = record
    async with running(again):
        async with asyncio.timeout(WAIT):
            await done.wait()
    # every message once at least; a redelivery only of what the first link had not acked
    seen = set(handled) | set(rest)
    assert seen == {t for t, _ in messages}
    assert not set(rest) & set(handled[:150]), "messages acked long before came again"


async def test_paused_the_link_still_handles_the_calls_already_read(
        mosquitto: Mosquitto) -> None:
    """The caller pauses reading (its store is behind) as it handles a call: the messages
    already read wait, but the other call among them is still handled; resumed, the rest
    follow, in order, each once."""
    messages = [(f"race-in/burst/{i}", b"x") for i in range(100)]
    messages += [("race-in/booth/a", b"call"), ("race-in/booth/b", b"call")]
    await _queue_while_away(mosquitto, "paused-call", messages)

    link, up = make_link(mosquitto, "paused-call")

    def pause_at_a(msg: Message) -> None:
        if msg.topic == "race-in/booth/a":
            link.pause_reading()  # as the ingest does past UNACKED_HIGH

    slow = listen(link, up, 0.0002, order=calls_urgent, also=pause_at_a)
    async with running(link):
        await slow.until(lambda: "race-in/booth/b" in slow.topics)
        for _ in range(20):
            await asyncio.sleep(0.01)  # turns in which nothing else may be handled
        handled = slow.topics
        n = handled.index("race-in/booth/a")
        assert handled == [*(t for t, _ in messages[:n]), "race-in/booth/a", "race-in/booth/b"]
        assert len(link._inbox) == 100 - n > 0, "nothing was read ahead: the test proves nothing"
        link.resume_reading()
        await slow.until(lambda: len(slow.messages) == len(messages))
    handled = slow.topics
    assert handled[n + 2:] == [t for t, _ in messages[n:100]]


async def test_stop_reading_hands_over_what_was_read_and_reads_no_more(
        mosquitto: Mosquitto) -> None:
    """At shutdown `stop_reading` hands the listener every message already read, at once
    (a QoS 0 message would not come again), and takes nothing more after it; the socket
    is still read, so a last publish (`close`'s "offline") is still confirmed."""
    messages = [(f"race-in/burst/{i}", b"x") for i in range(300)]
    await _queue_while_away(mosquitto, "stop-reading", messages)
    link, up = make_link(mosquitto, "stop-reading")
    slow = listen(link, up, 0.0002)
    async with running(link):
        await slow.until(lambda: len(slow.messages) >= 5)
        waiting = len(link._inbox)
        assert waiting > 0, "nothing was read ahead: the test proves nothing"
        before = len(slow.messages)
        link.stop_reading()
        assert len(slow.messages) == before + waiting and not link._inbox
        for _ in range(10):
            await asyncio.sleep(0.01)
        assert len(slow.messages) == before + waiting  # nothing taken since
        # its PUBACK is read (a link that stopped reading waited out the timeout)
        await link.publish_confirmed("race/status", b"offline", timeout=5)
    handled = slow.topics
    assert handled == [t for t, _ in messages[:len(handled)]]


async def test_stopped_while_paused_the_link_reads_again_for_its_last_puback(
        mosquitto: Mosquitto) -> None:
    """Shutdown finds reading paused (the store behind): `stop_reading` hands over what was
    read and watches the socket again, so the PUBACK of the last publish (`close`'s
    "offline") comes in instead of its timeout."""
    messages = [(f"race-in/burst/{i}", b"x") for i in range(300)]
    await _queue_while_away(mosquitto, "stop-paused", messages)
    link, up = make_link(mosquitto, "stop-paused")

    def pause_at_5(_msg: Message) -> None:
        if len(slow.messages) == 5:
            link.pause_reading()

    slow = listen(link, up, 0.0002, also=pause_at_5)
    async with running(link):
        await slow.until(lambda: len(slow.messages) >= 5)
        assert not link._reading, "the socket is watched: the test proves nothing"
        link.stop_reading()
        assert not link._inbox
        await link.publish_confirmed("race/status", b"offline", timeout=5)
    assert slow.topics == [t for t, _ in messages[:len(slow.topics)]]


async def test_a_new_connection_drops_what_the_old_one_read_and_the_session_resends(
        mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection is lost with messages read and not handled: the new connection finds
    its session, which sends them again, so the old copies are dropped, not handled twice.
    Every message is handled."""
    monkeypatch.setattr("devices.mqtt.INBOX_MAX", 40)
    messages = [(f"race-in/burst/{i}", b"x") for i in range(120)]
    await _queue_while_away(mosquitto, "cut-read", messages)
    link, up = make_link(mosquitto, "cut-read")
    slow = listen(link, up, 0.02)  # slow: 40 read take longer than the link's 0.5 s to return

    def take_over() -> None:
        """Another connection with the link's client id: the broker drops the link's. It
        acknowledges nothing and leaves at once, so the session keeps every message."""
        other = paho.Client(CallbackAPIVersion.VERSION2, client_id="cut-read",
                            protocol=paho.MQTTv5, manual_ack=True)
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: untyped
        props.SessionExpiryInterval = 3600  # else the session ends with this connection
        other.connect(mosquitto.host, mosquitto.port, clean_start=False, properties=props)
        other.disconnect()

    with structlog.testing.capture_logs() as logs:
        async with running(link):
            await slow.until(lambda: len(slow.messages) >= 2)
            assert len(link._inbox) > 20, "nothing was read ahead: the test proves nothing"
            await asyncio.to_thread(take_over)
            await slow.until(lambda: {t for t, _ in messages} <= set(slow.topics))
    handled = slow.topics
    dropped = [e for e in logs if e["event"] == "mqtt_read_dropped_for_redelivery"]
    assert dropped and dropped[0]["messages"] > 0, [e["event"] for e in logs]
    # twice only what was handled before the new connection (its ack lost with the old one)
    twice = {t for t in handled if handled.count(t) > 1}
    assert len(twice) + dropped[0]["messages"] <= len(messages), (len(twice), dropped)
    assert len(handled) <= len(messages) + len(twice)
