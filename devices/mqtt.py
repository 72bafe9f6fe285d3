"""paho-mqtt 2.x driven by the asyncio loop: persistent session, manual acks, reconnects.

paho does the protocol; this adapter gives it the event loop: the socket is
watched with ``add_reader``/``add_writer`` so every callback (``on_message``
included) runs on the loop thread, with no second thread and no hand-off
latency. ``loop_misc`` runs once a second for keep-alive pings.

* Fixed client id, clean start off and a session expiry (MQTT 5), or
  ``clean_session=False`` (3.1.1): the broker keeps our subscription and queues
  QoS 1 messages while we are down.
* ``manual_ack``: a message is acknowledged only when the caller says so (after
  its event is stored). Packet ids belong to one connection, so an ack is tagged
  with the connection's generation and dropped if the connection has changed
  since; the broker then redelivers, and the caller's deduplication absorbs it.
* Reconnect with jittered exponential backoff (0.5 s doubling to 5 s, reset once a
  connection has held for 10 s); the Last Will marks us offline. ``on_link`` hears
  when events start or stop reaching us (connected and subscribed, or not).
* ``connect()`` blocks (DNS, TCP), so it runs in an executor thread; paho is not
  thread-safe, so publishes made meanwhile are held and handed to paho once it
  returns (a PUBLISH written before the CONNECT makes the broker hang up). A
  connection closed before its CONNACK is retried at once.
* The socket is tuned for a broker that is not (Mosquitto's default is no
  ``set_tcp_nodelay``): TCP_NODELAY, so our small packets (PUBACKs, incident
  changes) never wait for the broker's delayed ACK, and TCP_QUICKACK re-armed after
  every read, so the broker's Nagle never holds the next message (a call press)
  behind our delayed ACK of its last one. Without them a press waited up to 40 ms,
  Linux's shortest delayed ACK (docs/architecture/latency.md).
* paho's socket is buffered (`_Buffered`, bench/ingest.py, docs/architecture/ingest.md):
  one ``recv`` takes a burst where paho asked the kernel three times per packet, and
  everything paho writes in one loop turn (the PUBACKs of a commit, the retained
  states) goes out in one ``send``. paho still reads and writes every packet itself.
* Messages are read ahead of their handling (at most `INBOX_MAX` waiting): a read takes
  what the socket has for `READ_BUDGET`, paho parsing each, then the inbox is handled for
  `HANDLE_BUDGET` a turn. The listener's ``order`` gives each message a key (a booth)
  whose messages keep their order, and says whether it is urgent (a press, say): an
  urgent message is handled before the other keys' messages read with it, unless a
  message of its own key waits ahead of it. A call published while a burst of 1,000
  availability messages was being handled used to wait behind all of them
  (bench/burst.py --burst-kind offline). `stop_reading` hands over what was read at
  shutdown; a new connection that finds its session drops what the old one read and had
  not handled at QoS 1 (the broker sends it again).
* paho's ``on_publish`` is set only while a `publish_confirmed` waits for its PUBACK, and
  never while paho writes: paho calls it for every QoS 0 publish it writes as well (a
  ReasonCode and a Properties made for each retained state), and paho numbers QoS 0
  publishes too, so one written with a waiting page's number confirmed that page early.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from monitor.core.durations import describe
from monitor.core.settings import MqttConfig

log = structlog.get_logger(__name__)


class Message(NamedTuple):
    """A message as the link hands it over: what paho read, without paho's object (an
    `MQTTMessage` carries an `MQTTMessageInfo` and its `threading.Condition`, and decodes
    its topic on every read). A tuple of plain values, which the garbage collector stops
    tracking: messages waiting in the inbox cost it nothing (bench/ingest.py: 75-77 ->
    61-64 µs of service CPU per event with the inbox full, peak RSS 120 -> 107 MiB)."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool
    dup: bool


def message_of(msg: paho.MQTTMessage) -> Message:
    # paho's payload is bytes (a bytearray only when a caller made the message itself)
    return Message(msg.topic, bytes(msg.payload), msg.mid, msg.qos, msg.retain, msg.dup)


