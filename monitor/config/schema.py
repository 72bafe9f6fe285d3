"""The site config file (interface section 3) as pydantic models: its schema.

Every key is checked on its own (`monitor.config.values` words each problem). A
check between two keys of one table runs on the later key and reads the earlier
one from ``info.data``, which holds only the keys that passed: one mistake, one
problem. Checks across tables (unknown booths, channels, roles; duplicate ids)
run after the schema, in `monitor.config.loader`. Secrets never come from the
file: a key names the environment variable that holds one, and validation reads
it from ``context={"env": ...}``.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Any, Literal, Self, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, NoDefault
from pydantic_core import core_schema

from devices.mqtt import PASSWORD_ENV, broker_address, tls_problems
from monitor import i18n
from monitor.config.channels import AnyChannel, ChannelName
from monitor.config.values import (
    Duration,
    Flag,
    Missing,
    Percent,
    Positive,
    Strings,
    Table,
    Text,
    check,
    choice,
    did_you_mean,
    env,
    expect,
    http_url,
    listing,
    not_a,
    not_one_of,
    one_of,
    refuse,
    text,
    whole,
    wrong,
)
from monitor.core.durations import describe, format_duration
from monitor.core.readings import PRESS_TYPES
from monitor.core.roster import parse_shift
from monitor.core.selftest import parse_schedule
from monitor.core.settings import (
    BoothConfig,
    DeviceRole,
    DeviceSource,
    HttpConfig,
    MqttConfig,
    OccupancyFrom,
    PressAction,
    RateLimitConfig,
    SelfTestConfig,
    Shift,
)
from monitor.store_base import DB_PASSWORD_ENV, is_url

# ids, their patterns in the JSON Schema too; a site's and a booth's are in topics
Slug = Annotated[str, Field(pattern=r"^[a-z0-9_-]+$"), BeforeValidator(text)]
DeviceId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$"), BeforeValidator(text)]
ResponderId = Annotated[str, Field(pattern=r"^[a-z0-9_.-]+$"), BeforeValidator(text)]
Occupancy = Annotated[OccupancyFrom, choice(get_args(OccupancyFrom))]

# --------------------------------------------------------------------------- [site] ... [http]


def _zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        wrong(f'unknown time zone {describe(name)} (expected a name like "Europe/Lisbon")')
    return name


def _shift(value: object) -> Shift:
    written = text(value)  # raises a problem of its own, which is a ValueError too
    try:
        return parse_shift(written)
    except ValueError as exc:
        wrong(f"{exc}, got {describe(written)}")


#: a shift as written in the roster's grammar: a responder's shifts, the site's and the
#: board's hours
ShiftText = Annotated[Shift, BeforeValidator(_shift), WithJsonSchema(
    {"type": "string", "examples": ["mon-fri 08:00-16:00", "sat,sun 20:00-08:00"]})]


def _catalogs(path: str) -> str:
    try:
        i18n.languages(path)
    except OSError as exc:
        wrong(f"cannot read the directory {describe(path)}: {exc.strerror or exc}")
    return path


def _language(language: str, info: ValidationInfo) -> str:
    if "catalogs" not in info.data:
        return language  # which languages there are depends on that problem
    known = i18n.languages(info.data["catalogs"])
    if language not in known:
        wrong(f"unknown language {describe(language)}: catalogs exist for "
              f"{', '.join(known)}{did_you_mean(language, known)}")
    return language


class Site(Table):
    id: Slug
    name: Text
    timezone: Annotated[Text, AfterValidator(_zone)]
    # opening hours, weekly in the site's time zone; left out: open at every hour
    hours: Annotated[list[ShiftText], listing(
        "a list of strings", "must not be empty; leave hours out for a site open at every "
        "hour")] | None = None
    # before language, whose check reads it
    catalogs: Annotated[Text, AfterValidator(_catalogs)] | None = None
    language: Annotated[Text, AfterValidator(_language)] = i18n.SOURCE

    @model_validator(mode="after")
    def _catalog(self) -> Self:
        """The language's catalogs compile and pass the checks, as the service loads them."""
        try:
            i18n.load(self.language, self.catalogs)
        except i18n.CatalogError as exc:
            refuse((("catalogs" if self.catalogs else "language",), problem)
                   for problem in exc.problems)
        return self


