"""The site configuration (interface section 3) as frozen dataclasses.

`load_config` reads TOML, checks every key and reports every problem at once,
each named by its key path (``booths[2].long_session: ...``). Nothing here does
I/O except `load_config` reading its file; the core takes a `Config`.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import ssl
import tomllib
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, TypeVar, assert_never
from urllib.parse import urlsplit

from alerts.channels.ntfy import NTFY_TOPIC_RE
from alerts.channels.pushover import (
    PUSHOVER_API,
    PUSHOVER_MAX_EXPIRE,
    PUSHOVER_MIN_POLL,
    PUSHOVER_MIN_RETRY,
    pushover_timing,
)
from monitor.core.durations import describe, format_duration, parse_duration
from monitor.core.readings import PRESS_TYPES
from monitor.core.settings import (
    ADDRESS_PLACEHOLDER,
    PRIORITIES,
    RESPONDER_PLACEHOLDER,
    BoothConfig,
    ChannelConfig,
    ChannelType,
    Config,
    DeviceConfig,
    DeviceRole,
    DeviceSource,
    HttpConfig,
    MqttConfig,
    OccupancyFrom,
    Policy,
    PressAction,
    Priority,
    RateLimitConfig,
    ResponderConfig,
    Shift,
    SiteConfig,
    Step,
    StoreConfig,
)

# --------------------------------------------------------------------------- errors


class ConfigError(Exception):
    """The configuration is unusable; `problems` lists every problem, each with its key path."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


# --------------------------------------------------------------------------- checking

Table = dict[str, object]

_SITE_ID_RE = re.compile(r"[a-z0-9_-]+")
_BOOTH_ID_RE = _SITE_ID_RE
_CHANNEL_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
_RESPONDER_ID_RE = re.compile(r"[a-z0-9_.-]+")
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")

_CHANNEL_TYPES: dict[str, ChannelType] = {
    "webhook": "webhook",
    "mqtt": "mqtt",
    "console": "console",
    "ntfy": "ntfy",
    "pushover": "pushover",
    "apprise": "apprise",
}
_CHANNEL_KEYS: dict[str, tuple[str, ...]] = {
    "webhook": ("type", "url", "secret", "secret_env", "timeout"),
    "mqtt": ("type", "topic"),
    "console": ("type",),
    "ntfy": ("type", "url", "topic", "token_env", "timeout"),
    "pushover": ("type", "url", "token_env", "retry", "expire", "poll_interval", "timeout"),
    "apprise": ("type", "url", "url_env", "timeout"),
}
_PROTOCOLS: dict[str, Literal["5", "3.1.1"]] = {"5": "5", "3.1.1": "3.1.1"}
_MQTT_PASSWORD_ENV = "BOOTHWATCH_MQTT_PASSWORD"
_SESSION_EXPIRY_MAX = 0xFFFFFFFF  # MQTT 5: four-byte interval; this value means "never expires"
_OUTAGE_PAGE_AFTER_MAX = 3600.0  # an hour with no booth watched is already far too long

DEFAULT_LONG_SESSION = 20 * 60.0
DEFAULT_STILLNESS = 3 * 60.0
DEFAULT_DEVICE_TIMEOUT = 15 * 60.0
DEFAULT_DOOR_WINDOW = 30.0
DEFAULT_BATTERY_LOW = 20
_BOOTH_THRESHOLDS: tuple[tuple[str, float], ...] = (
    ("long_session", DEFAULT_LONG_SESSION),
    ("stillness", DEFAULT_STILLNESS),
    ("device_timeout", DEFAULT_DEVICE_TIMEOUT),
    ("door_window", DEFAULT_DOOR_WINDOW),
)
_OCCUPANCY_FROM: tuple[OccupancyFrom, ...] = ("sensor", "door")

_DEVICE_ID_RE = re.compile(r"[A-Za-z0-9_.-]+")
_DEVICE_KEYS = ("id", "source", "topic", "booth", "role", "actions", "battery_low", "inverted")
DEVICE_SOURCES: tuple[DeviceSource, ...] = (
    "zigbee2mqtt", "esphome", "tasmota", "shelly", "canonical",
)  # fmt: skip
DEVICE_ROLES: tuple[DeviceRole, ...] = (
    "call_button", "presence_button", "motion", "occupancy", "door",
)  # fmt: skip
_BUTTON_ROLES: tuple[DeviceRole, ...] = ("call_button", "presence_button")

PRESS_ACTIONS: tuple[PressAction, ...] = ("call", "presence", "clear", "ignore")
_SERVICE_ROOT = "boothwatch"  # the service's own topic namespace
_ESPHOME_TOPIC_RE = re.compile(r".+/binary_sensor/[^/]+/state")
_SHELLY_GEN1_PREFIX = "shellies/"

_T = TypeVar("_T", bound=str)


def _one_of(options: Sequence[str]) -> str:
    """The options as prose: "a, b or c"."""
    return options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"


def _join(path: str, key: str) -> str:
    shown = key if _BARE_KEY_RE.fullmatch(key) else json.dumps(key, ensure_ascii=False)
    return f"{path}.{shown}" if path else shown


