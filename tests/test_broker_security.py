"""The shipped broker config, run as it is, against real clients over real TLS.

Mosquitto runs deploy/mosquitto/mosquitto.conf and deploy/mosquitto/acl with
credentials from deploy/mosquitto/make-site-credentials. Only file paths, ports,
the log destination and the process user are changed, and every test checks
that nothing else was, so the tests follow the file wherever it goes.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from devices import simulator as sim
from monitor.config import ConfigError, load_config
from tests.harness.broker import Publish, require_mosquitto
from tests.harness.service import event, events_topic, eventually, start_service
from tests.harness.site import SITE, Site
from tests.harness.site_broker import (
    DEPLOY_ACL,
    DEPLOY_CONF,
    SCRIPT,
    Credentials,
    SiteBroker,
    changed_lines,
    directive,
    make_credentials,
)

pytestmark = pytest.mark.integration

TIMEOUT = 5.0

BOOTHS = ("b1", "b2")
# Wi-Fi devices, named by their firmware topic (ESPHome, Tasmota, Shelly Gen2, Shelly Gen1)
DEVICES = ("esp-b1", "tasmota_b1", "shellyplus1-b1", "shelly1-b1")
NOT_AUTHORIZED = 135  # MQTT 5 reason code


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    """A site's CA, certificates and accounts, made by the deploy script."""
    return make_credentials(tmp_path_factory.mktemp("site") / "credentials", BOOTHS, DEVICES,
                            zigbee2mqtt=True)


@pytest.fixture
def broker(tmp_path: Path, credentials: Credentials) -> Iterator[SiteBroker]:
    with SiteBroker(tmp_path / "mosquitto", credentials, require_mosquitto()) as site:
        yield site


class Client:
    """An MQTT 5 client on its own thread, as a device, a gateway or a bridge would run."""

    def __init__(
        self, port: int, username: str | None, password: str | None = None, *,
        ca_file: str | None = None, tls: bool = True,
    ) -> None:
        self.port = port
        self.paho = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-{username}-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5, reconnect_on_failure=False,  # a retry would hide a refusal
        )
        if username is not None:
            self.paho.username_pw_set(username, password)
        if tls:
            self.paho.tls_set(ca_certs=ca_file)  # None: the system's CAs
        self.connack: ReasonCode | None = None
        self._answered = threading.Event()  # a CONNACK or the connection closed
        self.pubacks: dict[int, ReasonCode] = {}
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.paho.on_connect = self._on_connect
        self.paho.on_disconnect = lambda *_: self._answered.set()
        self.paho.on_publish = self._on_publish
        self.paho.on_message = self._on_message

    def connect(self) -> ReasonCode | None:
        """Connect; the CONNACK's reason, or None if the broker closed the connection first."""
        self.paho.connect("127.0.0.1", self.port)
        self.paho.loop_start()
        assert self._answered.wait(TIMEOUT), "neither CONNACK nor disconnect"
        return self.connack

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        """Publish at QoS 1; the PUBACK's reason (the broker has dealt with it by then)."""
        info = self.paho.publish(topic, payload, qos=1)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published(), f"{topic}: no PUBACK"
        return self.pubacks[info.mid]

    def subscribe_all(self) -> None:
        """Everything this account may read (the broker grants '#' and filters by the ACL)."""
        granted = threading.Event()
        self.paho.on_subscribe = lambda *_: granted.set()
        self.paho.subscribe("#", qos=1)
        assert granted.wait(TIMEOUT)

    def received(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, message: tuple[str, bytes]) -> bool:
        """Poll until ``message`` has arrived, or a deadline passes."""
        deadline = time.monotonic() + TIMEOUT
        while message not in self.received():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.connack = reason
        self._answered.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        self.pubacks[mid] = reason  # before paho marks the message published

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))


@pytest.fixture
def connect(broker: SiteBroker, credentials: Credentials) -> Iterator[Any]:
    """connect(account) -> a connected TLS client with the account's own password."""
    clients: list[Client] = []

    def connect(account: str, *, port: int | None = None, tls: bool = True) -> Client:
        client = Client(port or broker.port, account, credentials.passwords[account],
                        ca_file=credentials.file("ca.crt"), tls=tls)
        clients.append(client)
        reason = client.connect()
        assert reason is not None and not reason.is_failure, f"{account}: {reason}"
        return client

    yield connect
    for client in clients:
        client.close()


