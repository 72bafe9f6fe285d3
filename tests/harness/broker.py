"""A real Mosquitto for integration tests: our own config, a free port, a private directory.

Never a shared or public broker: each test gets a fresh process that listens on
127.0.0.1 only. Persistence is on, so a persistent session (fixed client id,
clean start off) keeps its queued QoS 1 messages while the client is away, and
across `stop()` and `start()` on the same instance, which keeps its port.
The queue limits are raised as the deploy config raises them, because the
defaults drop QoS 1 messages to a slow subscriber past 1000 queued.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, Self

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

DEFAULT_BINARY = "/usr/sbin/mosquitto"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_RUNNING = re.compile(rb"mosquitto version \S+ running")
_PORT_ATTEMPTS = 3  # a free port can be taken by someone else before mosquitto binds it


def find_mosquitto() -> str | None:
    """The mosquitto binary: on PATH, else where Debian puts it (sbin is often off PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    if os.access(DEFAULT_BINARY, os.X_OK):
        return DEFAULT_BINARY
    return None


def require_mosquitto() -> str:
    """The binary, else skip the test (fail it under CI, which must run integration tests)."""
    binary = find_mosquitto()
    if binary is None:
        message = "mosquitto is not installed (make test installs it: apt-get install mosquitto)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the integration tests", pytrace=False)
        pytest.skip(message)
    return binary


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux's default 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_FREE_PORTS_FROM = 10000
_FREE_PORTS_TO = max(_FREE_PORTS_FROM + 2000, min(_ephemeral_low(), 32768))
_handed_out: set[int] = set()
_ports = random.Random()  # its own seed from os.urandom: two test runs on one box differ


def free_port() -> int:
    """A port nothing listens on now, for a server a test is about to start.

    Taken below the kernel's ephemeral range, not by binding port 0: a port from that
    range can be given to any outgoing connection (a service's MQTT or PostgreSQL
    client, say) between this call and the server's bind, which once made a
    twelve-site test's HTTP bind fail with "address already in use". Never the same
    port twice in one test process."""
    for _ in range(1000):
        port = _ports.randrange(_FREE_PORTS_FROM, _FREE_PORTS_TO)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {_FREE_PORTS_FROM}-{_FREE_PORTS_TO}")


class Publish(Protocol):
    """What the `mqtt_publish` fixture returns: publish and wait for the broker's ack."""

    def __call__(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False
    ) -> None: ...


class Publisher:
    """One MQTT v5 client on its own thread; `publish` returns once the broker has the
    message (its PUBACK at QoS 1)."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        connected = threading.Event()
        outcome: list[Any] = []

        def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
            outcome.append(reason_code)
            connected.set()

        self.client.on_connect = on_connect
        self.client.connect(host, port)
        self.client.loop_start()
        try:
            if not connected.wait(timeout):
                raise TimeoutError(f"no CONNACK from {host}:{port}")
            if outcome[0].is_failure:
                raise ConnectionError(f"{host}:{port} refused the publisher: {outcome[0]}")
        except BaseException:
            self.close()
            raise

    def publish(self, topic: str, payload: bytes | str, qos: int = 1,
                retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=self.timeout)
        if not info.is_published():
            raise TimeoutError(f"{topic}: no ack within {self.timeout:g} s")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class MosquittoError(RuntimeError):
    """Mosquitto did not start; the message carries the tail of its log."""


class Mosquitto:
    def __init__(
        self,
        workdir: Path,
        binary: str | None = None,
        port: int | None = None,
        config: Callable[[Mosquitto], str] | None = None,
    ) -> None:
        """``config`` returns a whole config instead of ours, given the broker (its port and
        paths); it must log to ``log_path`` with ``log_type information``, as ours does."""
        found = binary or find_mosquitto()
        if found is None:
            raise MosquittoError(f"mosquitto not found on PATH or at {DEFAULT_BINARY}")
        self.binary = found
        self.workdir = Path(workdir)
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.output_path = self.workdir / "mosquitto.out"  # stderr: errors before the log opens
        self.host = "127.0.0.1"
        self._port = port  # None: a free one at the first start()
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self._log_start = 0  # where this run's log begins, since a restart appends
        self._config = config

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the broker has no port until start()")
        return self._port

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the broker and return once it accepts TCP connections."""
        if self.running:
            raise RuntimeError("mosquitto is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A restart keeps its port, so clients reconnect to the same URL.
        fixed = self._port is not None
        for attempt in range(1 if fixed else _PORT_ATTEMPTS):
            if not fixed:
                self._port = free_port()
            self._write_config()
            self._spawn()
            try:
                self._wait_ready()
                return
            except MosquittoError:
                lost_race = "Address already in use" in self._log_tail()
                self.stop()
                if not lost_race or attempt == _PORT_ATTEMPTS - 1 or fixed:
                    raise

    def reload(self) -> None:
        """SIGHUP: Mosquitto reads its password and ACL files again, as after an
        operator's fix, without dropping anyone."""
        if self._process is None:
            raise RuntimeError("mosquitto is not running")
        self._process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL); safe to call more than once."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self._output is not None:
            self._output.close()
            self._output = None

    def log_text(self) -> str:
        """Everything the broker logged, stderr included."""
        parts = []
        for path in (self.output_path, self.log_path):
            if path.exists():
                parts.append(path.read_text(encoding="utf-8", errors="replace"))
        return "".join(parts)

    def config_text(self) -> str:
        return self.config_path.read_text(encoding="utf-8")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _write_config(self) -> None:
        if self._config is not None:
            self.config_path.write_text(self._config(self), encoding="utf-8")
            return
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "max_inflight_messages 1000",
            "max_queued_messages 100000",
            f"log_dest file {self.log_path}",
            # One type a line: mosquitto reads only the first word of a log_type line.
            "log_type error",
            "log_type warning",
            "log_type notice",
            # Only this level logs "running", the sign that our listener is open.
            "log_type information",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto switches to the user "mosquitto", who cannot write here.
            lines.append("user root")
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _spawn(self) -> None:
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._output = self.output_path.open("ab")
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise MosquittoError(f"mosquitto exited with {code}:\n{self._log_tail()}")
            # The log line proves the listener is ours: a port taken by someone else
            # accepts connections too, while our broker dies of "Address already in use".
            if self._running_logged():
                try:
                    with socket.create_connection((self.host, self.port), timeout=0.5):
                        return
                except OSError:
                    pass
            time.sleep(0.02)
        raise MosquittoError(
            f"mosquitto did not accept connections on {self.host}:{self.port} "
            f"within {START_TIMEOUT:g} s:\n{self._log_tail()}"
        )

    def _running_logged(self) -> bool:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_start)
                return _RUNNING.search(log.read()) is not None
        except FileNotFoundError:
            return False

    def _log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def retained(broker: Mosquitto, topic: str) -> dict[str, Any]:
    """The message retained on ``topic``, read with a fresh subscriber: a JSON object, or
    ``{"raw": payload}`` when it is not one."""
    got: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        got.append(bytes(msg.payload))
        done.set()

    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert done.wait(5), f"nothing retained on {topic}"
    finally:
        client.disconnect()
        client.loop_stop()
    result: dict[str, Any] = json.loads(got[0]) if got[0][:1] == b"{" else {"raw": got[0]}
    return result
