"""The site configuration (interface section 3) as frozen dataclasses.

`load_config` reads TOML, checks every key and reports every problem at once,
each named by its key path (``booths[2].long_session: ...``). Nothing here does
I/O except `load_config` reading its file; the core takes a `Config`.
"""

from __future__ import annotations

import datetime
import difflib
import json
import math
import os
import re
import tomllib
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar
from urllib.parse import urlsplit

Priority = Literal["high", "medium", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "medium", "low")
ChannelType = Literal["webhook", "mqtt", "console"]
DeviceSource = Literal["zigbee2mqtt", "esphome", "tasmota", "shelly", "canonical"]
DeviceRole = Literal["call_button", "presence_button", "motion", "occupancy", "door"]
PressAction = Literal["call", "presence", "clear", "ignore"]
OccupancyFrom = Literal["sensor", "door"]


@dataclass(frozen=True, slots=True)
class SiteConfig:
    id: str
    name: str
    timezone: str


@dataclass(frozen=True, slots=True)
class MqttConfig:
    url: str
    host: str
    port: int
    tls: bool
    client_id: str
    username: str | None = None
    password: str | None = None  # from BOOTHWATCH_MQTT_PASSWORD, never the file
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive: int = 30
    session_expiry: float = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class StoreConfig:
    path: str


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str
    port: int
    public_url: str
    ack_link_ttl: float = 12 * 3600.0


@dataclass(frozen=True, slots=True)
class BoothConfig:
    id: str
    name: str
    long_session: float
    stillness: float
    device_timeout: float
    # "sensor": occupancy events start and end sessions; "door": a door closing with
    # presence following within door_window starts one, the door opening ends it
    occupancy_from: OccupancyFrom = "sensor"
    door_window: float = 30.0


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """An off-the-shelf device mapped to a booth and a role ([[devices]])."""

    id: str
    source: DeviceSource
    topic: str  # the device's own topic, as its firmware names it (see devices/adapters)
    booth: str
    role: DeviceRole
    # press type (single, double, triple, quadruple, hold, release) -> action; missing
    # types fall back to the role's defaults
    actions: dict[str, PressAction] = field(default_factory=dict)
    battery_low: int = 20  # percent; below it the device is low on battery
    inverted: bool = False  # flip a binary sensor (e.g. a reed switch wired the other way)


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    name: str
    type: ChannelType
    url: str | None = None  # webhook
    secret: str | None = None  # webhook HMAC key (from `secret` or the env var `secret_env`)
    topic: str | None = None  # mqtt; default boothwatch/<site>/pages/<responder>
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class ResponderConfig:
    id: str
    name: str
    roles: tuple[str, ...]
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Step:
    after: float
    notify: tuple[str, ...]  # "role:<role>" or a responder id


@dataclass(frozen=True, slots=True)
class Policy:
    steps: tuple[Step, ...]
    repeat: float | None = None
    ack_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Config:
    site: SiteConfig
    mqtt: MqttConfig
    store: StoreConfig
    http: HttpConfig
    booths: tuple[BoothConfig, ...]
    channels: dict[str, ChannelConfig]
    responders: tuple[ResponderConfig, ...]
    escalation: dict[Priority, Policy]
    source: str = field(default="<memory>", compare=False)
    devices: tuple[DeviceConfig, ...] = ()

    def booth(self, booth_id: str) -> BoothConfig | None:
        for booth in self.booths:
            if booth.id == booth_id:
                return booth
        return None


# --------------------------------------------------------------------------- durations

_NUM = r"[0-9]+(?:\.[0-9]+)?"
_PLAIN_NUMBER_RE = re.compile(_NUM)
_DURATION_RE = re.compile(rf"(?:(?P<h>{_NUM})h)?(?:(?P<m>{_NUM})m)?(?:(?P<s>{_NUM})s)?")
_DURATION_HINT = 'expected seconds or a duration like "90s", "20m", "1h30m"'