def test_the_running_config_is_the_deploy_file(broker: SiteBroker) -> None:
    """Only paths, ports, log destination and user differ; any other change is caught."""
    deploy = DEPLOY_CONF.read_text(encoding="utf-8")
    running = broker.mosquitto.config_text()
    assert changed_lines(deploy, running) == []
    for key in ("allow_anonymous", "password_file", "acl_file", "max_queued_messages"):
        assert any(directive(line) == key for line in running.splitlines()), key
    # the check itself can fail
    weakened = running.replace("allow_anonymous false", "allow_anonymous true")
    assert any("'allow_anonymous true' instead of" in p for p in changed_lines(deploy, weakened))
    other_acl = running.replace(f"acl_file {DEPLOY_ACL}", "acl_file /tmp/allow-all")
    assert any("names another file" in p for p in changed_lines(deploy, other_acl))
    assert changed_lines(deploy, running + "allow_anonymous true\n")


def test_make_site_credentials_adds_what_is_missing_and_refuses_contradictions(
    credentials: Credentials, tmp_path: Path
) -> None:
    """A second run adds a booth and changes nothing else; another site or host is refused."""
    out = tmp_path / "credentials"
    shutil.copytree(credentials.dir, out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SCRIPT), "--out", str(out), *args],
                              capture_output=True, text=True, check=False)

    done = run("--site", SITE, "--booths", *BOOTHS, "b3")
    assert done.returncode == 0, done.stderr
    after = {path.name: path.read_bytes() for path in out.iterdir()}
    assert set(after) == set(before)
    changed = {name for name in before if after[name] != before[name]}
    assert changed == {"passwords", "passwd"}
    lines = (out / "passwords").read_text(encoding="utf-8").splitlines()
    passwords = dict(line.split(":", 1) for line in lines)
    assert passwords == {**credentials.passwords, "b3": passwords["b3"]}
    assert passwords["b3"] not in done.stdout + done.stderr
    assert all(path.stat().st_mode & 0o077 == 0 for path in out.iterdir())

    for args, complaint in (
        (("--site", "porto", "--booths", "b1"), "not site porto's CA"),
        (("--site", SITE, "--host", "10.0.0.9"), "names other hosts"),
        (("--site", SITE, "--booths", "boothwatch"), "fixed account"),
        (("--site", SITE, "--booths", "b1", "--device", "b1"), "twice"),
    ):
        done = run(*args)
        assert done.returncode == 2 and complaint in done.stderr, (args, done.stderr)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == after


def _mqtt_problems(tmp_path: Path, env: dict[str, str] | None = None, **mqtt: str) -> list[str]:
    """The [mqtt] problems of a site with ``mqtt``: its ``url`` and keys (an empty one is
    left out)."""
    url = mqtt.pop("url", None)
    site = Site(mqtt_url=url, mqtt={key: value for key, value in mqtt.items() if value},
                store=tmp_path / "db")
    path = site.write(tmp_path / "site.toml")
    try:
        load_config(path, env or {})
    except ConfigError as exc:
        return [p for p in exc.problems if p.startswith("mqtt.")]
    return []


def test_config_reports_each_tls_mistake_by_key(credentials: Credentials, tmp_path: Path) -> None:
    """mqtts:// with a CA, a client certificate and a password loads; each mistake names its key."""
    c = credentials.file
    good = {"url": "mqtts://127.0.0.1:8883", "username": "boothwatch",
            "ca_file": c("ca.crt"), "cert_file": c("boothwatch.crt"),
            "key_file": c("boothwatch.key")}
    assert _mqtt_problems(tmp_path, {"BOOTHWATCH_MQTT_PASSWORD": "pw"}, **good) == []
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", c("boothwatch.key"), "-aes256", "-passout",
                    "pass:secret", "-out", str(encrypted)], check=True)
    cases = [
        ({"ca_file": str(tmp_path / "missing.crt")},
         "mqtt.ca_file: cannot read", "No such file"),
        ({"ca_file": c("passwords")}, "mqtt.ca_file: ", "not a PEM CA certificate"),
        ({"cert_file": c("ca.crt")}, "mqtt.key_file: ", "is not mqtt.cert_file's key"),
        ({"cert_file": c("boothwatch.key")}, "mqtt.cert_file: ", "holds no PEM certificate"),
        ({"key_file": c("ca.crt")}, "mqtt.key_file: ", "holds no PEM private key"),
        ({"key_file": str(encrypted)}, "mqtt.key_file: ", "is encrypted"),
        ({"url": "mqtt://127.0.0.1:1883"}, "mqtt.ca_file: ", "use mqtts://"),
    ]
    for change, key, words in cases:
        problems = _mqtt_problems(tmp_path, {"BOOTHWATCH_MQTT_PASSWORD": "pw"},
                                  **{**good, **change})
        assert problems and problems[0].startswith(key) and words in problems[0], (
            change, problems)
    # a password with no account to go with it would be dropped silently
    no_user = {**good, "username": ""}
    assert _mqtt_problems(tmp_path, {"BOOTHWATCH_MQTT_PASSWORD": "pw"}, **no_user) == [
        "mqtt.username: missing, but BOOTHWATCH_MQTT_PASSWORD is set: whose password is it?"
    ]