OnMessage = Callable[[Message, int], None]
# a message's ordering key (messages of one key are handled in the order read) and
# whether it is urgent (handled before other keys' messages read before it)
Order = Callable[[Message], tuple[str, bool]]
PASSWORD_ENV = "BOOTHWATCH_MQTT_PASSWORD"  # the broker password: never in the config file
STABLE_AFTER = 10.0  # a connection that lasted this long resets the reconnect backoff
# seconds of reading per wakeup at most, so a due timer, the write of a page just submitted
# and HTTP get their turn behind a backlog (bench/timers.py: a 49 ms read after a stall)
READ_BUDGET = 0.002
# seconds of handling what was read per turn at most (urgent messages first)
HANDLE_BUDGET = 0.002
# messages read but not yet handled at most: reading stops there until half are handled
# (they are unacknowledged: the broker still has them)
INBOX_MAX = 2000
REFUSED_LOG_EVERY = 60.0  # seconds between log lines while the broker keeps refusing us
BAD_CREDENTIALS, NOT_AUTHORIZED = 134, 135  # MQTT 5 CONNACK reason codes
TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only; elsewhere left as it is
READ_CHUNK = 65536  # bytes a read takes from the kernel at most: a burst's worth of events


def broker_address(url: str) -> tuple[tuple[str, int, bool], list[str]]:
    """``(host, port, tls)`` of an ``mqtt://`` or ``mqtts://`` broker URL, and what is wrong
    with it: [mqtt] problems, worded to follow ``mqtt.url:``."""
    try:
        parts = urlsplit(url)
        explicit_port = parts.port
    except ValueError as exc:
        return ("", 0, False), [f"not a valid URL ({exc})"]
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts"):
        return ("", 0, False), [f"scheme must be mqtt or mqtts, got {describe(url)}"]
    tls = scheme == "mqtts"
    port = explicit_port if explicit_port is not None else (8883 if tls else 1883)
    problems = []
    if not parts.hostname:
        problems.append(f"missing host (e.g. mqtt://127.0.0.1:1883), got {describe(url)}")
    if parts.username is not None or parts.password is not None:
        problems.append(f"must not carry credentials; use mqtt.username and {PASSWORD_ENV}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        problems.append("must be just scheme://host[:port], without a path or query")
    if not 1 <= port <= 65535:
        problems.append(f"port must be between 1 and 65535, got {port}")
    return (parts.hostname or "", port, tls), problems


def tls_problems(
    tls: bool, ca_file: str | None, cert_file: str | None, key_file: str | None
) -> list[tuple[str, str]]:
    """``(key, problem)`` for each of the [mqtt] TLS files that `MqttLink` could not use.

    The files are loaded as the client will load them, so a wrong path, a file of the
    wrong kind or a key that is not the certificate's is a config problem, not a
    reconnect loop at run time. ``tls``: the broker URL is ``mqtts://``.
    """
    given = {"ca_file": ca_file, "cert_file": cert_file, "key_file": key_file}
    problems: list[tuple[str, str]] = []
    if key_file and not cert_file:
        problems.append(("key_file", "needs mqtt.cert_file as well"))
    if cert_file and not key_file:
        problems.append(("cert_file", "needs mqtt.key_file as well"))
    if not tls:
        return problems + [(key, "only used with TLS, but mqtt.url is mqtt://: use mqtts:// "
                                 "(or nothing would be encrypted)")
                           for key, name in given.items() if name]
    contents: dict[str, bytes] = {}
    for key, name in given.items():
        if name:
            try:
                with open(name, "rb") as handle:
                    contents[key] = handle.read()
            except OSError as exc:
                problems.append((key, f"cannot read {describe(name)}: {exc.strerror or exc}"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file and "ca_file" in contents:
        try:
            context.load_verify_locations(cafile=ca_file)
        except ssl.SSLError as exc:
            problems.append(("ca_file", f"{describe(ca_file)} is not a PEM CA certificate "
                                        f"({exc.reason or exc})"))
    if not (cert_file and key_file and "cert_file" in contents and "key_file" in contents):
        return problems
    if b"-----BEGIN CERTIFICATE-----" not in contents["cert_file"]:
        problems.append(("cert_file", f"{describe(cert_file)} holds no PEM certificate"))
    elif b"ENCRYPTED" in contents["key_file"]:
        problems.append(("key_file", f"{describe(key_file)} is encrypted, and the service "
                         "cannot ask for a passphrase: store it unencrypted, readable only "
                         "by the service's user"))
    elif b"PRIVATE KEY-----" not in contents["key_file"]:
        problems.append(("key_file", f"{describe(key_file)} holds no PEM private key"))
    else:
        try:
            # an empty passphrase: OpenSSL must never stop to ask for one on a terminal
            context.load_cert_chain(cert_file, key_file, password="")
        except ssl.SSLError as exc:
            if "KEY_VALUES_MISMATCH" in str(exc):
                problems.append(("key_file", f"{describe(key_file)} is not mqtt.cert_file's key"))
            else:
                problems.append(("cert_file", "cannot load it with mqtt.key_file "
                                              f"({exc.reason or exc})"))
    return problems


class _Buffered:
    """paho's socket, buffered both ways; everything but recv and send goes to the socket.

    A transport, not a codec: paho still reads and writes every MQTT packet itself.

    In: ``recv`` serves paho from a buffer that one kernel ``recv`` fills with what is
    there (up to READ_CHUNK: a burst of events), where paho asked the kernel three times
    per packet (the type byte, the length, the rest). An empty buffer and nothing in the
    kernel raise BlockingIOError, as the socket would: paho keeps a packet it has begun
    and goes on with it at the next read. Out: ``send`` only appends; `MqttLink` writes
    the lot once per loop turn (the PUBACKs of a commit, the retained states of a turn:
    one ``send``), and keeps what the kernel would not take for when the socket is
    writable again.
    """

    __slots__ = ("_in", "_pos", "out", "sock")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self._in = b""
        self._pos = 0
        self.out = bytearray()

    def __getattr__(self, name: str) -> Any:  # setblocking, pending, getpeername...
        return getattr(self.sock, name)

    def fileno(self) -> int:
        return int(self.sock.fileno())

    def setsockopt(self, *args: Any) -> None:
        self.sock.setsockopt(*args)

    def getsockopt(self, *args: Any) -> Any:
        return self.sock.getsockopt(*args)

    def recv(self, size: int) -> bytes:
        pos = self._pos
        if pos >= len(self._in):
            data: bytes = self.sock.recv(READ_CHUNK)  # BlockingIOError when there is none
            if not data:
                return data  # the broker closed the connection: paho says so
            self._in, pos = data, 0
        chunk: bytes = self._in[pos:pos + size]
        self._pos = pos + len(chunk)
        return chunk

    def buffered(self) -> bool:
        """Bytes wait here, or TLS holds decrypted ones: no readiness event will say so."""
        if self._pos < len(self._in):
            return True
        # only a TLS socket has `pending`: asked after the buffer, since on a plain socket
        # the getattr raises and catches an AttributeError, and this runs per message
        pending = getattr(self.sock, "pending", None)
        return pending is not None and pending() > 0

    def send(self, data: bytes | bytearray) -> int:
        self.out += data
        return len(data)

    def close(self) -> None:
        # paho closes right after "writing" its DISCONNECT: send it (and what is before it)
        self.write()
        self.sock.close()

    def write(self) -> bool:
        """Write what is held, as far as the kernel takes it; True once all of it is out (or
        the connection is broken: reading will find out and reconnect)."""
        out = self.out
        while out:
            try:
                sent = self.sock.send(out)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return False
            except OSError:
                out.clear()
                return True
            del out[:sent]
        return True


class NotConnected(Exception):
    """The broker is not reachable right now."""


class Refused(ConnectionError):
    """The broker answered our CONNECT with a failure reason."""

    def __init__(self, reason: ReasonCode) -> None:
        super().__init__(f"broker refused the connection: {reason}")
        self.reason = reason

    @property
    def credentials(self) -> bool:
        """Refused for who we are (MQTT 3.1.1's return codes 4 and 5 read the same)."""
        return self.reason.value in (BAD_CREDENTIALS, NOT_AUTHORIZED)


class _Client(paho.Client):
    """paho's client on a `_Buffered` socket."""

    def _create_socket(self) -> Any:
        # paho 2.x's one place where the connection's socket is made (TLS wrapped in it)
        return _Buffered(super()._create_socket())


class MqttLink:
    def __init__(
        self,
        config: MqttConfig,
        *,
        subscriptions: Sequence[str] = (),
        on_message: OnMessage | None = None,
        order: Order | None = None,
        will: tuple[str, bytes] | None = None,
        on_connected: Callable[[bool], None] | None = None,
        on_link: Callable[[bool], None] | None = None,
        receive_maximum: int = 1000,
        # capped low: each second of waiting after the broker is back is a second nobody
        # is watching; our single client's attempts cost the broker next to nothing
        backoff: tuple[float, float] = (0.5, 5.0),
    ) -> None:
        """Callbacks run on the loop thread; they may also be given later with `attach`."""
        self.config = config
        self._subscriptions = list(subscriptions)
        self._on_message = on_message
        self._order = order
        self._on_connected = on_connected
        self._on_link = on_link
        self._link_up = False  # what on_link was last told
        self._backoff = backoff
        self.generation = 0  # bumped on every new connection
        self.connected = False
        self._unacked_subs: set[int] = set()
        self._sock: _Buffered | None = None
        self._flush_soon = False  # a write of what the turn queued is scheduled
        self._writer = False  # waiting for the socket to take the rest
        # set while paho's connect() runs in the executor: publishes are held until it returns
        self._held: list[tuple[str, bytes, int, bool]] | None = None
        self._paused = False  # the caller asked us to stop reading
        self._full = False  # INBOX_MAX messages read and not yet handled
        self._stopped = False  # `stop_reading`: take no more messages
        self._reading = False  # the loop watches the socket for us
        # read, not yet handled: (message, its connection's generation, its key)
        self._inbox: deque[tuple[Message, int, str]] = deque()
        self._urgent_inbox: deque[tuple[Message, int, str]] = deque()
        self._inbox_keys: dict[str, int] = {}  # key -> its messages in `_inbox`
        self._handle_soon = False  # a `_handle` is scheduled
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connack: asyncio.Future[ReasonCode] | None = None
        self._lost = asyncio.Event()
        self._misc: asyncio.Task[None] | None = None
        self._confirm: dict[int, asyncio.Future[None]] = {}
        v5 = config.protocol == "5"
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            clean_session=None if v5 else False,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            manual_ack=True,
            reconnect_on_failure=False,  # we reconnect ourselves, with jitter
        )
        client.max_inflight_messages_set(0)  # unlimited: a cap makes paho rescan its queue
        client.max_queued_messages_set(0)  # unlimited: never drop our own publishes
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        if config.tls:
            client.tls_set(
                ca_certs=config.ca_file,
                certfile=config.cert_file,
                keyfile=config.key_file,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        # on_publish only while a publish_confirmed waits (`_hear_pubacks`): paho calls it
        # for every QoS 0 publish it writes too, each with a new ReasonCode and Properties
        client.on_subscribe = self._handle_subscribe
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._register_write
        client.on_socket_unregister_write = self._unregister_write
        self._client = client
        self._receive_maximum = receive_maximum

    def attach(self, *, subscriptions: Sequence[str], on_message: OnMessage,
               order: Order | None = None,
               on_connected: Callable[[bool], None] | None = None,
               on_link: Callable[[bool], None] | None = None) -> None:
        """Who listens: set once before `run`, by a caller whose listeners need this link
        already (to acknowledge, to publish). ``order(message)``: its key and whether it
        is urgent (see the module's docstring); without it, each topic in its order."""
        self._subscriptions = list(subscriptions)
        self._on_message = on_message
        self._order = order
        self._on_connected = on_connected
        self._on_link = on_link

    # --- running ----------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._closed = self._stopped = self._full = False
        delay = self._backoff[0]
        refusals = 0  # in a row
        logged_at = -REFUSED_LOG_EVERY
        while True:
            try:
                await self._connect_once()
                refusals = 0
                up_at = self._loop.time()
                await self._lost.wait()
                if self._loop.time() - up_at >= STABLE_AFTER:
                    delay = self._backoff[0]  # a connection that held: retry quickly
                # else a broker that drops us at once (another client with our id?) backs off
            except Refused as exc:
                # Refused, we keep trying at the usual pace: the broker's password file or
                # ACL fixed, the service is back within seconds, with nobody to restart it;
                # meanwhile the self-watch pages the staff that the booths are unwatched.
                # Exiting instead would loop under systemd and page nobody.
                refusals += 1
                if self._loop.time() - logged_at >= REFUSED_LOG_EVERY:
                    logged_at = self._loop.time()
                    self._log_refusal(exc, refusals)
            except (OSError, TimeoutError, ConnectionError) as exc:
                log.warning("mqtt_connect_failed", broker=self._broker,
                            error=str(exc) or type(exc).__name__)
            self._lost.clear()
            self._set_disconnected()
            wait = random.uniform(delay / 2, delay)  # jitter: sites restart all at once
            log.info("mqtt_reconnect_in", seconds=round(wait, 2))
            await asyncio.sleep(wait)
            delay = min(delay * 2, self._backoff[1])

    async def _connect_once(self) -> None:
        assert self._loop is not None
        self._connack = self._loop.create_future()
        cfg = self.config
        if cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
            props.SessionExpiryInterval = int(cfg.session_expiry)
            props.ReceiveMaximum = self._receive_maximum
            connect = lambda: self._client.connect(  # noqa: E731
                cfg.host, cfg.port, keepalive=cfg.keepalive, clean_start=False,
                properties=props,
            )
        else:
            connect = lambda: self._client.connect(  # noqa: E731
                cfg.host, cfg.port, keepalive=cfg.keepalive
            )
        # connect() resolves and opens the socket (blocking); keep the loop free meanwhile.
        # paho is not thread-safe: a publish from the loop after the socket opens and before
        # connect() queues its CONNECT would be written first, and the broker hangs up on a
        # PUBLISH before CONNECT. Publishes wait until connect() has returned.
        self._held = []
        try:
            # in this task's context: the socket's callbacks, registered from the executor
            # thread, run in it too (the logs' context, e.g. which site: monitor/sites.py)
            await self._loop.run_in_executor(None, contextvars.copy_context().run, connect)
        finally:
            held, self._held = self._held, None
            for topic, payload, qos, retain in held:
                self._client.publish(topic, payload, qos=qos, retain=retain)
        async with asyncio.timeout(15):  # not wait_for: it can swallow a cancellation on 3.11
            reason = await self._connack
        if reason.is_failure:
            self._client.disconnect()
            raise Refused(reason)
        self._misc = self._loop.create_task(self._misc_loop(), name="mqtt-misc")

    @property
    def _broker(self) -> str:
        host = self.config.host
        return f"[{host}]:{self.config.port}" if ":" in host else f"{host}:{self.config.port}"

    def _log_refusal(self, exc: Refused, attempts: int) -> None:
        """One line that says what to fix; again every REFUSED_LOG_EVERY while it lasts."""
        cfg = self.config
        if not exc.credentials:
            log.error("mqtt_refused", broker=self._broker, reason=str(exc.reason),
                      attempts=attempts, retrying=True)
            return
        if cfg.username is None:
            fix = f"the broker wants an account: set [mqtt] username and {PASSWORD_ENV}"
        elif cfg.password is None:
            fix = f"{PASSWORD_ENV} is not set: put the password of {cfg.username!r} there"
        else:
            fix = (f"check the password in {PASSWORD_ENV} (the unit's EnvironmentFile) against "
                   f"the broker's password file and ACL for user {cfg.username!r}")
        log.critical("mqtt_not_authorized", broker=self._broker, user=cfg.username,
                     reason=str(exc.reason), fix=fix, attempts=attempts, retrying=True)

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(1)
            self._client.loop_misc()

    async def close(self, final: tuple[str, bytes] | None = None) -> None:
        """Publish ``final`` (e.g. status offline), then disconnect cleanly."""
        if self.connected and final is not None:
            try:
                await self.publish_confirmed(final[0], final[1], retain=True, timeout=2)
            except (NotConnected, TimeoutError):
                pass
        self._client.disconnect()
        self._set_disconnected()
        # what was read and not handled (none after `stop_reading`) stays unacknowledged
        self._closed = True
        self._drop(lambda _entry: True)

    # --- publishing and acknowledging ---------------------------------------------------

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Queue a publish; paho keeps QoS 1 messages across a reconnect."""
        if self._held is not None:
            self._held.append((topic, payload, qos, retain))
            return
        self._client.publish(topic, payload, qos=qos, retain=retain)

    async def publish_confirmed(
        self, topic: str, payload: bytes, *, retain: bool = False, timeout: float = 5.0
    ) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK."""
        if not self.connected or self._loop is None:
            raise NotConnected("broker not connected")
        fut: asyncio.Future[None] = self._loop.create_future()
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise NotConnected(f"publish failed: {paho.error_string(info.rc)}")
        if info.is_published():
            return
        self._confirm[info.mid] = fut
        self._hear_pubacks()
        try:
            async with asyncio.timeout(timeout):
                await fut
        finally:
            self._confirm.pop(info.mid, None)
            self._hear_pubacks()

    def _hear_pubacks(self) -> None:
        """paho's on_publish is set while a `publish_confirmed` waits for its PUBACK, and only
        then: paho also calls it for each QoS 0 publish it writes (every retained booth state),
        with a ReasonCode and a Properties made for the call. `_write` takes it away while
        paho writes: a PUBACK is only ever read, and a QoS 0 publish written with the mid of
        the one waiting (paho numbers QoS 0 publishes too, 16 bits) must not confirm it."""
        wanted = self._handle_publish if self._confirm else None
        if self._client.on_publish != wanted:
            self._client.on_publish = wanted

    def ack(self, mid: int, generation: int) -> bool:
        """Acknowledge a message of connection ``generation``; False if that connection is gone."""
        if generation != self.generation or not self.connected:
            return False
        self._client.ack(mid, 1)  # paho writes it into the buffer: out at the turn's end
        return True

    def _write_soon(self) -> None:
        """Write at the end of this turn: the acks of a whole commit, and the publishes
        of the turn, in one send."""
        if not self._flush_soon and self._loop is not None:
            self._flush_soon = True
            self._loop.call_soon(self._write)

    def _write(self) -> None:
        self._flush_soon = False
        sock = self._sock
        if sock is None or self._loop is None:
            return
        client = self._client
        if self._confirm:
            client.on_publish = None  # see `_hear_pubacks`
            try:
                client.loop_write()  # paho's packets into the buffer
            finally:
                client.on_publish = self._handle_publish
        else:
            client.loop_write()  # paho's packets into the buffer
        done = sock.write()
        if done and self._writer:
            self._writer = False
            self._loop.remove_writer(sock)
        elif not done and not self._writer:
            self._writer = True
            self._loop.add_writer(sock, self._write)

    # --- paho callbacks (on the loop thread) ------------------------------------------

    def _handle_connect(
        self, client: paho.Client, _u: Any, flags: paho.ConnectFlags, reason: ReasonCode,
        _p: Properties | None,
    ) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(reason)
        if reason.is_failure:
            return
        self.generation += 1
        self.connected = True
        if flags.session_present:
            # the session kept what we read and did not acknowledge: it comes again, so what
            # the old connection read at QoS 1 and we did not handle yet would come twice
            generation = self.generation
            dropped = self._drop(lambda entry: entry[1] != generation and entry[0].qos > 0)
            if dropped:
                log.info("mqtt_read_dropped_for_redelivery", messages=dropped)
        self._unacked_subs = set()
        for topic in self._subscriptions:
            _rc, mid = client.subscribe(topic, qos=1)
            if mid is not None:
                self._unacked_subs.add(mid)
        log.info("mqtt_connected", session_present=flags.session_present,
                 generation=self.generation)
        if self._on_connected is not None:
            self._on_connected(flags.session_present)
        self._tell_link()

    @property
    def ready(self) -> bool:
        """Connected and every subscription acknowledged: events reach us from now on."""
        return self.connected and not self._unacked_subs

    def _handle_subscribe(
        self, _c: paho.Client, _u: Any, mid: int, reasons: list[ReasonCode], _p: Properties
    ) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            # a broker ACL that refuses our subscription: we would hear nothing; say so loudly
            log.error("mqtt_subscribe_refused", reasons=failed)
            return
        self._unacked_subs.discard(mid)
        self._tell_link()

    def _tell_link(self) -> None:
        """Tell ``on_link`` when `ready` changes: events reach us, or no longer."""
        if self.ready != self._link_up:
            self._link_up = self.ready
            if self._on_link is not None:
                self._on_link(self._link_up)

    def _handle_disconnect(
        self, _c: paho.Client, _u: Any, _f: paho.DisconnectFlags, reason: ReasonCode,
        _p: Properties | None,
    ) -> None:
        was = self.connected
        self._set_disconnected()
        if was:
            log.warning("mqtt_disconnected", reason=str(reason))
        if self._connack is not None and not self._connack.done():
            # hung up on before answering: retry now, not after the CONNACK timeout
            self._connack.set_exception(ConnectionError("connection closed before CONNACK"))
        self._lost.set()

    def _set_disconnected(self) -> None:
        self.connected = False
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        for fut in self._confirm.values():
            if not fut.done():
                fut.set_exception(NotConnected("connection lost before PUBACK"))
        self._confirm.clear()
        self._hear_pubacks()
        self._tell_link()

    def _handle_message(self, _c: paho.Client, _u: Any, read: paho.MQTTMessage) -> None:
        """paho read a message: into the inbox, handled once the read is done (`_handle`)."""
        if self._on_message is None or self._stopped:
            return  # after `stop_reading`: unacknowledged, the broker keeps it
        msg = message_of(read)
        order = self._order
        key, urgent = (msg.topic, False) if order is None else order(msg)
        keys = self._inbox_keys
        if urgent and key not in keys:
            self._urgent_inbox.append((msg, self.generation, key))
        else:
            self._inbox.append((msg, self.generation, key))
            keys[key] = keys.get(key, 0) + 1

    def _next(self, urgent_only: bool) -> tuple[Message, int] | None:
        """The next message to handle: an urgent one, else the oldest (not if urgent_only)."""
        if self._urgent_inbox:
            msg, generation, _key = self._urgent_inbox.popleft()
            return msg, generation
        if not self._inbox or urgent_only:
            return None
        msg, generation, key = self._inbox.popleft()
        keys = self._inbox_keys
        left = keys[key] - 1
        if left:
            keys[key] = left
        else:
            del keys[key]
        return msg, generation

    def _drop(self, which: Callable[[tuple[Message, int, str]], bool]) -> int:
        """Forget the read messages ``which`` picks (unhandled, so unacknowledged)."""
        before = len(self._inbox) + len(self._urgent_inbox)
        self._urgent_inbox = deque(e for e in self._urgent_inbox if not which(e))
        self._inbox = deque(e for e in self._inbox if not which(e))
        self._inbox_keys = {}
        for _msg, _generation, key in self._inbox:
            self._inbox_keys[key] = self._inbox_keys.get(key, 0) + 1
        return before - len(self._inbox) - len(self._urgent_inbox)

    def stop_reading(self, *, handle: bool = True) -> None:
        """Take no more messages (shutdown), and hand the listener everything already read
        now, before what it pages with closes (a QoS 0 message is not sent again); or,
        with ``handle`` false (the site is another process's now), forget it. The socket
        is read again even if paused or full: the PUBACK of a last publish (`close`) must
        come in, and what else arrives is left to the broker."""
        self._stopped = True
        if handle:
            self._hand_over(urgent_only=False)
        self._drop(lambda _entry: True)
        self._paused = self._full = False
        self._watch()

    def _hand_over(self, urgent_only: bool, until: float | None = None) -> None:
        """Give the listener the inbox's messages, urgent ones first (only those if
        ``urgent_only``, or while reading is paused, which the listener may do as it
        goes, but for `stop_reading`), until it is empty or `time.perf_counter` passes
        ``until``."""
        on_message = self._on_message
        if on_message is None or self._closed:
            return
        while (entry := self._next(
                urgent_only or (self._paused and not self._stopped))) is not None:
            on_message(*entry)
            if until is not None and time.perf_counter() >= until:
                return

    def _handle(self) -> None:
        """Hand what was read to the listener, urgent messages first, for HANDLE_BUDGET.
        While reading is paused (the caller is behind) only urgent ones."""
        self._handle_soon = False
        if self._on_message is None or self._closed:
            return
        try:
            self._hand_over(False, time.perf_counter() + HANDLE_BUDGET)
        finally:
            if self._urgent_inbox or (self._inbox and not self._paused):
                self._schedule_handle()
            if self._full and len(self._inbox) <= INBOX_MAX // 2:
                self._full = False
                self._watch()

    def _handle_publish(
        self, _c: paho.Client, _u: Any, mid: int, _r: ReasonCode, _p: Properties
    ) -> None:
        fut = self._confirm.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    # connect() runs in an executor thread, so socket hooks may fire off the loop thread
    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            fn(*args)
        elif not self._loop.is_closed():  # else paho closes its socket at exit: nothing to do
            self._loop.call_soon_threadsafe(fn, *args)

    def _socket_open(self, client: paho.Client, _u: Any, sock: Any) -> None:
        self._call(self._add_reader, sock)

    def _schedule_handle(self) -> None:
        if not self._handle_soon and not self._closed and self._loop is not None:
            self._handle_soon = True
            self._loop.call_soon(self._handle)

    def _add_reader(self, sock: _Buffered) -> None:
        assert self._loop is not None
        self._sock = sock
        self._reading = False
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._watch()

    def _watch(self) -> None:
        """Have the loop watch the socket for us, unless reading is paused or the inbox full."""
        sock, loop = self._sock, self._loop
        if sock is None or loop is None:
            return
        wanted = not self._paused and not self._full
        if wanted and not self._reading:
            self._reading = True
            loop.add_reader(sock, self._read)
            loop.call_soon(self._read)  # bytes may wait in the buffer
        elif not wanted and self._reading:
            self._reading = False
            loop.remove_reader(sock)

    def pause_reading(self) -> None:
        """Stop taking messages (the caller is behind); the broker keeps them meanwhile."""
        if not self._paused and self._sock is not None and self._loop is not None:
            self._paused = True
            self._watch()
            log.warning("mqtt_reading_paused", reason="store behind")

    def resume_reading(self) -> None:
        if self._paused and self._loop is not None:
            self._paused = False
            self._watch()
            if self._inbox:
                self._schedule_handle()  # what was read before the pause
            log.info("mqtt_reading_resumed")

    def _read(self) -> None:
        # paho's loop_read reads one packet whatever max_packets says: drain what is there,
        # so a burst costs one loop wakeup, not one per message, but for READ_BUDGET at most;
        # then handle what was read (`_handle`), unless a handling is already scheduled
        sock = self._sock
        if sock is None or self._loop is None or not self._reading:
            return
        until = time.perf_counter() + READ_BUDGET
        client = self._client
        try:
            while True:
                if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return
                if self._sock is not sock:
                    return  # closed meanwhile
                if self._paused:
                    break
                if len(self._inbox) >= INBOX_MAX:
                    self._full = True
                    self._watch()
                    break
                if time.perf_counter() >= until:
                    if sock.buffered():
                        self._loop.call_soon(self._read)  # poll would not call us for it
                    break
                if not sock.buffered() and not select.select([sock.sock], [], [], 0)[0]:
                    break
        finally:
            if not self._handle_soon:
                self._handle()
            elif self._urgent_inbox:
                self._hand_over(urgent_only=True)  # the backlog's turn comes; a call's now
        if TCP_QUICKACK is not None:
            # ACK what we read now, not up to 40 ms later: the kernel delays it once we
            # answer within its window (our PUBACKs), and meanwhile a broker without
            # TCP_NODELAY holds back whatever it sends us next. The kernel drops the
            # setting again as it sees fit, hence once per read.
            sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)

    def _socket_close(self, client: paho.Client, _u: Any, sock: Any) -> None:
        assert self._loop is not None
        self._sock = None
        self._reading = False
        self._writer = False
        self._call(self._loop.remove_reader, sock)
        self._call(self._loop.remove_writer, sock)

    def _register_write(self, client: paho.Client, _u: Any, sock: Any) -> None:
        self._call(self._write_soon)  # paho queued a packet

    def _unregister_write(self, client: paho.Client, _u: Any, sock: Any) -> None:
        pass  # `_write` watches the socket itself while the kernel is full
