"""The site config file's shape (interface section 3) as pydantic models: the schema.

Each key's check sits with its type, worded to follow the key path in a problem
(``booths[2].long_session: must be greater than 0``); `monitor.config.problems`
turns pydantic's errors into those lines, every problem at once. A check between
two keys of one table runs on the later key and reads the earlier one from
``info.data``, which holds only the keys that passed: one mistake, one problem.
Checks across tables (unknown booths, channels, roles; duplicate ids) run after
the schema, in `monitor.config.loader`.

Secrets never come from the file: a table names the environment variable that
holds one, and validation reads it from ``context={"env": ...}``.
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, NoReturn, Self, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, NoDefault
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

from alerts.push import apprise_url_problem, ntfy_topic_problem
from alerts.pushover import (
    PUSHOVER_API,
    PUSHOVER_MIN_POLL,
    expire_problem,
    poll_problem,
    retry_problem,
)
from devices.mqtt import tls_problems
from monitor.core.durations import DURATION_PATTERN, describe, format_duration, parse_duration
from monitor.core.readings import PRESS_TYPES
from monitor.core.roster import parse_shift
from monitor.core.settings import (
    ChannelConfig,
    DeviceRole,
    DeviceSource,
    HttpConfig,
    MqttConfig,
    OccupancyFrom,
    PressAction,
    RateLimitConfig,
    Shift,
)

MQTT_PASSWORD_ENV = "BOOTHWATCH_MQTT_PASSWORD"
KEY_ERROR = "config_key"  # a problem with a table's key (a name), not with its value
Loc = tuple[str | int, ...]

# --------------------------------------------------------------------------- wording


def one_of(options: Sequence[str]) -> str:
    """The options as prose: "a, b or c"."""
    return options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"


def did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def unknown_key(key: str, known: Iterable[str]) -> str:
    return "unknown key" + did_you_mean(key, known)


def refuse(problems: Iterable[tuple[Loc, str]]) -> NoReturn:
    """Reject the value being checked; each problem sits at its path below the value."""
    raise ValidationError.from_exception_data("config", [
        InitErrorDetails(type=PydanticCustomError("config", "{text}", {"text": text}), loc=at,
                         input=None)
        for at, text in problems
    ])


def wrong(text: str, *at: str | int) -> NoReturn:
    refuse([(at, text)])


@dataclass(frozen=True, slots=True)
class Missing:
    """What a problem says after "missing" when this required key is absent."""

    more: str


# --------------------------------------------------------------------------- values


class Table(BaseModel):
    """A TOML table: no unknown key, and no value read as another type ("5" is no number)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    #: the table as "expected ..., got ..." names it
    kind: ClassVar[str] = "a table"
    #: what an unknown key is told instead of "unknown key (did you mean ...)"
    unknown: ClassVar[str | None] = None
    #: keys that must not be in the file, and why: secrets belong in the environment
    refused: ClassVar[Mapping[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _a_table(cls, value: object) -> object:
        if not isinstance(value, dict):
            wrong(f"expected {cls.kind}, got {describe(value)}")
        return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        wrong(f"expected a string, got {describe(value)}")
    if not value.strip():
        wrong("must not be empty")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        wrong(f"expected true or false, got {describe(value)}")
    return value


def _duration(value: object) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        wrong(str(exc))


def _positive(seconds: float) -> float:
    if seconds <= 0:
        wrong("must be greater than 0")
    return seconds


def _whole(low: int, high: int, expected: str, out_of_range: str) -> BeforeValidator:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            wrong(f"expected {expected}, got {describe(value)}")
        if not low <= value <= high:
            wrong(f"{out_of_range}, got {describe(value)}")
        return value

    return BeforeValidator(check)


def _not_one_of(options: Sequence[str], value: object) -> str | None:
    if isinstance(value, str) and value in options:
        return None
    hint = did_you_mean(value, options) if isinstance(value, str) else ""
    return f"expected {one_of(options)}, got {describe(value)}{hint}"


def _choice(options: Sequence[str]) -> BeforeValidator:
    def check(value: object) -> object:
        if (problem := _not_one_of(options, value)) is not None:
            wrong(problem)
        return value

    return BeforeValidator(check)


def _list(expected: str, empty: str | None = None) -> BeforeValidator:
    def check(value: object) -> object:
        if not isinstance(value, list):
            wrong(f"expected {expected}, got {describe(value)}")
        if empty and not value:
            wrong(empty)
        return value

    return BeforeValidator(check)


def _unless(problem: Callable[[Any], str | None]) -> AfterValidator:
    """Refuse a value for which `problem` (a module's own rule) has something to say."""
    def check(value: Any) -> Any:
        if (text := problem(value)) is not None:
            wrong(text)
        return value

    return AfterValidator(check)


def _env(info: ValidationInfo) -> Mapping[str, str]:
    env: Mapping[str, str] = (info.context or {})["env"]
    return env


def _from_env(instead_of: str | None = None) -> AfterValidator:
    """An environment variable's name; it must be set (and not beside `instead_of`)."""
    def check(var: str, info: ValidationInfo) -> str:
        if instead_of is not None and info.data.get(instead_of) is not None:
            wrong(f"set either {instead_of} or {info.field_name}, not both")
        if not _env(info).get(var, "").strip():
            wrong(f"environment variable {var} is not set")
        return var

    return AfterValidator(check)


def _http_url(value: object) -> str:
    url = _text(value)
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        wrong(f"not a valid URL ({exc})")
    if parts.scheme.lower() not in ("http", "https"):
        wrong(f"scheme must be http or https, got {describe(url)}")
    if not parts.hostname:
        wrong(f"missing host, got {describe(url)}")
    return url


Text = Annotated[str, BeforeValidator(_text)]
Strings = Annotated[list[Text], _list("a list of strings", "must not be empty")]
Flag = Annotated[bool, BeforeValidator(_flag)]
Duration = Annotated[float, BeforeValidator(_duration), WithJsonSchema({"anyOf": [
    {"type": "number", "minimum": 0}, {"type": "string", "pattern": DURATION_PATTERN}]})]
Positive = Annotated[Duration, AfterValidator(_positive)]
Percent = Annotated[int, _whole(1, 99, "a whole percentage from 1 to 99",
                                "must be between 1 and 99")]
HttpUrl = Annotated[str, BeforeValidator(_http_url),
                    WithJsonSchema({"type": "string", "pattern": "^https?://"})]
Occupancy = Annotated[OccupancyFrom, _choice(get_args(OccupancyFrom))]

# --------------------------------------------------------------------------- [site] [store]


def _zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        wrong(f'unknown time zone {describe(name)} (expected a name like "Europe/Lisbon")')
    return name


class Site(Table):
    id: Annotated[str, Field(pattern=r"^[a-z0-9_-]+$"), BeforeValidator(_text)]  # in every topic
    name: Text
    timezone: Annotated[Text, AfterValidator(_zone)]


class Store(Table):
    path: Text


# --------------------------------------------------------------------------- [mqtt]

_MQTT = MqttConfig("", "", 0, False, "")  # the defaults
_SESSION_EXPIRY_MAX = 0xFFFFFFFF  # MQTT 5: four-byte interval; this value means "never expires"
_OUTAGE_PAGE_AFTER_MAX = 3600.0  # an hour with no booth watched is already far too long


class Broker(NamedTuple):
    url: str
    host: str
    port: int
    tls: bool


def _broker(value: object) -> Broker:
    url = _text(value)
    try:
        parts = urlsplit(url)
        explicit_port = parts.port
    except ValueError as exc:
        wrong(f"not a valid URL ({exc})")
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts"):
        wrong(f"scheme must be mqtt or mqtts, got {describe(url)}")
    tls = scheme == "mqtts"
    port = explicit_port if explicit_port is not None else (8883 if tls else 1883)
    problems = []
    if not parts.hostname:
        problems.append(f"missing host (e.g. mqtt://127.0.0.1:1883), got {describe(url)}")
    if parts.username is not None or parts.password is not None:
        problems.append(f"must not carry credentials; use mqtt.username and {MQTT_PASSWORD_ENV}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        problems.append("must be just scheme://host[:port], without a path or query")
    if not 1 <= port <= 65535:
        problems.append(f"port must be between 1 and 65535, got {port}")
    if problems:
        refuse(((), text) for text in problems)
    return Broker(url, parts.hostname or "", port, tls)


def _client_id(value: object) -> str:
    if not isinstance(value, str):
        wrong(f"expected a string, got {describe(value)}")
    if not value.strip():
        wrong("must not be empty; it must be fixed so the broker keeps our session while we "
              "are down")
    return value


def _whose_password(username: str | None, info: ValidationInfo) -> str | None:
    # paho sends a password only with a user name: it would be dropped without a word
    if username is None and _env(info).get(MQTT_PASSWORD_ENV):
        wrong(f"missing, but {MQTT_PASSWORD_ENV} is set: whose password is it?")
    return username


def _protocol(value: object) -> str:
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if text not in ("5", "3.1.1"):
        wrong(f'expected "5" or "3.1.1", got {describe(value)}')
    return text


def _at_most(limit: float, text: str) -> AfterValidator:
    def check(seconds: float) -> float:
        if seconds > limit:
            wrong(text)
        return seconds

    return AfterValidator(check)


class Mqtt(Table):
    refused = {"password": "do not put the password in the file; set the environment "
                           f"variable {MQTT_PASSWORD_ENV} instead"}
    url: Annotated[Broker, BeforeValidator(_broker),
                   WithJsonSchema({"type": "string", "pattern": "^mqtts?://"})]
    client_id: Annotated[str, BeforeValidator(_client_id), Missing(
        "; set a fixed client id so the broker keeps our session (and queued events) while "
        "we are down")]
    username: Annotated[Text | None, AfterValidator(_whose_password),
                        Field(validate_default=True)] = None
    ca_file: Text | None = None
    cert_file: Text | None = None
    key_file: Text | None = None
    protocol: Annotated[Literal["5", "3.1.1"], BeforeValidator(_protocol)] = _MQTT.protocol
    keepalive: Annotated[int, _whole(1, 65535, "a whole number of seconds",
                                     "must be between 1 and 65535 seconds")] = _MQTT.keepalive
    session_expiry: Annotated[Duration, _at_most(
        _SESSION_EXPIRY_MAX, f"must be at most {_SESSION_EXPIRY_MAX} seconds",
    )] = _MQTT.session_expiry
    outage_page_after: Annotated[Positive, _at_most(
        _OUTAGE_PAGE_AFTER_MAX, f"must be at most {format_duration(_OUTAGE_PAGE_AFTER_MAX)}: "
        "nobody watches the booths while the broker is down",
    )] = _MQTT.outage_page_after

    @model_validator(mode="after")
    def _tls_files(self) -> Self:
        problems = tls_problems(self.url.tls, self.ca_file, self.cert_file, self.key_file)
        if problems:
            refuse(((key,), text) for key, text in problems)
        return self


# --------------------------------------------------------------------------- [http]


def _listen(value: object) -> tuple[str, int]:
    listen = _text(value)
    if listen.startswith("["):
        match = re.fullmatch(r"\[([^\]]+)\]:([0-9]+)", listen)
        if match is None:
            wrong(f'expected "host:port" like "[::1]:8080", got {describe(listen)}')
        host, port = match.group(1), match.group(2)
    else:
        host, sep, port = listen.rpartition(":")
        if not sep or not host:
            wrong(f'expected "host:port" like "127.0.0.1:8080", got {describe(listen)}')
        if ":" in host:
            wrong(f'put an IPv6 address in brackets ("[::1]:8080"), got {describe(listen)}')
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
        wrong(f"port must be a number from 1 to 65535, got {describe(listen)}")
    return host, int(port)


def _public_url(value: object) -> str:
    url = _http_url(value)
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        wrong("must not have a query or fragment (ack links are appended)")
    return url.rstrip("/")


class Http(Table):
    listen: Annotated[tuple[str, int], BeforeValidator(_listen),
                      WithJsonSchema({"type": "string", "examples": ["127.0.0.1:8080"]})]
    public_url: Annotated[str, BeforeValidator(_public_url),
                          WithJsonSchema({"type": "string", "pattern": "^https?://"})]
    ack_link_ttl: Positive = HttpConfig("", 0, "").ack_link_ttl


# --------------------------------------------------------------------------- booths, devices


class Defaults(Table):
    """[defaults]: each booth's thresholds and occupancy_from, each device's battery_low."""

    long_session: Positive = 20 * 60.0
    stillness: Positive = 3 * 60.0
    device_timeout: Positive = 15 * 60.0
    door_window: Positive = 30.0
    occupancy_from: Occupancy = "sensor"
    battery_low: Percent = 20


class Booth(Table):
    id: Annotated[str, Field(pattern=r"^[a-z0-9_-]+$"), BeforeValidator(_text)]  # in topics
    name: Text
    long_session: Positive | None = None  # None: from [defaults]
    stillness: Positive | None = None
    device_timeout: Positive | None = None
    door_window: Positive | None = None
    occupancy_from: Occupancy | None = None


_SOURCES: tuple[DeviceSource, ...] = get_args(DeviceSource)
_ROLES: tuple[DeviceRole, ...] = get_args(DeviceRole)
_BUTTONS = ("call_button", "presence_button")
_ACTIONS: tuple[PressAction, ...] = get_args(PressAction)


def _not_a_canonical_door(role: str, info: ValidationInfo) -> str:
    if role == "door" and info.data.get("source") == "canonical":
        wrong("a canonical device cannot be a door (the canonical event has no door)")
    return role


def _actions(value: object, info: ValidationInfo) -> object:
    """A button's press type -> action; an unknown press type's action is not checked."""
    if not isinstance(value, dict):
        wrong(f"expected a table of press type = action, got {describe(value)}")
    role = info.data.get("role")
    if role is not None and role not in _BUTTONS:
        wrong(f"only call_button and presence_button devices take actions, not {role}")
    problems = []
    for press, action in value.items():
        if press not in PRESS_TYPES:
            problems.append(((press,), f"unknown press type (expected {one_of(PRESS_TYPES)})"
                                       f"{did_you_mean(press, PRESS_TYPES)}"))
        elif (problem := _not_one_of(_ACTIONS, action)) is not None:
            problems.append(((press,), problem))
    if problems:
        refuse(problems)
    return value


class Device(Table):
    """[[devices]]: an off-the-shelf device, its booth and its role there."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$"), BeforeValidator(_text)]
    source: Annotated[DeviceSource, _choice(_SOURCES), Missing(f" ({one_of(_SOURCES)})")]
    booth: Text
    role: Annotated[DeviceRole, _choice(_ROLES), AfterValidator(_not_a_canonical_door),
                    Missing(f" ({one_of(_ROLES)})")]
    topic: Text  # its form per source: devices.adapters.topic_problem, after the schema
    actions: Annotated[dict[str, PressAction], BeforeValidator(_actions)] = {}
    battery_low: Percent | None = None  # None: from [defaults]
    inverted: Flag = False


# --------------------------------------------------------------------------- [channels]

_TIMEOUT = ChannelConfig("", "console").timeout
_TOKEN_IN_FILE = ("do not put the token in the file; name an environment variable that holds "
                  "it in token_env")
#: keys naming an environment variable -> the ChannelConfig field its value fills
_FROM_ENV = {"secret_env": "secret", "token_env": "token", "url_env": "url"}


class Channel(Table):
    def settings(self, name: str, env: Mapping[str, str]) -> ChannelConfig:
        """The core's `ChannelConfig`, with the secrets from the environment."""
        values = self.model_dump(exclude_none=True)
        for key, target in _FROM_ENV.items():
            if key in values:
                value = env[values.pop(key)]
                # an HMAC key is used byte for byte; tokens and URLs lose stray blanks
                values[target] = value if target == "secret" else value.strip()
        return ChannelConfig(name=name, **values)


def _no_wildcards(topic: str) -> str:
    if "+" in topic or "#" in topic:
        wrong("must not contain the wildcards + or #")
    return topic


def _expire(expire: float, info: ValidationInfo) -> float:
    if (problem := expire_problem(expire, info.data.get("retry"))) is not None:
        wrong(problem)
    return expire


def _apprise_url(url: str) -> str:
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None  # not a URL urllib understands; Apprise's check says why
    if password:
        wrong("carries a password: put the URL in an environment variable and name it in "
              "url_env")
    if (problem := apprise_url_problem(url)) is not None:
        wrong(problem)  # the URL itself is not shown: it may carry credentials
    return url


def _apprise_url_from_env(var: str, info: ValidationInfo) -> str:
    if (problem := apprise_url_problem(_env(info)[var].strip())) is not None:
        wrong(problem)
    return var


class Webhook(Channel):
    type: Literal["webhook"]
    url: HttpUrl
    secret: Text | None = None
    secret_env: Annotated[Text, _from_env(instead_of="secret")] | None = None
    timeout: Positive = _TIMEOUT


class MqttChannel(Channel):
    type: Literal["mqtt"]
    topic: Annotated[Text, AfterValidator(_no_wildcards)] | None = None


class Console(Channel):
    type: Literal["console"]


class Ntfy(Channel):
    refused = {"token": _TOKEN_IN_FILE}
    type: Literal["ntfy"]
    url: HttpUrl
    topic: Annotated[Text, _unless(ntfy_topic_problem)] | None = None
    token_env: Annotated[Text, _from_env()] | None = None
    timeout: Positive = _TIMEOUT


class Pushover(Channel):
    refused = {"token": _TOKEN_IN_FILE}
    type: Literal["pushover"]
    url: HttpUrl = PUSHOVER_API
    token_env: Annotated[Text, _from_env(), Missing(
        ": the environment variable that holds the application token")]
    retry: Annotated[Positive, _unless(retry_problem)] | None = None
    expire: Annotated[Positive, AfterValidator(_expire)] | None = None
    poll_interval: Annotated[Positive, _unless(poll_problem)] = PUSHOVER_MIN_POLL
    timeout: Positive = _TIMEOUT


class Apprise(Channel):
    type: Literal["apprise"]
    url: Annotated[Text, AfterValidator(_apprise_url)] | None = None
    url_env: Annotated[Text, _from_env(instead_of="url"),
                       AfterValidator(_apprise_url_from_env)] | None = None
    timeout: Positive = _TIMEOUT

    @model_validator(mode="after")
    def _a_url(self) -> Self:
        if self.url is None and self.url_env is None:
            wrong("missing (or url_env: an environment variable holding a URL that carries "
                  "credentials)", "url")
        return self


CHANNEL_TYPES: dict[str, type[Channel]] = {
    "webhook": Webhook, "mqtt": MqttChannel, "console": Console, "ntfy": Ntfy,
    "pushover": Pushover, "apprise": Apprise,
}  # fmt: skip
_EVERY_CHANNEL_KEY = dict.fromkeys(k for t in CHANNEL_TYPES.values() for k in t.model_fields)
_CHANNEL_NAME = "[A-Za-z0-9_-]+"


def _channel_type(value: object) -> object:
    """Without a usable ``type`` there is no model to check a channel against: say so, and
    check its keys against those of every type."""
    if not isinstance(value, dict):
        wrong(f"expected a table, got {describe(value)}")
    kind = value.get("type")
    if isinstance(kind, str) and kind in CHANNEL_TYPES:
        return value
    types = one_of(list(CHANNEL_TYPES))
    problem = f"expected {types}, got {describe(kind)}" if "type" in value else f"missing ({types})"
    refuse([(("type",), problem), *(((key,), unknown_key(key, _EVERY_CHANNEL_KEY))
                                    for key in value if key not in _EVERY_CHANNEL_KEY)])


def _channel_name(name: str) -> str:
    if not re.fullmatch(_CHANNEL_NAME, name):
        # its own error type: pydantic puts "[key]" after the name, and only this check
        # may have it taken off (a table can have a key called "[key]")
        raise PydanticCustomError(KEY_ERROR, "{text}", {"text": f"channel name must match "
                                                                f"^{_CHANNEL_NAME}$"})
    return name


AnyChannel = Annotated[
    Annotated[Webhook | MqttChannel | Console | Ntfy | Pushover | Apprise,
              Field(discriminator="type")],
    BeforeValidator(_channel_type),
]
#: one channel checked alone (the loader asks whether a channel needs addresses)
CHANNEL: TypeAdapter[Channel] = TypeAdapter(AnyChannel)
ChannelName = Annotated[str, BeforeValidator(_channel_name),
                        WithJsonSchema({"type": "string", "pattern": f"^{_CHANNEL_NAME}$"})]


def _table(value: object) -> object:
    if not isinstance(value, dict):
        wrong(f"expected a table, got {describe(value)}")
    return value


# --------------------------------------------------------------------------- [[responders]]


def _shift(value: object) -> Shift:
    text = _text(value)
    try:
        return parse_shift(text)
    except ValueError as exc:
        wrong(f"{exc}, got {describe(text)}")


def _address(value: object, info: ValidationInfo) -> dict[str, str]:
    if not isinstance(value, dict):
        wrong(f"expected a table of channel = address, got {describe(value)}")
    channels = info.data.get("channels")  # None: they have a problem of their own
    address, problems = {}, []
    for channel, text in value.items():
        if channels is not None and channel not in channels:
            problems.append(((channel,), "not one of this responder's channels"))
        elif not isinstance(text, str) or not text.strip():
            problems.append(((channel,), f"expected a non-empty string, got {describe(text)}"))
        else:
            address[channel] = text.strip()
    if problems:
        refuse(problems)
    return address


class Responder(Table):
    id: Annotated[str, Field(pattern=r"^[a-z0-9_.-]+$"), BeforeValidator(_text)]
    name: Text
    roles: Strings
    channels: Strings  # in fallback order
    # channel -> this responder's address on it (ntfy topic, Pushover user key, phone
    # number for an Apprise URL template); personal data
    address: Annotated[dict[str, str], BeforeValidator(_address)] = {}
    shifts: Annotated[
        list[Annotated[Shift, BeforeValidator(_shift), WithJsonSchema(
            {"type": "string", "examples": ["mon-fri 08:00-16:00", "sat,sun 20:00-08:00"]})]],
        _list("a list of strings", "must not be empty"),
    ] = []  # none: always on duty


# --------------------------------------------------------------------------- [escalation]


class Step(Table):
    kind = "a table {after, notify}"
    after: Duration
    notify: Strings  # "role:<role>" or a responder id


def _needs_repeat(max_repeats: int, info: ValidationInfo) -> int:
    if "repeat" in info.data and info.data["repeat"] is None:
        wrong("needs repeat: the interval between cycles")
    return max_repeats


class Policy(Table):
    # in time order: checked by the loader, which sees each step's after (one may be wrong)
    steps: Annotated[list[Step], _list("a list of {after, notify}", "must have at least one step")]
    repeat: Positive | None = None
    ack_timeout: Positive | None = None
    max_repeats: Annotated[int, _whole(0, 100, "a whole number from 0 to 100",
                                       "expected a whole number from 0 to 100"),
                           AfterValidator(_needs_repeat)] | None = None


class Escalation(Table):
    unknown = "unknown priority (expected high, medium or low)"
    high: Policy
    medium: Policy
    low: Policy


# --------------------------------------------------------------------------- [rate_limit]

_RATE = RateLimitConfig()
_MAX_RATE = 1_000_000  # messages a second: far past what one broker connection carries


def _rate(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        wrong(f"expected messages a second (a number), got {describe(value)}")
    if not 0 < value <= _MAX_RATE:  # NaN fails this too
        wrong(f"must be greater than 0 and at most {_MAX_RATE:,}, got {describe(value)}")
    return float(value)


class RateLimit(Table):
    rate: Annotated[float, BeforeValidator(_rate)] = _RATE.rate
    burst: Annotated[int, _whole(1, _MAX_RATE, "a whole number of messages",
                                 f"must be between 1 and {_MAX_RATE:,}")] = _RATE.burst
    repeat_call_interval: Duration = _RATE.repeat_call_interval


# --------------------------------------------------------------------------- the file


def _tables(name: str, required: bool) -> BeforeValidator:
    return _list(f"a list of tables ([[{name}]])",
                 f"at least one [[{name}]] is required" if required else None)


class SiteFile(Table):
    model_config = ConfigDict(title="boothwatch site config")
    site: Site
    mqtt: Mqtt
    store: Store
    http: Http
    defaults: Defaults = Field(default_factory=Defaults)
    booths: Annotated[list[Booth], _tables("booths", required=True),
                      Missing(" (at least one [[booths]] is required)")]
    devices: Annotated[list[Device], _tables("devices", required=False)] = []
    channels: Annotated[dict[ChannelName, AnyChannel], BeforeValidator(_table)]
    responders: Annotated[list[Responder], _tables("responders", required=True),
                          Missing(" (at least one [[responders]] is required)")]
    escalation: Escalation
    rate_limit: RateLimit = Field(default_factory=RateLimit)


class _TomlSchema(GenerateJsonSchema):
    """TOML has no null: an optional key is one that may be left out."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        default = super().get_default_value(schema)
        return NoDefault if default is None else default

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False  # "Client Id" over client_id says nothing more


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the file, for editors: what ``boothwatch config-schema`` prints."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            **SiteFile.model_json_schema(schema_generator=_TomlSchema)}