def _store_url(value: object) -> str:
    url = text(value)
    if not is_url(url):
        wrong(f'expected "postgresql://user@host:port/database", got {describe(url)}')
    parts = urlsplit(url)
    if parts.password is not None:
        wrong(f"do not put the password in the URL; set the environment variable "
              f"{DB_PASSWORD_ENV} instead (or use libpq's password or service file)")
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        wrong("PostgreSQL needs boothwatch's postgres extra (psycopg): "
              "pip install 'boothwatch[postgres]'")
    try:
        conninfo_to_dict(url)  # libpq's own reading: a bad port, an unknown ?option
    except Exception as exc:  # psycopg.ProgrammingError; libpq's message says what
        wrong(f"libpq cannot read it: {' '.join(str(exc).split())}")
    return url


_DB_PASSWORD_IN_FILE = {"password": "do not put the password in the file; set the environment "
                                    f"variable {DB_PASSWORD_ENV} instead"}


class Store(Table):
    refused = _DB_PASSWORD_IN_FILE
    path: Text | None = None  # SQLite
    url: Annotated[str | None, BeforeValidator(_store_url),
                   WithJsonSchema({"type": "string", "pattern": "^postgres(ql)?://"})] = None
    # PostgreSQL: how long a site's lease lasts unrenewed, so how soon a standby takes
    # over from a dead owner (`monitor.lease`)
    lease: Annotated[Duration, check(lambda s: None if 1 <= s <= 60 else
                                     "must be between 1s and 60s")] = 3.0

    @model_validator(mode="after")
    def _one_store(self) -> Self:
        if self.path is None and self.url is None:
            wrong("missing, and no store.url either: give path for a SQLite file (one box) "
                  "or url for PostgreSQL", "path")
        if self.path is not None and self.url is not None:
            wrong("given with store.path: give one, path for SQLite or url for PostgreSQL",
                  "url")
        return self


def _broker(value: object) -> tuple[str, str, int, bool]:
    """``(url, host, port, tls)``"""
    url = text(value)
    address, problems = broker_address(url)
    if problems:
        refuse(((), problem) for problem in problems)
    return url, *address


def _whose_password(username: str | None, info: ValidationInfo) -> str | None:
    password = env(info).get(PASSWORD_ENV, "").strip()
    # paho sends a password only with a user name: it would be dropped without a word
    if username is None and password:
        wrong(f"missing, but {PASSWORD_ENV} is set: whose password is it?")
    # else the broker refuses us at every attempt, and nobody is watched
    if username is not None and not password:
        wrong(f"{describe(username)} needs a password: environment variable {PASSWORD_ENV} "
              "is not set")
    return username


def _protocol(value: object) -> str:
    version = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if version not in ("5", "3.1.1"):
        wrong(f'expected "5" or "3.1.1", got {describe(value)}')
    return version


_MQTT = MqttConfig("", "", 0, False, "")  # the defaults
_SESSION_EXPIRY_MAX = 0xFFFFFFFF  # MQTT 5: four-byte interval; this value means "never expires"
_OUTAGE_MAX = 3600.0  # an hour with no booth watched is already far too long
_PASSWORD_IN_FILE = {"password": "do not put the password in the file; set the environment "
                                 f"variable {PASSWORD_ENV} instead"}


class Mqtt(Table):
    refused = _PASSWORD_IN_FILE
    url: Annotated[tuple[str, str, int, bool], BeforeValidator(_broker),
                   WithJsonSchema({"type": "string", "pattern": "^mqtts?://"})]
    client_id: Annotated[str, check(lambda value: not_a(str, "a string", value) or (
        None if value.strip() else "must not be empty; it must be fixed so the broker keeps "
        "our session while we are down"), before=True), Missing(
        "; set a fixed client id so the broker keeps our session (and queued events) while "
        "we are down")]
    username: Annotated[Text | None, AfterValidator(_whose_password),
                        Field(validate_default=True)] = None
    ca_file: Text | None = None
    cert_file: Text | None = None
    key_file: Text | None = None
    protocol: Annotated[Literal["5", "3.1.1"], BeforeValidator(_protocol)] = _MQTT.protocol
    keepalive: Annotated[int, whole(1, 65535, "a whole number of seconds",
                                    "must be between 1 and 65535 seconds")] = _MQTT.keepalive
    session_expiry: Annotated[Duration, check(lambda s: None if s <= _SESSION_EXPIRY_MAX else (
        f"must be at most {_SESSION_EXPIRY_MAX} seconds"))] = _MQTT.session_expiry
    outage_page_after: Annotated[Positive, check(lambda s: None if s <= _OUTAGE_MAX else (
        f"must be at most {format_duration(_OUTAGE_MAX)}: nobody watches the booths while "
        "the broker is down"))] = _MQTT.outage_page_after

    @model_validator(mode="after")
    def _tls_files(self) -> Self:
        problems = tls_problems(self.url[3], self.ca_file, self.cert_file, self.key_file)
        if problems:
            refuse(((key,), problem) for key, problem in problems)
        return self