@pytest.mark.parametrize("listener", ["tls", "loopback"])
def test_anonymous_and_wrong_passwords_are_refused(
    broker: SiteBroker, credentials: Credentials, listener: str
) -> None:
    """No account, a wrong password, another account's password, an unknown user: all refused."""
    tls = listener == "tls"
    port = broker.port if tls else broker.loopback_port
    ca = credentials.file("ca.crt")
    attempts = {
        "anonymous": (None, None),
        "wrong password": ("b1", "not-the-password"),
        "b2's password": ("b1", credentials.passwords["b2"]),
        "unknown user": ("b9", credentials.passwords["b1"]),
    }
    for what, (username, password) in attempts.items():
        client = Client(port, username, password, ca_file=ca, tls=tls)
        try:
            reason = client.connect()
            assert reason is not None and reason.is_failure, f"{what}: {reason}"
        finally:
            client.close()
    # the same listener lets the right password in
    client = Client(port, "b1", credentials.passwords["b1"], ca_file=ca, tls=tls)
    try:
        reason = client.connect()
        assert reason is not None and not reason.is_failure, reason
    finally:
        client.close()


def test_tls_listener_speaks_only_tls_with_the_site_certificate(
    broker: SiteBroker, credentials: Credentials
) -> None:
    """Plain MQTT gets no CONNACK on 8883, and a client that trusts only public CAs refuses it."""
    plain = Client(broker.port, "b1", credentials.passwords["b1"], tls=False)
    try:
        assert plain.connect() is None
    finally:
        plain.close()
    public_cas = Client(broker.port, "b1", credentials.passwords["b1"], ca_file=None)
    with pytest.raises(ssl.SSLCertVerificationError):
        public_cas.connect()


# (account, topic) each account may publish, and who of the service and the gateway reads it
ALLOWED: dict[str, list[tuple[str, str | None]]] = {
    "b1": [(events_topic("b1"), "boothwatch")],
    "pager-gateway": [
        (f"boothwatch/{SITE}/ack", "boothwatch"),
        (f"boothwatch/{SITE}/steps", "boothwatch"),
        (f"boothwatch/{SITE}/duty", "boothwatch"),
    ],
    "boothwatch": [
        (f"boothwatch/{SITE}/status", "pager-gateway"),
        (f"boothwatch/{SITE}/incidents/01TEST", "pager-gateway"),
        (f"boothwatch/{SITE}/pages/ana", "pager-gateway"),
        (f"boothwatch/{SITE}/booths/b1/state", None),
    ],
    "zigbee2mqtt": [
        ("zigbee2mqtt/booth2-button", "boothwatch"),
        ("zigbee2mqtt/bridge/state", "boothwatch"),
    ],
    "esp-b1": [
        ("esp-b1/binary_sensor/motion/state", "boothwatch"),
        ("esp-b1/status", "boothwatch"),
    ],
    "tasmota_b1": [
        ("tele/tasmota_b1/LWT", "boothwatch"),
        ("tele/tasmota_b1/SENSOR", "boothwatch"),
        ("stat/tasmota_b1/RESULT", "boothwatch"),
    ],
    "shellyplus1-b1": [
        ("shellyplus1-b1/events/rpc", "boothwatch"),
        ("shellyplus1-b1/online", "boothwatch"),
    ],
    "shelly1-b1": [
        ("shellies/shelly1-b1/input_event/0", "boothwatch"),
        ("shellies/shelly1-b1/online", "boothwatch"),
    ],
}
# Topics each account must not publish to: impersonating a booth, a device, the service,
# or acknowledging
SERVICE_OUT = [f"boothwatch/{SITE}/status", f"boothwatch/{SITE}/booths/b1/state",
               f"boothwatch/{SITE}/incidents/01TEST", f"boothwatch/{SITE}/pages/ana"]