def _describe(value: object) -> str:
    """How a rejected value is shown in a problem: strings quoted, others by kind."""
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return json.dumps(shown, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return "a date/time"
    return f"a {type(value).__name__}"


def _duration_from_str(text: str) -> float | None:
    """The seconds in `text` ("45", "90s", "1h30m"), or None if it is not that form."""
    if _PLAIN_NUMBER_RE.fullmatch(text):
        return float(text)
    match = _DURATION_RE.fullmatch(text)
    if match is None or not any(match.group("h", "m", "s")):
        return None
    hours, minutes, seconds = (float(part or 0) for part in match.group("h", "m", "s"))
    return hours * 3600.0 + minutes * 60.0 + seconds


def parse_duration(value: object) -> float:
    """Seconds from a number of seconds or a string like "90s", "20m", "1h30m15s", "45".

    Raises ValueError with a message fit to show after a key path.
    """
    seconds: float | None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"duration too large, got {_describe(value)}") from None
        if math.isnan(seconds):
            raise ValueError(f"{_DURATION_HINT}, got nan")
    elif isinstance(value, str):
        seconds = _duration_from_str(value)
        if seconds is None and value.startswith("-") and _duration_from_str(value[1:]):
            raise ValueError(f"must not be negative, got {_describe(value)}")
    else:
        seconds = None
    if seconds is None:
        raise ValueError(f"{_DURATION_HINT}, got {_describe(value)}")
    if seconds < 0:
        raise ValueError(f"must not be negative, got {_describe(value)}")
    if math.isinf(seconds):
        raise ValueError(f"duration too large, got {_describe(value)}")
    return seconds


def format_duration(seconds: float) -> str:
    """A human form of a duration that parse_duration reads back: "90s", "20m", "1h30m".

    Under two minutes it stays in seconds ("60s", "90s"); longer ones use h/m/s parts.
    """
    if seconds < 0:
        return "-" + format_duration(-seconds)
    millis = round(seconds * 1000)
    if millis < 120_000:
        return _format_seconds(millis) + "s"
    whole, frac = divmod(millis, 1000)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if secs or frac:
        out += _format_seconds(secs * 1000 + frac) + "s"
    return out


def _format_seconds(millis: int) -> str:
    whole, frac = divmod(millis, 1000)
    return f"{whole}.{frac:03d}".rstrip("0") if frac else str(whole)


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
}
_CHANNEL_KEYS: dict[str, tuple[str, ...]] = {
    "webhook": ("type", "url", "secret", "secret_env", "timeout"),
    "mqtt": ("type", "topic"),
    "console": ("type",),
}
_PROTOCOLS: dict[str, Literal["5", "3.1.1"]] = {"5": "5", "3.1.1": "3.1.1"}
_MQTT_PASSWORD_ENV = "BOOTHWATCH_MQTT_PASSWORD"
_SESSION_EXPIRY_MAX = 0xFFFFFFFF  # MQTT 5: four-byte interval; this value means "never expires"

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
PRESS_TYPES: tuple[str, ...] = ("single", "double", "triple", "quadruple", "hold", "release")
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
            self.add(where, f"expected a table, got {_describe(value)}")
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
            self.add(where, f"expected a list of tables ([[{key}]]), got {_describe(value)}")
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
                self.add(item_path, f"expected a table, got {_describe(item)}")
        return out

    def string(self, table: Table, key: str, path: str) -> str:
        """A required non-empty string ("" after a problem)."""
        where = _join(path, key)
        if key not in table:
            self.add(where, "missing")
            return ""
        value = table[key]
        if not isinstance(value, str):
            self.add(where, f"expected a string, got {_describe(value)}")
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
            self.add(_join(path, key), f"{_describe(value)} must match ^{pattern.pattern}$")
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
        message = f"expected {_one_of(options)}, got {_describe(value)}"
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
                f"expected a whole percentage from 1 to 99, got {_describe(value)}",
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
            self.add(_join(path, key), f"expected true or false, got {_describe(value)}")
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
            self.add(where, f"expected a list of strings, got {_describe(value)}")
            return []
        if not value:
            self.add(where, "must not be empty")
            return []
        out: list[tuple[str, str]] = []
        for index, item in enumerate(value):
            item_path = f"{where}[{index}]"
            if not isinstance(item, str):
                self.add(item_path, f"expected a string, got {_describe(item)}")
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
        c.add(where, f"scheme must be http or https, got {_describe(url)}")
        return False
    if not parts.hostname:
        c.add(where, f"missing host, got {_describe(url)}")
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
                f"unknown time zone {_describe(timezone)} (expected a name like "
                '"Europe/Lisbon")',
            )
    return SiteConfig(id=site_id, name=name, timezone=timezone)