def _listen(value: object) -> tuple[str, int]:
    listen = text(value)
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
    url = http_url(value)
    if urlsplit(url).query or urlsplit(url).fragment:
        wrong("must not have a query or fragment (ack links are appended)")
    return url.rstrip("/")


class Http(Table):
    listen: Annotated[tuple[str, int], BeforeValidator(_listen),
                      WithJsonSchema({"type": "string", "examples": ["127.0.0.1:8080"]})]
    public_url: Annotated[str, BeforeValidator(_public_url),
                          WithJsonSchema({"type": "string", "pattern": "^https?://"})]
    ack_link_ttl: Positive = HttpConfig("", 0, "").ack_link_ttl


# --------------------------------------------------------------------------- booths, devices


_HIGH_RISK = BoothConfig("", "", 0.0, 0.0, 0.0).high_risk


class HighRisk(Table):
    """[defaults.high_risk]: the thresholds of a session staff marked high risk (the loader
    checks that none is longer than the standard one written beside it)."""

    stillness: Positive = _HIGH_RISK.stillness
    long_session: Positive = _HIGH_RISK.long_session


class BoothHighRisk(Table):
    """A booth's own high_risk thresholds; each left out comes from [defaults.high_risk]."""

    stillness: Positive | None = None
    long_session: Positive | None = None


class Defaults(Table):
    """[defaults]: each booth's thresholds and occupancy_from, each device's battery_low."""

    long_session: Positive = 20 * 60.0
    stillness: Positive = 3 * 60.0
    device_timeout: Positive = 15 * 60.0
    door_window: Positive = 30.0
    occupancy_from: Occupancy = "sensor"
    battery_low: Percent = 20
    high_risk: HighRisk = Field(default_factory=HighRisk)


class Booth(Table):
    id: Slug
    name: Text
    long_session: Positive | None = None  # None: from [defaults]
    stillness: Positive | None = None
    device_timeout: Positive | None = None
    door_window: Positive | None = None
    occupancy_from: Occupancy | None = None
    high_risk: BoothHighRisk = Field(default_factory=BoothHighRisk)


_SOURCES: tuple[DeviceSource, ...] = get_args(DeviceSource)
_ROLES: tuple[DeviceRole, ...] = get_args(DeviceRole)
_ACTIONS: tuple[PressAction, ...] = get_args(PressAction)


def _not_a_canonical_door(role: str, info: ValidationInfo) -> str:
    if role == "door" and info.data.get("source") == "canonical":
        wrong("a canonical device cannot be a door (the canonical event has no door)")
    return role


def _actions(value: object, info: ValidationInfo) -> dict[str, object]:
    """A button's press type -> action; an unknown press type's action is not checked."""
    actions: dict[str, object] = expect(dict, "a table of press type = action", value)
    role = info.data.get("role")
    if role is not None and role not in ("call_button", "presence_button"):
        wrong(f"only call_button and presence_button devices take actions, not {role}")
    problems = []
    for press, action in actions.items():
        if press not in PRESS_TYPES:
            problems.append(((press,), f"unknown press type (expected {one_of(PRESS_TYPES)})"
                                       f"{did_you_mean(press, PRESS_TYPES)}"))
        elif (problem := not_one_of(_ACTIONS, action)) is not None:
            problems.append(((press,), problem))
    if problems:
        refuse(problems)
    return actions


class Device(Table):
    """[[devices]]: an off-the-shelf device, its booth and its role there."""

    id: DeviceId
    source: Annotated[DeviceSource, choice(_SOURCES), Missing(f" ({one_of(_SOURCES)})")]
    booth: Text
    role: Annotated[DeviceRole, choice(_ROLES), AfterValidator(_not_a_canonical_door),
                    Missing(f" ({one_of(_ROLES)})")]
    topic: Text  # its form per source: devices.adapters.topic_problem, in the loader
    actions: Annotated[dict[str, PressAction], BeforeValidator(_actions)] = Field(
        default_factory=dict)
    battery_low: Percent | None = None  # None: from [defaults]
    inverted: Flag = False


# --------------------------------------------------------------------------- people, escalation


def _address(value: object, info: ValidationInfo) -> dict[str, str]:
    table: dict[str, object] = expect(dict, "a table of channel = address", value)
    channels = info.data.get("channels")  # None: they have a problem of their own
    address, problems = {}, []
    for channel, where in table.items():
        if channels is not None and channel not in channels:
            problems.append(((channel,), "not one of this responder's channels"))
        elif not isinstance(where, str) or not where.strip():
            problems.append(((channel,), f"expected a non-empty string, got {describe(where)}"))
        else:
            address[channel] = where.strip()
    if problems:
        refuse(problems)
    return address