DENIED: dict[str, list[str]] = {
    "b1": [events_topic("b2"), f"boothwatch/{SITE}/ack", f"boothwatch/{SITE}/duty",
           f"boothwatch/{SITE}/steps",
           *SERVICE_OUT, "zigbee2mqtt/booth1-button", "tele/tasmota_b1/LWT",
           "esp-b1/binary_sensor/motion/state", "shellies/shelly1-b1/input_event/0"],
    "pager-gateway": [events_topic("b1"), *SERVICE_OUT],
    "boothwatch": [events_topic("b1"), f"boothwatch/{SITE}/ack", "zigbee2mqtt/booth1-button"],
    "zigbee2mqtt": [events_topic("b1"), f"boothwatch/{SITE}/ack", f"boothwatch/{SITE}/steps",
                    "tele/tasmota_b1/LWT"],
    "esp-b1": [events_topic("b1"), "esp-b2/binary_sensor/motion/state",
               f"boothwatch/{SITE}/ack"],
    "tasmota_b1": [events_topic("b1"), "tele/tasmota_b2/LWT", f"boothwatch/{SITE}/ack"],
    "shellyplus1-b1": ["shellyplus1-b2/events/rpc", f"boothwatch/{SITE}/ack"],
    "shelly1-b1": ["shellies/shelly1-b2/input_event/0", f"boothwatch/{SITE}/ack"],
}


@pytest.mark.parametrize("account", sorted(ALLOWED))
def test_each_account_publishes_only_its_own_topics(connect: Any, account: str) -> None:
    """What an account may not publish is refused and reaches no reader; what it may, arrives."""
    service, gateway = connect("boothwatch"), connect("pager-gateway")
    service.subscribe_all()
    gateway.subscribe_all()
    publisher = connect(account)
    refused = {}
    for topic in DENIED[account]:
        reason = publisher.publish(topic, f"forged by {account}".encode())
        refused[topic] = reason.value
    expected: dict[str, list[tuple[str, bytes]]] = {"boothwatch": [], "pager-gateway": []}
    for topic, reader in ALLOWED[account]:
        payload = f"from {account}".encode()
        reason = publisher.publish(topic, payload)
        assert not reason.is_failure, (topic, reason)
        if reader is not None:
            expected[reader].append((topic, payload))

    # The broker sent each PUBACK above after routing the message, so anything it routed
    # to a reader is ahead of a marker published now in that reader's connection.
    markers = set()
    for reader, marker_from, marker_topic in (
        (service, connect("b2"), events_topic("b2")),
        (gateway, service, f"boothwatch/{SITE}/incidents/marker"),
    ):
        marker = (marker_topic, uuid.uuid4().hex.encode())
        markers.add(marker)
        assert not marker_from.publish(*marker).is_failure
        assert reader.wait_for(marker), f"marker lost: {marker}"
    got = {
        "boothwatch": [m for m in service.received() if m not in markers],
        "pager-gateway": [m for m in gateway.received() if m not in markers],
    }
    assert got == expected
    assert refused == dict.fromkeys(DENIED[account], NOT_AUTHORIZED)