def _parse_mqtt(c: _Checker, t: Table, env: Mapping[str, str]) -> MqttConfig:
    allowed = (
        "url", "client_id", "username", "ca_file", "cert_file", "key_file",
        "protocol", "keepalive", "session_expiry",
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
    if url:
        host, port, tls = _parse_mqtt_url(c, url)

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
            c.add("mqtt.client_id", f"expected a string, got {_describe(raw)}")
        elif not raw.strip():
            c.add(
                "mqtt.client_id",
                "must not be empty; it must be fixed so the broker keeps our session "
                "while we are down",
            )

    username = c.optional_string(t, "username", "mqtt")
    ca_file = c.optional_string(t, "ca_file", "mqtt")
    cert_file = c.optional_string(t, "cert_file", "mqtt")
    key_file = c.optional_string(t, "key_file", "mqtt")
    if key_file and not cert_file:
        c.add("mqtt.key_file", "needs mqtt.cert_file as well")
    if cert_file and not key_file:
        c.add("mqtt.cert_file", "needs mqtt.key_file as well")

    protocol: Literal["5", "3.1.1"] = "5"
    if "protocol" in t:
        raw_protocol = t["protocol"]
        key = str(raw_protocol) if isinstance(raw_protocol, str | int) else ""
        if isinstance(raw_protocol, bool) or key not in _PROTOCOLS:
            c.add("mqtt.protocol", f'expected "5" or "3.1.1", got {_describe(raw_protocol)}')
        else:
            protocol = _PROTOCOLS[key]

    keepalive = 30
    if "keepalive" in t:
        raw_keepalive = t["keepalive"]
        if isinstance(raw_keepalive, bool) or not isinstance(raw_keepalive, int):
            c.add(
                "mqtt.keepalive",
                f"expected a whole number of seconds, got {_describe(raw_keepalive)}",
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

    return MqttConfig(
        url=url,
        host=host,
        port=port,
        tls=tls,
        client_id=client_id,
        username=username,
        password=env.get(_MQTT_PASSWORD_ENV) or None,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        protocol=protocol,
        keepalive=keepalive,
        session_expiry=session_expiry,
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
        c.add(where, f"scheme must be mqtt or mqtts, got {_describe(url)}")
        return "", 0, False
    tls = scheme == "mqtts"
    host = parts.hostname or ""
    if not host:
        c.add(where, f"missing host (e.g. mqtt://127.0.0.1:1883), got {_describe(url)}")
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


def _parse_listen(c: _Checker, listen: str) -> tuple[str, int]:
    where = "http.listen"
    if listen.startswith("["):
        match = re.fullmatch(r"\[([^\]]+)\]:([0-9]+)", listen)
        if match is None:
            c.add(where, f'expected "host:port" like "[::1]:8080", got {_describe(listen)}')
            return "", 0
        host, port_text = match.group(1), match.group(2)
    else:
        host, sep, port_text = listen.rpartition(":")
        if not sep or not host:
            c.add(where, f'expected "host:port" like "127.0.0.1:8080", got {_describe(listen)}')
            return "", 0
        if ":" in host:
            c.add(where, f'put an IPv6 address in brackets ("[::1]:8080"), got {_describe(listen)}')
            return "", 0
    if not port_text.isdigit() or not port_text.isascii() or not 1 <= int(port_text) <= 65535:
        c.add(where, f"port must be a number from 1 to 65535, got {_describe(listen)}")
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
            c.add(f"{path}.id", f"duplicate booth id {_describe(booth_id)} (also {seen[booth_id]})")
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
                f"{_describe(expected)}, got {_describe(topic)}"
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
                    f"got {_describe(topic)}"
                )
        case "shelly":
            gen1 = topic.startswith(_SHELLY_GEN1_PREFIX)
            if levels != (2 if gen1 else 1):
                return (
                    f"expected shellies/<id> (Gen1) or <id> (Gen2, one level) for shelly, "
                    f"got {_describe(topic)}"
                )
        case "tasmota":
            if levels != 1:
                return (
                    f'expected <t>, Tasmota\'s %topic% (one level, no "/"), '
                    f"got {_describe(topic)}"
                )
        case "zigbee2mqtt":
            if levels < 2:
                return (
                    f"expected <base>/<friendly_name> for zigbee2mqtt "
                    f'(e.g. "zigbee2mqtt/booth1-button"), got {_describe(topic)}'
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
                f"duplicate device id {_describe(device_id)} (also {seen_ids[device_id]})",
            )
        elif device_id:
            seen_ids[device_id] = path
        source = c.choice(t, "source", path, DEVICE_SOURCES, None)
        booth = c.string(t, "booth", path)
        if booth and booth_ids is not None and booth not in booth_ids:
            known = ", ".join(sorted(booth_ids)) or "none defined"
            c.add(f"{path}.booth", f"unknown booth {_describe(booth)} (known: {known})")
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
        c.add(where, f"expected a table of press type = action, got {_describe(raw)}")
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
                f"for booth {_describe(booth.id)}",
            )


def _parse_channels(
    c: _Checker, t: Table, env: Mapping[str, str]
) -> dict[str, ChannelConfig]:
    channels: dict[str, ChannelConfig] = {}
    every_key = tuple(dict.fromkeys(k for keys in _CHANNEL_KEYS.values() for k in keys))
    for name, value in t.items():
        path = _join("channels", name)
        if not _CHANNEL_NAME_RE.fullmatch(name):
            c.add(path, f"channel name must match ^{_CHANNEL_NAME_RE.pattern}$")
        if not isinstance(value, dict):
            c.add(path, f"expected a table, got {_describe(value)}")
            continue
        raw_type = value.get("type")
        ctype = _CHANNEL_TYPES.get(raw_type) if isinstance(raw_type, str) else None
        if "type" not in value:
            c.add(f"{path}.type", "missing (webhook, mqtt or console)")
        elif ctype is None:
            c.add(f"{path}.type", f"expected webhook, mqtt or console, got {_describe(raw_type)}")
        if ctype is None:
            c.known_keys(value, every_key, path)
            continue
        c.known_keys(value, _CHANNEL_KEYS[ctype], path)
        url = secret = topic = None
        timeout = 5.0
        if ctype == "webhook":
            url = c.string(value, "url", path)
            if url:
                _check_http_url(c, url, f"{path}.url")
            secret = _channel_secret(c, value, path, env)
            timeout = c.duration(value, "timeout", path, 5.0, positive=True)
        elif ctype == "mqtt":
            topic = c.optional_string(value, "topic", path)
            if topic and ("+" in topic or "#" in topic):
                c.add(f"{path}.topic", "must not contain the wildcards + or #")
        channels[name] = ChannelConfig(
            name=name, type=ctype, url=url, secret=secret, topic=topic, timeout=timeout
        )
    return channels


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


def _parse_responders(
    c: _Checker, items: list[tuple[str, Table]], channel_names: set[str] | None
) -> list[ResponderConfig]:
    """Responders; `channel_names` is None when [channels] itself was unusable."""
    responders: list[ResponderConfig] = []
    seen: dict[str, str] = {}
    for path, t in items:
        c.known_keys(t, ("id", "name", "roles", "channels"), path)
        responder_id = c.identifier(t, "id", path, _RESPONDER_ID_RE)
        if responder_id in seen:
            c.add(
                f"{path}.id",
                f"duplicate responder id {_describe(responder_id)} (also {seen[responder_id]})",
            )
        elif responder_id:
            seen[responder_id] = path
        name = c.string(t, "name", path)
        roles = [role for _, role in c.strings(t, "roles", path)]
        channels = c.strings(t, "channels", path)
        if channel_names is not None:
            for item_path, channel in channels:
                if channel not in channel_names:
                    known = ", ".join(sorted(channel_names)) or "none defined"
                    c.add(item_path, f"unknown channel {_describe(channel)} (known: {known})")
        responders.append(
            ResponderConfig(
                id=responder_id,
                name=name,
                roles=tuple(dict.fromkeys(roles)),
                channels=tuple(dict.fromkeys(ch for _, ch in channels)),
            )
        )
    return responders


def _parse_policy(
    c: _Checker, t: Table, path: str, roles: set[str] | None, responder_ids: set[str] | None
) -> Policy:
    """One escalation policy; target checks are skipped when responders were unusable."""
    c.known_keys(t, ("steps", "repeat", "ack_timeout"), path)
    steps: list[Step] = []
    raw_steps = t.get("steps")
    steps_path = f"{path}.steps"
    if "steps" not in t:
        c.add(steps_path, "missing")
    elif not isinstance(raw_steps, list):
        c.add(steps_path, f"expected a list of {{after, notify}}, got {_describe(raw_steps)}")
    elif not raw_steps:
        c.add(steps_path, "must have at least one step")
    else:
        previous: float | None = None
        for index, raw in enumerate(raw_steps):
            step_path = f"{steps_path}[{index}]"
            if not isinstance(raw, dict):
                c.add(step_path, f"expected a table {{after, notify}}, got {_describe(raw)}")
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
    return Policy(steps=tuple(steps), repeat=repeat, ack_timeout=ack_timeout)


def _check_target(
    c: _Checker, where: str, target: str, roles: set[str] | None, ids: set[str] | None
) -> None:
    if target.startswith("role:"):
        role = target[len("role:") :]
        if roles is not None and role not in roles:
            c.add(where, f"unknown role {_describe(role)} (no responder has it)")
    elif ids is not None and target not in ids:
        c.add(
            where,
            f"unknown responder {_describe(target)} (expected a responder id or role:<role>)",
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
    "escalation",
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
        _parse_responders(c, responder_items, channel_names)
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
    )


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


def summary(config: Config) -> str:
    """A one-screen description of a checked configuration; it never shows a secret."""
    site, mqtt, http = config.site, config.mqtt, config.http
    fd = format_duration
    listen_host = f"[{http.host}]" if ":" in http.host else http.host
    mqtt_extra = [f"MQTT {mqtt.protocol}", f"keepalive {mqtt.keepalive}s"]
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
        lines.append(
            f"  {r.id} {r.name}: roles {', '.join(r.roles)}; channels {', '.join(r.channels)}"
        )
    lines.append(f"channels ({len(config.channels)}):")
    for ch in config.channels.values():
        text = f"  {ch.name}: {ch.type}"
        if ch.type == "webhook":
            signed = "signed" if ch.secret else "unsigned"
            text += f" {_hide_path(ch.url)} ({signed}, timeout {fd(ch.timeout)})"
        elif ch.type == "mqtt":
            text += f" topic {ch.topic or f'boothwatch/{site.id}/pages/<responder>'}"
        lines.append(text)
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
        lines.append(f"  {priority}: {'; '.join(parts)}")
    return "\n".join(lines)