class _Checker:
    """Collects problems; its getters return a placeholder after recording a problem."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def known_keys(self, table: Table, allowed: Sequence[str], path: str) -> None:
        for key in table:
            if key in allowed:
                continue
            message = "unknown key"
            close = difflib.get_close_matches(key, allowed, n=1)
            if close:
                message += f' (did you mean "{close[0]}"?)'
            self.add(_join(path, key), message)

    def table(self, parent: Table, key: str, path: str, *, required: bool) -> Table | None:
        where = _join(path, key)
        if key not in parent:
            if required:
                self.add(where, "missing")
            return None
        value = parent[key]
        if not isinstance(value, dict):
            self.add(where, f"expected a table, got {describe(value)}")
            return None
        return value

    def tables(
        self, parent: Table, key: str, path: str, *, required: bool = True
    ) -> list[tuple[str, Table]] | None:
        """An array of tables ([[key]]) as (path, table) pairs; None if unusable.

        A required one must be present and non-empty; an optional one may be absent or empty.
        """
        where = _join(path, key)
        if key not in parent:
            if not required:
                return []
            self.add(where, f"missing (at least one [[{key}]] is required)")
            return None
        value = parent[key]
        if not isinstance(value, list):
            self.add(where, f"expected a list of tables ([[{key}]]), got {describe(value)}")
            return None
        if not value and required:
            self.add(where, f"at least one [[{key}]] is required")
            return None
        out: list[tuple[str, Table]] = []
        for index, item in enumerate(value):
            item_path = f"{where}[{index}]"
            if isinstance(item, dict):
                out.append((item_path, item))
            else:
                self.add(item_path, f"expected a table, got {describe(item)}")
        return out

    def string(self, table: Table, key: str, path: str) -> str:
        """A required non-empty string ("" after a problem)."""
        where = _join(path, key)
        if key not in table:
            self.add(where, "missing")
            return ""
        value = table[key]
        if not isinstance(value, str):
            self.add(where, f"expected a string, got {describe(value)}")
            return ""
        if not value.strip():
            self.add(where, "must not be empty")
            return ""
        return value

    def optional_string(self, table: Table, key: str, path: str) -> str | None:
        if key not in table:
            return None
        return self.string(table, key, path) or None

    def identifier(self, table: Table, key: str, path: str, pattern: re.Pattern[str]) -> str:
        value = self.string(table, key, path)
        if value and not pattern.fullmatch(value):
            self.add(_join(path, key), f"{describe(value)} must match ^{pattern.pattern}$")
            return ""
        return value

    def duration(
        self, table: Table, key: str, path: str, default: float | None, *, positive: bool
    ) -> float:
        """A duration; `default` when absent (None: required). 0.0 after a problem."""
        where = _join(path, key)
        if key not in table:
            if default is None:
                self.add(where, "missing")
                return 0.0
            return default
        try:
            seconds = parse_duration(table[key])
        except ValueError as exc:
            self.add(where, str(exc))
            return 0.0
        if positive and seconds <= 0:
            self.add(where, "must be greater than 0")
        return seconds

    def optional_duration(self, table: Table, key: str, path: str) -> float | None:
        """An optional duration that must be > 0 when given."""
        if key not in table:
            return None
        return self.duration(table, key, path, None, positive=True)

    def choice(
        self, table: Table, key: str, path: str, options: Sequence[_T], default: _T | None
    ) -> _T | None:
        """One of `options`; `default` when absent (None: required). None after a problem."""
        where = _join(path, key)
        if key not in table:
            if default is None:
                self.add(where, f"missing ({_one_of(options)})")
            return default
        value = table[key]
        for option in options:
            if value == option:
                return option
        message = f"expected {_one_of(options)}, got {describe(value)}"
        if isinstance(value, str):
            close = difflib.get_close_matches(value, options, n=1)
            if close:
                message += f' (did you mean "{close[0]}"?)'
        self.add(where, message)
        return None

    def percent(self, table: Table, key: str, path: str, default: int) -> int:
        """A whole percentage from 1 to 99; `default` when absent or after a problem."""
        if key not in table:
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(
                _join(path, key),
                f"expected a whole percentage from 1 to 99, got {describe(value)}",
            )
            return default
        if not 1 <= value <= 99:
            self.add(_join(path, key), f"must be between 1 and 99, got {value}")
            return default
        return value

    def boolean(self, table: Table, key: str, path: str, default: bool) -> bool:
        if key not in table:
            return default
        value = table[key]
        if not isinstance(value, bool):
            self.add(_join(path, key), f"expected true or false, got {describe(value)}")
            return default
        return value

    def strings(self, table: Table, key: str, path: str) -> list[tuple[str, str]]:
        """A required non-empty list of non-empty strings as (path, value) pairs."""
        where = _join(path, key)
        if key not in table:
            self.add(where, "missing")
            return []
        value = table[key]
        if not isinstance(value, list):
            self.add(where, f"expected a list of strings, got {describe(value)}")
            return []
        if not value:
            self.add(where, "must not be empty")
            return []
        out: list[tuple[str, str]] = []
        for index, item in enumerate(value):
            item_path = f"{where}[{index}]"
            if not isinstance(item, str):
                self.add(item_path, f"expected a string, got {describe(item)}")
            elif not item.strip():
                self.add(item_path, "must not be empty")
            else:
                out.append((item_path, item))
        return out


def _check_http_url(c: _Checker, url: str, where: str) -> bool:
    """Record a problem unless `url` is an absolute http(s) URL with a host."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        c.add(where, f"not a valid URL ({exc})")
        return False
    if parts.scheme.lower() not in ("http", "https"):
        c.add(where, f"scheme must be http or https, got {describe(url)}")
        return False
    if not parts.hostname:
        c.add(where, f"missing host, got {describe(url)}")
        return False
    return True


# --------------------------------------------------------------------------- sections


def _parse_site(c: _Checker, t: Table) -> SiteConfig:
    c.known_keys(t, ("id", "name", "timezone"), "site")
    site_id = c.identifier(t, "id", "site", _SITE_ID_RE)
    name = c.string(t, "name", "site")
    timezone = c.string(t, "timezone", "site")
    if timezone:
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            c.add(
                "site.timezone",
                f"unknown time zone {describe(timezone)} (expected a name like "
                '"Europe/Lisbon")',
            )
    return SiteConfig(id=site_id, name=name, timezone=timezone)


def _parse_mqtt(c: _Checker, t: Table, env: Mapping[str, str]) -> MqttConfig:
    allowed = (
        "url", "client_id", "username", "ca_file", "cert_file", "key_file",
        "protocol", "keepalive", "session_expiry", "outage_page_after",
    )  # fmt: skip
    if "password" in t:
        c.add(
            "mqtt.password",
            f"do not put the password in the file; set the environment variable "
            f"{_MQTT_PASSWORD_ENV} instead",
        )
    c.known_keys({k: v for k, v in t.items() if k != "password"}, allowed, "mqtt")

    url = c.string(t, "url", "mqtt")
    host, port, tls = "", 0, False
    url_problems = len(c.problems)
    if url:
        host, port, tls = _parse_mqtt_url(c, url)
    # plain or TLS is known only from a good URL; a bad one is reported already
    scheme_known = bool(url) and len(c.problems) == url_problems

    if "client_id" not in t:
        c.add(
            "mqtt.client_id",
            "missing; set a fixed client id so the broker keeps our session "
            "(and queued events) while we are down",
        )
        client_id = ""
    else:
        raw = t["client_id"]
        client_id = raw if isinstance(raw, str) else ""
        if not isinstance(raw, str):
            c.add("mqtt.client_id", f"expected a string, got {describe(raw)}")
        elif not raw.strip():
            c.add(
                "mqtt.client_id",
                "must not be empty; it must be fixed so the broker keeps our session "
                "while we are down",
            )

    username = c.optional_string(t, "username", "mqtt")
    password = env.get(_MQTT_PASSWORD_ENV) or None
    if password and not username:
        # paho sends a password only with a user name: it would be dropped without a word
        c.add("mqtt.username", f"missing, but {_MQTT_PASSWORD_ENV} is set: whose password is it?")
    ca_file = c.optional_string(t, "ca_file", "mqtt")
    cert_file = c.optional_string(t, "cert_file", "mqtt")
    key_file = c.optional_string(t, "key_file", "mqtt")
    if key_file and not cert_file:
        c.add("mqtt.key_file", "needs mqtt.cert_file as well")
    if cert_file and not key_file:
        c.add("mqtt.cert_file", "needs mqtt.key_file as well")
    _check_tls_files(c, tls if scheme_known else None, ca_file, cert_file, key_file)

    protocol: Literal["5", "3.1.1"] = "5"
    if "protocol" in t:
        raw_protocol = t["protocol"]
        key = str(raw_protocol) if isinstance(raw_protocol, str | int) else ""
        if isinstance(raw_protocol, bool) or key not in _PROTOCOLS:
            c.add("mqtt.protocol", f'expected "5" or "3.1.1", got {describe(raw_protocol)}')
        else:
            protocol = _PROTOCOLS[key]

    keepalive = 30
    if "keepalive" in t:
        raw_keepalive = t["keepalive"]
        if isinstance(raw_keepalive, bool) or not isinstance(raw_keepalive, int):
            c.add(
                "mqtt.keepalive",
                f"expected a whole number of seconds, got {describe(raw_keepalive)}",
            )
        elif not 1 <= raw_keepalive <= 65535:
            c.add("mqtt.keepalive", f"must be between 1 and 65535 seconds, got {raw_keepalive}")
        else:
            keepalive = raw_keepalive

    session_expiry = c.duration(
        t, "session_expiry", "mqtt", 7 * 24 * 3600.0, positive=False
    )
    if session_expiry > _SESSION_EXPIRY_MAX:
        c.add("mqtt.session_expiry", f"must be at most {_SESSION_EXPIRY_MAX} seconds")
    outage_page_after = c.duration(t, "outage_page_after", "mqtt", 60.0, positive=True)
    if outage_page_after > _OUTAGE_PAGE_AFTER_MAX:
        c.add("mqtt.outage_page_after",
              f"must be at most {format_duration(_OUTAGE_PAGE_AFTER_MAX)}: nobody watches the "
              "booths while the broker is down")

    return MqttConfig(
        url=url,
        host=host,
        port=port,
        tls=tls,
        client_id=client_id,
        username=username,
        password=password,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        protocol=protocol,
        keepalive=keepalive,
        session_expiry=session_expiry,
        outage_page_after=outage_page_after,
    )