def device_publisher(client: Client) -> Publish:
    def publish(topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        assert (qos, retain) == (1, False), "a device here publishes at QoS 1, not retained"
        data = payload.encode() if isinstance(payload, str) else payload
        reason = client.publish(topic, data)
        assert not reason.is_failure, (topic, reason)

    return publish


async def test_boothwatch_end_to_end_over_tls(
    broker: SiteBroker, credentials: Credentials, connect: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over TLS with accounts: b1's call pages a nurse; b1 cannot ack it, the gateway can."""
    monkeypatch.setenv("BOOTHWATCH_MQTT_PASSWORD", credentials.passwords["boothwatch"])
    device = connect("b1")
    gateway = connect("pager-gateway")
    def over_tls(site: Site) -> None:
        site.mqtt_url = f"mqtts://127.0.0.1:{broker.port}"
        site.mqtt.update(username="boothwatch", ca_file=credentials.file("ca.crt"),
                         cert_file=credentials.file("boothwatch.crt"),
                         key_file=credentials.file("boothwatch.key"))

    async with start_service(tmp_path, broker.mosquitto, device_publisher(device),
                             edit=over_tls) as svc:
        assert svc.runtime.config.mqtt.tls
        svc.publish(events_topic("b1"), event("button", press="call", id="tls-call"))
        (page,) = await svc.hook.wait(1)
        assert (page["booth"], page["responder"], page["triggers"]) == ("b1", "ana", ["call"])
        ack = json.dumps({"incident": page["incident"], "responder": "ana"}).encode()

        # b1's forged ack is refused; its next event proves the service read past it
        assert device.publish(f"boothwatch/{SITE}/ack", ack).value == NOT_AUTHORIZED
        heartbeats = 'boothwatch_events_total{kind="heartbeat",result="accepted"}'
        svc.publish(events_topic("b1"), event("heartbeat", id="tls-heartbeat"))
        await eventually(lambda: svc.metric(heartbeats), 5)
        assert (await svc.incidents())[0]["state"] == "open"

        assert not gateway.publish(f"boothwatch/{SITE}/ack", ack).is_failure

        async def acknowledged() -> dict[str, Any] | None:
            incident = (await svc.incidents())[0]
            return incident if incident["state"] == "acknowledged" else None

        assert (await eventually(acknowledged, 5))["acknowledged_by"] == "ana"


# --- boothwatch sim as a booth's account ----------------------------------------------


def run_sim(url: str, booths: int, *args: str, password_env: str | None = None,
            ) -> subprocess.CompletedProcess[str]:
    """The real `boothwatch sim` process: the canonical call scenario at speed 100 (about
    1.3 s); ``password_env`` as BOOTHWATCH_MQTT_PASSWORD."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOTHWATCH_")}
    if password_env is not None:
        env["BOOTHWATCH_MQTT_PASSWORD"] = password_env
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", "sim", "--mqtt", url, "--site", SITE,
         "--booths", str(booths), "--format", "canonical", "--scenario", "call",
         "--speed", "100", *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )


def read_by_service(service: Client, count: int) -> Counter[str]:
    """The booths of the events the service's account has read, once there are `count`
    (and a moment for any more to show)."""
    deadline = time.monotonic() + TIMEOUT
    while len(service.received()) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    return Counter(topic.split("/")[3] for topic, _ in service.received())


def test_sim_counts_refused_publishes_by_reason_and_never_prints_the_password(
    broker: SiteBroker, credentials: Credentials, connect: Any,
) -> None:
    """b1's account simulating b1 and b2: b2's publishes are counted as refused, exit 1."""
    service = connect("boothwatch")
    service.subscribe_all()
    password = credentials.passwords["b1"]
    url = f"mqtt://b1:{password}@127.0.0.1:{broker.loopback_port}"
    done = run_sim(url, 2)

    sent = Counter(s.booth for s in sim.traffic(SITE, "canonical", "call", 2))
    assert done.returncode == 1, done.stdout + done.stderr
    assert password not in done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert f"-> mqtt://b1:***@127.0.0.1:{broker.loopback_port} " in lines[0]
    refusals = [line for line in lines if line.startswith("refused: ")]
    assert len(refusals) == 1  # one line for the topic, the rest counted
    assert f" on {events_topic('b2')}: Not authorized (0x87)" in refusals[0]
    assert lines[-1].startswith(f"done: sent {sent.total()} ")
    assert lines[-1].endswith(
        f"; accepted {sent['b1']}, refused {sent['b2']} (Not authorized: b2 {sent['b2']})")
    # what the simulator calls accepted is what the service's account read
    assert read_by_service(service, sent["b1"]) == {"b1": sent["b1"]}


def test_sim_exits_0_when_the_broker_accepts_everything(
    broker: SiteBroker, credentials: Credentials, connect: Any,
) -> None:
    """b1's account simulating b1 alone, its password from the environment: all accepted."""
    service = connect("boothwatch")
    service.subscribe_all()
    password = credentials.passwords["b1"]
    done = run_sim(f"mqtt://b1@127.0.0.1:{broker.loopback_port}", 1, password_env=password)

    sent = sum(1 for _ in sim.traffic(SITE, "canonical", "call", 1))
    assert done.returncode == 0, done.stdout + done.stderr
    assert password not in done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].endswith(f"; accepted {sent}")
    assert read_by_service(service, sent) == {"b1": sent}


def test_sim_over_mqtt_3_1_1_cannot_see_refusals(
    broker: SiteBroker, credentials: Credentials, connect: Any,
) -> None:
    """With MQTT 3.1.1 Mosquitto acks the publishes it drops: why the simulator speaks 5."""
    service = connect("boothwatch")
    service.subscribe_all()
    url = f"mqtt://b1:{credentials.passwords['b1']}@127.0.0.1:{broker.loopback_port}"
    done = run_sim(url, 2, "--protocol", "3.1.1")

    sent = Counter(s.booth for s in sim.traffic(SITE, "canonical", "call", 2))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "MQTT 3.1.1: the broker acks a publish it refuses" in lines[0]
    assert lines[-1].endswith(f"; acked {sent.total()}")
    assert read_by_service(service, sent["b1"]) == {"b1": sent["b1"]}  # b2's were dropped