class Responder(Table):
    id: ResponderId
    name: Text
    roles: Strings
    channels: Strings  # in fallback order
    # channel -> this responder's address on it (ntfy topic, Pushover user key, phone
    # number for an Apprise URL template); personal data
    address: Annotated[dict[str, str], BeforeValidator(_address)] = Field(default_factory=dict)
    shifts: Annotated[  # none: always on duty
        list[ShiftText], listing("a list of strings", "must not be empty"),
    ] = Field(default_factory=list)


class Step(Table):
    kind = "a table {after, notify}"
    after: Duration
    notify: Strings  # "role:<role>" or a responder id


def _needs_repeat(max_repeats: int, info: ValidationInfo) -> int:
    if "repeat" in info.data and info.data["repeat"] is None:
        wrong("needs repeat: the interval between cycles")
    return max_repeats


class Policy(Table):
    # in time order: the loader checks that, seeing each usable ``after``
    steps: Annotated[list[Step],
                     listing("a list of {after, notify}", "must have at least one step")]
    repeat: Positive | None = None
    ack_timeout: Positive | None = None
    max_repeats: Annotated[int, whole(0, 100, "a whole number from 0 to 100",
                                      "expected a whole number from 0 to 100"),
                           AfterValidator(_needs_repeat)] | None = None
    skip_busy: Flag = False  # skip a role's responders busy at another booth for free ones


class Escalation(Table):
    unknown = "unknown priority (expected high, medium or low)"
    high: Policy
    medium: Policy
    low: Policy


# --------------------------------------------------------------------------- self-tests


def _schedule(value: object) -> str:
    written = text(value)
    try:
        parse_schedule(written)
    except ValueError as exc:
        wrong(f"{exc}, got {describe(written)}")
    return written.strip()


_SELF_TEST = SelfTestConfig(frozenset(), 0, "")  # the defaults
_ANSWER_MAX = 24 * 3600.0  # a round is closed when the next one starts anyway


class SelfTest(Table):
    """[self_test]: a test page to every responder's every channel on a schedule."""

    schedule: Annotated[str, BeforeValidator(_schedule), WithJsonSchema(
        {"type": "string", "examples": ["daily 09:00", "mon-fri 09:30"]})]
    answer_within: Annotated[Positive, check(lambda s: None if s <= _ANSWER_MAX else (
        f"must be at most {format_duration(_ANSWER_MAX)}"))] = _SELF_TEST.answer_within
    notify: Strings = Field(default_factory=lambda: list(_SELF_TEST.notify))


# --------------------------------------------------------------------------- the file

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
    burst: Annotated[int, whole(1, _MAX_RATE, "a whole number of messages",
                                f"must be between 1 and {_MAX_RATE:,}")] = _RATE.burst
    repeat_call_interval: Duration = _RATE.repeat_call_interval


class Board(Table):
    # left out: a board is expected at every hour; [] : never (a site without a board)
    expected_hours: Annotated[list[ShiftText], listing("a list of strings")] | None = None


def _tables(name: str, required: bool = True) -> Any:
    return listing(f"a list of tables ([[{name}]])",
                   f"at least one [[{name}]] is required" if required else None)


class SiteFile(Table):
    model_config = ConfigDict(title="boothwatch site config")
    site: Site
    mqtt: Mqtt
    store: Store
    http: Http
    defaults: Defaults = Field(default_factory=Defaults)
    booths: Annotated[list[Booth], _tables("booths"),
                      Missing(" (at least one [[booths]] is required)")]
    devices: Annotated[list[Device], _tables("devices", required=False)] = Field(
        default_factory=list)
    channels: Annotated[dict[ChannelName, AnyChannel],
                        BeforeValidator(lambda value: expect(dict, "a table", value))]
    responders: Annotated[list[Responder], _tables("responders"),
                          Missing(" (at least one [[responders]] is required)")]
    escalation: Escalation
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    self_test: SelfTest | None = None
    board: Board = Field(default_factory=Board)


class _TomlSchema(GenerateJsonSchema):
    """TOML has no null: an optional key is one that may be left out."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        default = super().get_default_value(schema)
        return NoDefault if default is None else default


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the file, for editors: what ``boothwatch config-schema`` prints."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            **SiteFile.model_json_schema(schema_generator=_TomlSchema)}