def _parse_mqtt_url(c: _Checker, url: str) -> tuple[str, int, bool]:
    """(host, port, tls) from an mqtt:// or mqtts:// URL, recording problems."""
    where = "mqtt.url"
    try:
        parts = urlsplit(url)
        explicit_port = parts.port
    except ValueError as exc:
        c.add(where, f"not a valid URL ({exc})")
        return "", 0, False
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts"):
        c.add(where, f"scheme must be mqtt or mqtts, got {describe(url)}")
        return "", 0, False
    tls = scheme == "mqtts"
    host = parts.hostname or ""
    if not host:
        c.add(where, f"missing host (e.g. mqtt://127.0.0.1:1883), got {describe(url)}")
    if parts.username is not None or parts.password is not None:
        c.add(
            where,
            f"must not carry credentials; use mqtt.username and {_MQTT_PASSWORD_ENV}",
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        c.add(where, "must be just scheme://host[:port], without a path or query")
    port = explicit_port if explicit_port is not None else (8883 if tls else 1883)
    if not 1 <= port <= 65535:
        c.add(where, f"port must be between 1 and 65535, got {port}")
    return host, port, tls


def _check_tls_files(
    c: _Checker, tls: bool | None, ca_file: str | None, cert_file: str | None,
    key_file: str | None,
) -> None:
    """Load the TLS files as the client will: a wrong path, a file of the wrong kind or a key
    that is not the certificate's is a problem now, not a reconnect loop at run time.
    ``tls`` is None when the URL is bad, so plain or TLS is unknown."""
    given = {"ca_file": ca_file, "cert_file": cert_file, "key_file": key_file}
    if tls is False:
        for key, name in given.items():
            if name:
                c.add(
                    f"mqtt.{key}",
                    "only used with TLS, but mqtt.url is mqtt://: use mqtts:// "
                    "(or nothing would be encrypted)",
                )
        return
    contents: dict[str, bytes] = {}
    for key, name in given.items():
        if name:
            try:
                with open(name, "rb") as handle:
                    contents[key] = handle.read()
            except OSError as exc:
                c.add(f"mqtt.{key}", f"cannot read {describe(name)}: {exc.strerror or exc}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file and "ca_file" in contents:
        try:
            context.load_verify_locations(cafile=ca_file)
        except ssl.SSLError as exc:
            c.add(
                "mqtt.ca_file",
                f"{describe(ca_file)} is not a PEM CA certificate ({exc.reason or exc})",
            )
    if not (cert_file and key_file and "cert_file" in contents and "key_file" in contents):
        return
    if b"-----BEGIN CERTIFICATE-----" not in contents["cert_file"]:
        c.add("mqtt.cert_file", f"{describe(cert_file)} holds no PEM certificate")
    elif b"ENCRYPTED" in contents["key_file"]:
        c.add(
            "mqtt.key_file",
            f"{describe(key_file)} is encrypted, and the service cannot ask for a "
            "passphrase: store it unencrypted, readable only by the service's user",
        )
    elif b"PRIVATE KEY-----" not in contents["key_file"]:
        c.add("mqtt.key_file", f"{describe(key_file)} holds no PEM private key")
    else:
        try:
            # an empty passphrase: OpenSSL must never stop to ask for one on a terminal
            context.load_cert_chain(cert_file, key_file, password="")
        except ssl.SSLError as exc:
            if "KEY_VALUES_MISMATCH" in str(exc):
                c.add("mqtt.key_file", f"{describe(key_file)} is not mqtt.cert_file's key")
            else:
                c.add("mqtt.cert_file", f"cannot load it with mqtt.key_file ({exc.reason or exc})")


def _parse_listen(c: _Checker, listen: str) -> tuple[str, int]:
    where = "http.listen"
    if listen.startswith("["):
        match = re.fullmatch(r"\[([^\]]+)\]:([0-9]+)", listen)
        if match is None:
            c.add(where, f'expected "host:port" like "[::1]:8080", got {describe(listen)}')
            return "", 0
        host, port_text = match.group(1), match.group(2)
    else:
        host, sep, port_text = listen.rpartition(":")
        if not sep or not host:
            c.add(where, f'expected "host:port" like "127.0.0.1:8080", got {describe(listen)}')
            return "", 0
        if ":" in host:
            c.add(where, f'put an IPv6 address in brackets ("[::1]:8080"), got {describe(listen)}')
            return "", 0
    if not port_text.isdigit() or not port_text.isascii() or not 1 <= int(port_text) <= 65535:
        c.add(where, f"port must be a number from 1 to 65535, got {describe(listen)}")
        return host, 0
    return host, int(port_text)


def _parse_http(c: _Checker, t: Table) -> HttpConfig:
    c.known_keys(t, ("listen", "public_url", "ack_link_ttl"), "http")
    listen = c.string(t, "listen", "http")
    host, port = _parse_listen(c, listen) if listen else ("", 0)
    public_url = c.string(t, "public_url", "http")
    if public_url and _check_http_url(c, public_url, "http.public_url"):
        parts = urlsplit(public_url)
        if parts.query or parts.fragment:
            c.add("http.public_url", "must not have a query or fragment (ack links are appended)")
    ttl = c.duration(t, "ack_link_ttl", "http", 12 * 3600.0, positive=True)
    return HttpConfig(host=host, port=port, public_url=public_url.rstrip("/"), ack_link_ttl=ttl)


@dataclass(slots=True)
class _Defaults:
    """[defaults]: per-booth thresholds and occupancy_from, and each device's battery_low."""

    durations: dict[str, float] = field(default_factory=lambda: dict(_BOOTH_THRESHOLDS))
    occupancy_from: OccupancyFrom = "sensor"
    battery_low: int = DEFAULT_BATTERY_LOW


def _parse_defaults(c: _Checker, t: Table | None) -> _Defaults:
    defaults = _Defaults()
    if t is None:
        return defaults
    c.known_keys(t, (*defaults.durations, "occupancy_from", "battery_low"), "defaults")
    for key, builtin in _BOOTH_THRESHOLDS:
        value = c.duration(t, key, "defaults", builtin, positive=True)
        # keep booths' checks meaningful
        defaults.durations[key] = value if value > 0 else builtin
    occupancy_from = c.choice(t, "occupancy_from", "defaults", _OCCUPANCY_FROM, "sensor")
    defaults.occupancy_from = occupancy_from or "sensor"
    defaults.battery_low = c.percent(t, "battery_low", "defaults", DEFAULT_BATTERY_LOW)
    return defaults


def _parse_booths(
    c: _Checker, items: list[tuple[str, Table]], defaults: _Defaults
) -> list[BoothConfig]:
    booths: list[BoothConfig] = []
    seen: dict[str, str] = {}
    allowed = ("id", "name", *defaults.durations, "occupancy_from")
    for path, t in items:
        c.known_keys(t, allowed, path)
        booth_id = c.identifier(t, "id", path, _BOOTH_ID_RE)
        if booth_id in seen:
            c.add(f"{path}.id", f"duplicate booth id {describe(booth_id)} (also {seen[booth_id]})")
        elif booth_id:
            seen[booth_id] = path
        name = c.string(t, "name", path)
        thresholds = {
            key: c.duration(t, key, path, default, positive=True)
            for key, default in defaults.durations.items()
        }
        occupancy_from = c.choice(
            t, "occupancy_from", path, _OCCUPANCY_FROM, defaults.occupancy_from
        )
        booths.append(
            BoothConfig(
                id=booth_id,
                name=name,
                long_session=thresholds["long_session"],
                stillness=thresholds["stillness"],
                device_timeout=thresholds["device_timeout"],
                occupancy_from=occupancy_from or defaults.occupancy_from,
                door_window=thresholds["door_window"],
            )
        )
    return booths


def _topic_problem(source: DeviceSource | None, topic: str, site_id: str, booth: str) -> str | None:
    """What is wrong with a device's `topic` for its `source`, or None."""
    if "+" in topic or "#" in topic:
        return "must not contain the wildcards + or #"
    if topic.startswith("/") or topic.endswith("/"):
        return 'must not start or end with "/"'
    if "//" in topic:
        return 'must not have an empty level ("//")'
    if source == "canonical":
        # A canonical device publishes the booth event on its booth's events topic.
        expected = f"{_SERVICE_ROOT}/{site_id}/booths/{booth}/events"
        if site_id and booth and topic != expected:
            return (
                f"a canonical device publishes on its booth's events topic "
                f"{describe(expected)}, got {describe(topic)}"
            )
        return None
    if topic == _SERVICE_ROOT or topic.startswith(f"{_SERVICE_ROOT}/"):
        return (
            f'must not be under "{_SERVICE_ROOT}/" (that namespace is the service\'s own; '
            f'a device publishing the canonical event takes source = "canonical")'
        )
    levels = topic.count("/") + 1
    match source:
        case "esphome":
            if not _ESPHOME_TOPIC_RE.fullmatch(topic):
                return (
                    f"expected <node>/binary_sensor/<name>/state for esphome, "
                    f"got {describe(topic)}"
                )
        case "shelly":
            gen1 = topic.startswith(_SHELLY_GEN1_PREFIX)
            if levels != (2 if gen1 else 1):
                return (
                    f"expected shellies/<id> (Gen1) or <id> (Gen2, one level) for shelly, "
                    f"got {describe(topic)}"
                )
        case "tasmota":
            if levels != 1:
                return (
                    f'expected <t>, Tasmota\'s %topic% (one level, no "/"), '
                    f"got {describe(topic)}"
                )
        case "zigbee2mqtt":
            if levels < 2:
                return (
                    f"expected <base>/<friendly_name> for zigbee2mqtt "
                    f'(e.g. "zigbee2mqtt/booth1-button"), got {describe(topic)}'
                )
    return None


@dataclass(slots=True)
class _Devices:
    devices: list[DeviceConfig] = field(default_factory=list)
    # (booth, role) of every device whose booth and role are both usable
    roles: set[tuple[str, DeviceRole]] = field(default_factory=set)
    # booths with a device whose role is unusable: it may be the door or sensor they need
    doubtful: set[str] = field(default_factory=set)


def _parse_devices(
    c: _Checker,
    items: list[tuple[str, Table]],
    booth_ids: set[str] | None,
    site_id: str,
    battery_low: int,
) -> _Devices:
    """[[devices]]; `booth_ids` is None when the booths were unusable (no booth check)."""
    out = _Devices()
    seen_ids: dict[str, str] = {}
    seen_topics: dict[tuple[str, str], str] = {}
    for path, t in items:
        c.known_keys(t, _DEVICE_KEYS, path)
        device_id = c.identifier(t, "id", path, _DEVICE_ID_RE)
        if device_id in seen_ids:
            c.add(
                f"{path}.id",
                f"duplicate device id {describe(device_id)} (also {seen_ids[device_id]})",
            )
        elif device_id:
            seen_ids[device_id] = path
        source = c.choice(t, "source", path, DEVICE_SOURCES, None)
        booth = c.string(t, "booth", path)
        if booth and booth_ids is not None and booth not in booth_ids:
            known = ", ".join(sorted(booth_ids)) or "none defined"
            c.add(f"{path}.booth", f"unknown booth {describe(booth)} (known: {known})")
            booth = ""
        role = c.choice(t, "role", path, DEVICE_ROLES, None)
        if source == "canonical" and role == "door":
            c.add(
                f"{path}.role",
                "a canonical device cannot be a door (the canonical event has no door)",
            )
        topic = c.string(t, "topic", path)
        if topic:
            problem = _topic_problem(source, topic, site_id, booth)
            if problem is not None:
                c.add(f"{path}.topic", problem)
            elif source is not None and source != "canonical":
                # canonical devices of one booth all publish on its events topic
                first = seen_topics.setdefault((source, topic), path)
                if first != path:
                    c.add(f"{path}.topic", f"same topic as {first}")
        actions = _parse_actions(c, t, path, role)
        if booth and role is not None:
            out.roles.add((booth, role))
        elif booth:
            out.doubtful.add(booth)
        out.devices.append(
            DeviceConfig(
                id=device_id,
                source=source or "canonical",
                topic=topic,
                booth=booth,
                role=role or "call_button",
                actions=actions,
                battery_low=c.percent(t, "battery_low", path, battery_low),
                inverted=c.boolean(t, "inverted", path, False),
            )
        )
    return out


def _parse_actions(
    c: _Checker, t: Table, path: str, role: DeviceRole | None
) -> dict[str, PressAction]:
    """A button's press type -> action table (optional)."""
    actions: dict[str, PressAction] = {}
    if "actions" not in t:
        return actions
    where = f"{path}.actions"
    raw = t["actions"]
    if not isinstance(raw, dict):
        c.add(where, f"expected a table of press type = action, got {describe(raw)}")
        return actions
    if role is not None and role not in _BUTTON_ROLES:
        c.add(where, f"only call_button and presence_button devices take actions, not {role}")
        return actions
    for press in raw:
        if press not in PRESS_TYPES:
            message = f"unknown press type (expected {_one_of(PRESS_TYPES)})"
            close = difflib.get_close_matches(press, PRESS_TYPES, n=1)
            if close:
                message += f' (did you mean "{close[0]}"?)'
            c.add(_join(where, press), message)
            continue
        action = c.choice(raw, press, where, PRESS_ACTIONS, None)
        if action is not None:
            actions[press] = action
    return actions


def _check_door_booths(
    c: _Checker, items: list[tuple[str, Table]], booths: list[BoothConfig], devices: _Devices
) -> None:
    """A booth whose occupancy comes from its door needs a door and a presence sensor."""
    for (path, _), booth in zip(items, booths, strict=True):
        if booth.occupancy_from != "door" or not booth.id:
            continue
        if booth.id in devices.doubtful:
            continue  # a device with a bad role may be the one it needs; that is reported
        has_door = (booth.id, "door") in devices.roles
        has_sensor = any((booth.id, r) in devices.roles for r in ("motion", "occupancy"))
        if not (has_door and has_sensor):
            c.add(
                f"{path}.occupancy_from",
                f'"door" needs a door device and a motion or occupancy device '
                f"for booth {describe(booth.id)}",
            )


def _parse_channels(
    c: _Checker, t: Table, env: Mapping[str, str]
) -> dict[str, ChannelConfig]:
    channels: dict[str, ChannelConfig] = {}
    every_key = tuple(dict.fromkeys(k for keys in _CHANNEL_KEYS.values() for k in keys))
    types = _one_of(list(_CHANNEL_TYPES))
    for name, value in t.items():
        path = _join("channels", name)
        if not _CHANNEL_NAME_RE.fullmatch(name):
            c.add(path, f"channel name must match ^{_CHANNEL_NAME_RE.pattern}$")
        if not isinstance(value, dict):
            c.add(path, f"expected a table, got {describe(value)}")
            continue
        raw_type = value.get("type")
        ctype = _CHANNEL_TYPES.get(raw_type) if isinstance(raw_type, str) else None
        if "type" not in value:
            c.add(f"{path}.type", f"missing ({types})")
        elif ctype is None:
            c.add(f"{path}.type", f"expected {types}, got {describe(raw_type)}")
        if ctype is None:
            c.known_keys(value, every_key, path)
            continue
        if ctype in ("ntfy", "pushover") and "token" in value:
            c.add(f"{path}.token", "do not put the token in the file; name an environment "
                  "variable that holds it in token_env")
            value = {k: v for k, v in value.items() if k != "token"}
        c.known_keys(value, _CHANNEL_KEYS[ctype], path)
        if ctype in ("webhook", "ntfy", "pushover", "apprise"):
            timeout = c.duration(value, "timeout", path, 5.0, positive=True)
        else:
            timeout = 5.0
        config = ChannelConfig(name=name, type=ctype, timeout=timeout)
        match ctype:
            case "webhook":
                url = c.string(value, "url", path)
                if url:
                    _check_http_url(c, url, f"{path}.url")
                secret = _channel_secret(c, value, path, env)
                config = replace(config, url=url, secret=secret)
            case "mqtt":
                topic = c.optional_string(value, "topic", path)
                if topic and ("+" in topic or "#" in topic):
                    c.add(f"{path}.topic", "must not contain the wildcards + or #")
                config = replace(config, topic=topic)
            case "console":
                pass
            case "ntfy":
                config = _parse_ntfy(c, value, path, env, config)
            case "pushover":
                config = _parse_pushover(c, value, path, env, config)
            case "apprise":
                config = replace(config, url=_apprise_url(c, value, path, env))
            case _:
                assert_never(ctype)
        channels[name] = config
    return channels


def _parse_ntfy(
    c: _Checker, t: Table, path: str, env: Mapping[str, str], config: ChannelConfig
) -> ChannelConfig:
    url = c.string(t, "url", path)
    if url:
        _check_http_url(c, url, f"{path}.url")
    topic = c.optional_string(t, "topic", path)
    if topic and not NTFY_TOPIC_RE.fullmatch(topic.replace(RESPONDER_PLACEHOLDER, "x")):
        c.add(f"{path}.topic", f"{describe(topic)} is not an ntfy topic (letters, digits, - "
              f"and _, at most 64; {RESPONDER_PLACEHOLDER} is replaced by the responder id)")
    token = _token_from_env(c, t, path, env, required=False)
    return replace(config, url=url, topic=topic, token=token)


def _parse_pushover(
    c: _Checker, t: Table, path: str, env: Mapping[str, str], config: ChannelConfig
) -> ChannelConfig:
    url = c.optional_string(t, "url", path) or PUSHOVER_API
    if "url" in t:
        _check_http_url(c, url, f"{path}.url")
    token = _token_from_env(c, t, path, env, required=True)
    retry = c.optional_duration(t, "retry", path)
    if retry is not None and retry < PUSHOVER_MIN_RETRY:
        c.add(f"{path}.retry", f"Pushover needs at least {format_duration(PUSHOVER_MIN_RETRY)}"
              f", got {format_duration(retry)}")
    expire = c.optional_duration(t, "expire", path)
    if expire is not None and expire > PUSHOVER_MAX_EXPIRE:
        c.add(f"{path}.expire", f"Pushover allows at most {format_duration(PUSHOVER_MAX_EXPIRE)}"
              f", got {format_duration(expire)}")
    elif expire is not None and retry is not None and expire < retry:
        c.add(f"{path}.expire", f"shorter than retry ({format_duration(retry)}): the page would "
              "never be repeated")
    poll = c.duration(t, "poll_interval", path, PUSHOVER_MIN_POLL, positive=True)
    if poll < PUSHOVER_MIN_POLL:
        c.add(f"{path}.poll_interval", f"Pushover asks for at most one poll per receipt every "
              f"{format_duration(PUSHOVER_MIN_POLL)}, got {format_duration(poll)}")
    return replace(config, url=url, token=token, retry=retry, expire=expire, poll_interval=poll)


def _apprise_url(c: _Checker, t: Table, path: str, env: Mapping[str, str]) -> str | None:
    """The Apprise URL from ``url`` or the environment variable named by ``url_env``."""
    if "url" in t and "url_env" in t:
        c.add(f"{path}.url_env", "set either url or url_env, not both")
        return None
    if "url" in t:
        where = f"{path}.url"
        url = c.string(t, "url", path)
        if url and _has_password(url):
            c.add(where, "carries a password: put the URL in an environment variable and "
                  "name it in url_env")
            return None
    elif "url_env" in t:
        where = f"{path}.url_env"
        var = c.string(t, "url_env", path)
        url = env.get(var, "").strip() if var else ""
        if var and not url:
            c.add(where, f"environment variable {var} is not set")
    else:
        c.add(f"{path}.url", "missing (or url_env: an environment variable holding a URL "
              "that carries credentials)")
        return None
    if not url:
        return None
    problem = _apprise_url_problem(url)
    if problem:
        c.add(where, problem)  # the URL itself is not shown: it may carry credentials
        return None
    return url


def _has_password(url: str) -> bool:
    try:
        return bool(urlsplit(url).password)
    except ValueError:
        return False  # not a URL urllib understands; Apprise's check below will say why


def _apprise_url_problem(url: str) -> str | None:
    """Why Apprise cannot use `url`, or None. Imports apprise only when a site uses it."""
    # Lazily: importing apprise costs ~0.1 s, and most sites configure no such channel.
    import apprise
    from apprise.manager_plugins import NotificationManager

    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        return "expected an Apprise URL such as tgram://..., mailto://..., json://..."
    schemes = NotificationManager()  # type: ignore[no-untyped-call]  # apprise leaves it untyped
    if scheme.lower() not in schemes:
        return f"Apprise does not know the scheme {describe(scheme)}"
    if ADDRESS_PLACEHOLDER in url:
        return None  # the full form is known once a responder's address is in it
    # Apprise logs why it rejects a URL, with the URL: keep that out of our output.
    apprise_log = logging.getLogger("apprise")
    was_disabled, apprise_log.disabled = apprise_log.disabled, True
    try:
        usable = apprise.Apprise.instantiate(url) is not None
    finally:
        apprise_log.disabled = was_disabled
    return None if usable else f"Apprise cannot use this {scheme} URL (check its form)"


def _token_from_env(
    c: _Checker, t: Table, path: str, env: Mapping[str, str], *, required: bool
) -> str | None:
    if "token_env" not in t:
        if required:
            c.add(f"{path}.token_env", "missing: the environment variable that holds the "
                  "application token")
        return None
    var = c.string(t, "token_env", path)
    if not var:
        return None
    token = env.get(var, "").strip()
    if not token:
        c.add(f"{path}.token_env", f"environment variable {var} is not set")
        return None
    return token


def _channel_secret(c: _Checker, t: Table, path: str, env: Mapping[str, str]) -> str | None:
    secret = c.optional_string(t, "secret", path)
    if "secret_env" not in t:
        return secret
    if "secret" in t:
        c.add(f"{path}.secret_env", "set either secret or secret_env, not both")
        return secret
    var = c.string(t, "secret_env", path)
    if not var:
        return None
    from_env = env.get(var)
    if not from_env:
        c.add(f"{path}.secret_env", f"environment variable {var} is not set")
        return None
    return from_env


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SHIFT_RE = re.compile(r"(?P<days>[a-z,-]+)\s+(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})")
_SHIFT_HINT = 'expected "<days> HH:MM-HH:MM" such as "mon-fri 08:00-16:00" or "sat,sun 20:00-08:00"'


def parse_shift(text: str) -> Shift:
    """``"mon-fri 08:00-16:00"``, ``"sat,sun 20:00-08:00"``, ``"daily 07:00-19:00"``."""
    match = _SHIFT_RE.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(_SHIFT_HINT)
    days: set[int] = set()
    for part in match["days"].split(","):
        if part == "daily":
            days.update(range(7))
            continue
        first, _, last = part.partition("-")
        if first not in _DAYS or (last and last not in _DAYS):
            raise ValueError(f"unknown day in {part!r} (days: {', '.join(_DAYS)}, or daily)")
        a, b = _DAYS.index(first), _DAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    times = []
    for key in ("start", "end"):
        hours, minutes = (int(x) for x in match[key].split(":"))
        if hours > 24 or minutes > 59 or (hours == 24 and minutes):
            raise ValueError(f"{match[key]} is not a time of day (00:00 to 24:00)")
        times.append(hours * 60 + minutes)
    start, end = times
    if start == 24 * 60:
        raise ValueError("a shift cannot start at 24:00")
    return Shift(days=frozenset(days), start=start, end=end, text=text.strip())


def _parse_responders(
    c: _Checker, items: list[tuple[str, Table]], channels: Mapping[str, ChannelConfig] | None,
    channel_names: set[str] | None,
) -> list[ResponderConfig]:
    """Responders; `channel_names` is None when [channels] itself was unusable."""
    responders: list[ResponderConfig] = []
    seen: dict[str, str] = {}
    for path, t in items:
        c.known_keys(t, ("id", "name", "roles", "channels", "address", "shifts"), path)
        responder_id = c.identifier(t, "id", path, _RESPONDER_ID_RE)
        if responder_id in seen:
            c.add(
                f"{path}.id",
                f"duplicate responder id {describe(responder_id)} (also {seen[responder_id]})",
            )
        elif responder_id:
            seen[responder_id] = path
        name = c.string(t, "name", path)
        roles = [role for _, role in c.strings(t, "roles", path)]
        channel_list = c.strings(t, "channels", path)
        if channel_names is not None:
            for item_path, channel in channel_list:
                if channel not in channel_names:
                    known = ", ".join(sorted(channel_names)) or "none defined"
                    c.add(item_path, f"unknown channel {describe(channel)} (known: {known})")
        names = tuple(dict.fromkeys(ch for _, ch in channel_list))
        address = _parse_address(c, t, path, names, channels)
        shifts: list[Shift] = []
        if "shifts" in t:
            for item_path, text in c.strings(t, "shifts", path):
                try:
                    shifts.append(parse_shift(text))
                except ValueError as exc:
                    c.add(item_path, f"{exc}, got {describe(text)}")
        responders.append(
            ResponderConfig(
                id=responder_id,
                name=name,
                roles=tuple(dict.fromkeys(roles)),
                channels=names,
                address=address,
                shifts=tuple(shifts),
            )
        )
    return responders


def _parse_address(
    c: _Checker, t: Table, path: str, names: tuple[str, ...],
    channels: Mapping[str, ChannelConfig] | None,
) -> dict[str, str]:
    """``address = { phone = "ana-7f3k" }``: where each of the responder's channels reaches them."""
    where = f"{path}.address"
    raw = t.get("address", {})
    if not isinstance(raw, dict):
        c.add(where, f"expected a table of channel = address, got {describe(raw)}")
        return {}
    address: dict[str, str] = {}
    for channel, value in raw.items():
        if channel not in names:
            c.add(_join(where, channel), "not one of this responder's channels")
        elif not isinstance(value, str) or not value.strip():
            c.add(_join(where, channel), f"expected a non-empty string, got {describe(value)}")
        else:
            address[channel] = value.strip()
    if channels is not None:
        for channel in names:
            config = channels.get(channel)
            if config is not None and config.needs_address and channel not in address:
                c.add(_join(where, channel),
                      f"missing: a {config.type} channel needs the responder's address")
    return address


def _parse_policy(
    c: _Checker, t: Table, path: str, roles: set[str] | None, responder_ids: set[str] | None
) -> Policy:
    """One escalation policy; target checks are skipped when responders were unusable."""
    c.known_keys(t, ("steps", "repeat", "ack_timeout", "max_repeats"), path)
    steps: list[Step] = []
    raw_steps = t.get("steps")
    steps_path = f"{path}.steps"
    if "steps" not in t:
        c.add(steps_path, "missing")
    elif not isinstance(raw_steps, list):
        c.add(steps_path, f"expected a list of {{after, notify}}, got {describe(raw_steps)}")
    elif not raw_steps:
        c.add(steps_path, "must have at least one step")
    else:
        previous: float | None = None
        for index, raw in enumerate(raw_steps):
            step_path = f"{steps_path}[{index}]"
            if not isinstance(raw, dict):
                c.add(step_path, f"expected a table {{after, notify}}, got {describe(raw)}")
                continue
            c.known_keys(raw, ("after", "notify"), step_path)
            problems_before = len(c.problems)
            after = c.duration(raw, "after", step_path, None, positive=False)
            if len(c.problems) == problems_before:  # a usable `after`
                if previous is not None and after < previous:
                    c.add(
                        f"{step_path}.after",
                        f"{format_duration(after)} is earlier than the step before it "
                        f"({format_duration(previous)}); steps must not go back in time",
                    )
                previous = after
            targets = c.strings(raw, "notify", step_path)
            for target_path, target in targets:
                _check_target(c, target_path, target, roles, responder_ids)
            steps.append(Step(after=after, notify=tuple(target for _, target in targets)))
    repeat = c.optional_duration(t, "repeat", path)
    ack_timeout = c.optional_duration(t, "ack_timeout", path)
    max_repeats: int | None = None
    if "max_repeats" in t:
        raw_max = t["max_repeats"]
        if isinstance(raw_max, bool) or not isinstance(raw_max, int) or not 0 <= raw_max <= 100:
            c.add(f"{path}.max_repeats", f"expected a whole number from 0 to 100, got "
                  f"{describe(raw_max)}")
        elif repeat is None:
            c.add(f"{path}.max_repeats", "needs repeat: the interval between cycles")
        else:
            max_repeats = raw_max
    return Policy(steps=tuple(steps), repeat=repeat, ack_timeout=ack_timeout,
                  max_repeats=max_repeats)


def _check_target(
    c: _Checker, where: str, target: str, roles: set[str] | None, ids: set[str] | None
) -> None:
    if target.startswith("role:"):
        role = target[len("role:") :]
        if roles is not None and role not in roles:
            c.add(where, f"unknown role {describe(role)} (no responder has it)")
    elif ids is not None and target not in ids:
        c.add(
            where,
            f"unknown responder {describe(target)} (expected a responder id or role:<role>)",
        )


def _parse_escalation(
    c: _Checker, t: Table, roles: set[str] | None, ids: set[str] | None
) -> dict[Priority, Policy]:
    escalation: dict[Priority, Policy] = {}
    for name in t:
        if name not in PRIORITIES:
            c.add(_join("escalation", name), "unknown priority (expected high, medium or low)")
    for priority in PRIORITIES:
        policy_table = c.table(t, priority, "escalation", required=True)
        if policy_table is not None:
            escalation[priority] = _parse_policy(
                c, policy_table, f"escalation.{priority}", roles, ids
            )
    return escalation


# --------------------------------------------------------------------------- public API

_TOP_LEVEL = (
    "site", "mqtt", "store", "http", "defaults", "booths", "devices", "channels", "responders",
    "escalation", "rate_limit",
)  # fmt: skip


def parse_config(
    data: Mapping[str, object], env: Mapping[str, str], source: str = "<memory>"
) -> Config:
    """Check a parsed TOML document; raise ConfigError listing every problem found."""
    c = _Checker()
    c.known_keys(dict(data), _TOP_LEVEL, "")
    root: Table = dict(data)

    site_t = c.table(root, "site", "", required=True)
    site = _parse_site(c, site_t) if site_t is not None else SiteConfig("", "", "")

    mqtt_t = c.table(root, "mqtt", "", required=True)
    mqtt = _parse_mqtt(c, mqtt_t, env) if mqtt_t is not None else MqttConfig("", "", 0, False, "")

    store_t = c.table(root, "store", "", required=True)
    store_path = ""
    if store_t is not None:
        c.known_keys(store_t, ("path",), "store")
        store_path = c.string(store_t, "path", "store")

    http_t = c.table(root, "http", "", required=True)
    http = _parse_http(c, http_t) if http_t is not None else HttpConfig("", 0, "")

    defaults = _parse_defaults(c, c.table(root, "defaults", "", required=False))
    booth_items = c.tables(root, "booths", "")
    booths = _parse_booths(c, booth_items, defaults) if booth_items is not None else []

    device_items = c.tables(root, "devices", "", required=False)
    devices = _Devices()
    if device_items is not None:
        # Every booth's id, unless one failed to parse: a device naming it is not to blame.
        booth_ids = (
            {b.id for b in booths}
            if booth_items is not None and all(b.id for b in booths)
            else None
        )
        devices = _parse_devices(c, device_items, booth_ids, site.id, defaults.battery_low)
    if booth_items is not None and device_items is not None:
        _check_door_booths(c, booth_items, booths, devices)

    channels_t = c.table(root, "channels", "", required=True)
    channels = _parse_channels(c, channels_t, env) if channels_t is not None else {}
    # Names of every channel table, even a faulty one, so responders do not echo its problem.
    channel_names = set(channels_t) if channels_t is not None else None

    responder_items = c.tables(root, "responders", "")
    responders = (
        _parse_responders(c, responder_items, channels if channels_t is not None else None,
                          channel_names)
        if responder_items is not None
        else []
    )
    roles: set[str] | None = None
    ids: set[str] | None = None
    if responder_items is not None:
        roles = {role for r in responders for role in r.roles}
        ids = {r.id for r in responders if r.id}
        # A responder whose `roles` failed to parse would make every role:X look unknown.
        if any("roles" not in t or not isinstance(t["roles"], list) for _, t in responder_items):
            roles = None

    escalation_t = c.table(root, "escalation", "", required=True)
    escalation = (
        _parse_escalation(c, escalation_t, roles, ids) if escalation_t is not None else {}
    )

    rate_limit = _parse_rate_limit(c, c.table(root, "rate_limit", "", required=False))

    if c.problems:
        raise ConfigError(c.problems)
    return Config(
        site=site,
        mqtt=mqtt,
        store=StoreConfig(path=store_path),
        http=http,
        booths=tuple(booths),
        channels=channels,
        responders=tuple(responders),
        escalation=escalation,
        source=source,
        devices=tuple(devices.devices),
        rate_limit=rate_limit,
    )


_RATE_LIMIT_KEYS = ("rate", "burst", "repeat_call_interval")
_MAX_RATE = 1_000_000.0  # messages a second: far past what one broker connection carries


def _parse_rate_limit(c: _Checker, t: Table | None) -> RateLimitConfig:
    """[rate_limit]: every key optional; a bad value is a problem, never a silent default."""
    default = RateLimitConfig()
    if t is None:
        return default
    c.known_keys(t, _RATE_LIMIT_KEYS, "rate_limit")
    rate = default.rate
    if "rate" in t:
        value = t["rate"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            c.add("rate_limit.rate", f"expected messages a second (a number), got "
                                     f"{describe(value)}")
        elif not 0 < value <= _MAX_RATE:  # NaN fails this too
            c.add("rate_limit.rate",
                  f"must be greater than 0 and at most {_MAX_RATE:,.0f}, got {describe(value)}")
        else:
            rate = float(value)
    burst = default.burst
    if "burst" in t:
        value = t["burst"]
        if isinstance(value, bool) or not isinstance(value, int):
            c.add("rate_limit.burst", f"expected a whole number of messages, got "
                                      f"{describe(value)}")
        elif not 1 <= value <= _MAX_RATE:
            c.add("rate_limit.burst",
                  f"must be between 1 and {_MAX_RATE:,.0f}, got {describe(value)}")
        else:
            burst = value
    interval = c.duration(t, "repeat_call_interval", "rate_limit",
                          default.repeat_call_interval, positive=False)
    return RateLimitConfig(rate=rate, burst=burst, repeat_call_interval=interval)


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and check a TOML file; env defaults to os.environ."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read: {exc.strerror or exc}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{name}: invalid TOML: {exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{name}: not UTF-8 text: {exc}"]) from exc
    except RecursionError:
        raise ConfigError([f"{name}: invalid TOML: nested too deeply"]) from None
    except ValueError as exc:  # e.g. an integer past Python's digit limit
        raise ConfigError([f"{name}: invalid TOML: {exc}"]) from exc
    return parse_config(data, os.environ if env is None else env, source=name)


def _hide_path(url: str | None) -> str:
    """scheme://host[:port] of a URL plus "/..." if it has more: paths can carry tokens."""
    if not url:
        return "?"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    origin = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    more = parts.path not in ("", "/") or parts.query or parts.fragment
    return origin + ("/..." if more else "")


def _push_summary(ch: ChannelConfig, high: Policy | None) -> str:
    """The rest of a summary line for a push channel: no token, topic or URL path."""
    fd = format_duration
    parts = []
    if ch.type == "ntfy":
        where = _hide_path(ch.url)
        # a topic works like a password on a server without access control: not shown
        parts.append("topic from a template" if ch.topic else "topic = responder's address")
        parts.append("access token set" if ch.token else "no access token")
    elif ch.type == "pushover":
        where = _hide_path(ch.url)
        retry, expire = pushover_timing(ch, high)
        parts += ["app token set", f"high: emergency, retry {fd(retry)}, expire {fd(expire)}",
                  f"receipts polled every {fd(ch.poll_interval)}"]
    else:
        where = f"{(ch.url or '?').partition('://')[0]}://..."
        if ch.needs_address:
            parts.append("address from each responder")
    parts.append(f"timeout {fd(ch.timeout)}")
    return f" {where} ({', '.join(parts)})"


def summary(config: Config) -> str:
    """A one-screen description of a checked configuration; it never shows a secret."""
    site, mqtt, http = config.site, config.mqtt, config.http
    fd = format_duration
    listen_host = f"[{http.host}]" if ":" in http.host else http.host
    mqtt_extra = [f"MQTT {mqtt.protocol}", f"keepalive {mqtt.keepalive}s",
                  f"outage paged after {format_duration(mqtt.outage_page_after)}"]
    if mqtt.username:
        mqtt_extra.append(f"user {mqtt.username}")
    mqtt_extra.append("password set" if mqtt.password else "no password")
    if mqtt.ca_file:
        mqtt_extra.append(f"CA {mqtt.ca_file}")
    if mqtt.cert_file:
        mqtt_extra.append(f"client cert {mqtt.cert_file}")
    lines = [
        f"config {config.source}",
        f"site: {site.id} ({site.name}), time zone {site.timezone}",
        f"mqtt: {mqtt.url} as client {mqtt.client_id} ({', '.join(mqtt_extra)})",
        f"store: {config.store.path}",
        f"http: listening on {listen_host}:{http.port}; ack links {http.public_url}/ack/... "
        f"valid {fd(http.ack_link_ttl)}",
        f"booths ({len(config.booths)}):",
    ]
    for b in config.booths:
        text = (
            f"  {b.id} {b.name}: long session {fd(b.long_session)}, stillness "
            f"{fd(b.stillness)}, device timeout {fd(b.device_timeout)}"
        )
        if b.occupancy_from == "door":
            text += f", occupancy from door (window {fd(b.door_window)})"
        lines.append(text)
    lines.append(f"devices ({len(config.devices)}):")
    for d in config.devices:
        text = f"  {d.id}: {d.source} {d.topic} → booth {d.booth}, {d.role}"
        if d.actions:
            text += "; actions " + ", ".join(f"{k}={v}" for k, v in d.actions.items())
        if d.inverted:
            text += "; inverted"
        lines.append(text)
    lines.append(f"responders ({len(config.responders)}):")
    for r in config.responders:
        duty = ("shifts " + ", ".join(s.text for s in r.shifts)) if r.shifts else "always on duty"
        lines.append(
            f"  {r.id} {r.name}: roles {', '.join(r.roles)}; channels "
            f"{' → '.join(r.channels)}; {duty}"
        )
    lines.append(f"channels ({len(config.channels)}):")
    for ch in config.channels.values():
        text = f"  {ch.name}: {ch.type}"
        if ch.type == "webhook":
            signed = "signed" if ch.secret else "unsigned"
            text += f" {_hide_path(ch.url)} ({signed}, timeout {fd(ch.timeout)})"
        elif ch.type == "mqtt":
            text += f" topic {ch.topic or f'boothwatch/{site.id}/pages/<responder>'}"
        elif ch.type in ("ntfy", "pushover", "apprise"):
            text += _push_summary(ch, config.escalation.get("high"))
        lines.append(text)
    rl = config.rate_limit
    repeats = (f"a repeated call jumps escalation at most once per {fd(rl.repeat_call_interval)}"
               if rl.repeat_call_interval > 0 else "every repeated call jumps escalation")
    lines.append(f"rate limit: {rl.rate:g} messages/s per sender, burst {rl.burst}; {repeats}")
    lines.append("escalation:")
    for priority in PRIORITIES:
        policy = config.escalation.get(priority)
        if policy is None:
            continue
        parts = [f"{fd(s.after)} → {', '.join(s.notify)}" for s in policy.steps]
        if policy.repeat is not None:
            parts.append(f"repeat {fd(policy.repeat)}")
        if policy.ack_timeout is not None:
            parts.append(f"ack timeout {fd(policy.ack_timeout)}")
        if policy.max_repeats is not None:
            parts.append(f"cycle {policy.max_repeats} more times")
        lines.append(f"  {priority}: {'; '.join(parts)}")
    return "\n".join(lines)
