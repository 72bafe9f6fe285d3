"""The site configuration as the core sees it: frozen dataclasses. Pure, no I/O.

`monitor.config` reads the TOML file (interface section 3), checks it against its
schema and builds these; the core and every adapter take a `Config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Priority = Literal["high", "medium", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "medium", "low")
ChannelType = Literal["webhook", "mqtt", "console", "ntfy", "pushover", "apprise"]
DeviceSource = Literal["zigbee2mqtt", "esphome", "tasmota", "shelly", "canonical"]
DeviceRole = Literal["call_button", "presence_button", "motion", "occupancy", "door"]
PressAction = Literal["call", "presence", "clear", "ignore"]
OccupancyFrom = Literal["sensor", "door"]
#: how closely a session is watched (set at check-in: never a person's name or identifier)
Risk = Literal["standard", "high"]
RISKS: tuple[Risk, ...] = ("standard", "high")
#: how the drug is taken in a session, recorded with its risk (informational)
Route = Literal["inject", "smoke", "snort", "other"]
ROUTES: tuple[Route, ...] = ("inject", "smoke", "snort", "other")
#: outside [site] hours, device trouble and long sessions page this role only, at low priority
TECHNICIAN_ROLE = "technician"
#: who hears that every responder a step targets is busy ("all staff engaged")
COORDINATOR_ROLE = "coordinator"


@dataclass(frozen=True, slots=True)
class SiteConfig:
    id: str
    name: str
    timezone: str
    # weekly opening hours in the site's time zone; None: open at every hour
    hours: tuple[Shift, ...] | None = None
    language: str = "en"  # what people read is in this language (monitor.i18n)
    catalogs: str | None = None  # the site's own catalogs, searched before the package's


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
    # cut off from the broker this long: the staff on duty are paged that monitoring is down
    outage_page_after: float = 60.0


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """One of `path` (SQLite) and `url` (PostgreSQL, with `password` from the environment)."""

    path: str | None = None
    url: str | None = None
    password: str | None = field(default=None, repr=False)
    lease: float = 3.0  # PostgreSQL: the site lease's time to live (`monitor.lease`)

    @property
    def where(self) -> str:
        """What `Store.open` takes: the URL, else the path."""
        where = self.url or self.path
        assert where is not None, "the config's check requires path or url"
        return where


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str
    port: int
    public_url: str
    ack_link_ttl: float = 12 * 3600.0


@dataclass(frozen=True, slots=True)
class Thresholds:
    """How long a session may be still, and last, before it pages."""

    stillness: float
    long_session: float


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
    # a high-risk session's thresholds; never longer than the standard ones (see thresholds)
    high_risk: Thresholds = Thresholds(stillness=60.0, long_session=600.0)

    def thresholds(self, risk: Risk) -> Thresholds:
        """The thresholds a session of `risk` is watched by: high risk never watches less
        closely than standard, whatever [defaults] says."""
        if risk == "standard":
            return Thresholds(self.stillness, self.long_session)
        return Thresholds(min(self.high_risk.stillness, self.stillness),
                          min(self.high_risk.long_session, self.long_session))


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
    url: str | None = None  # webhook; ntfy server; Pushover API base; Apprise URL (maybe from env)
    secret: str | None = None  # webhook HMAC key (from `secret` or the env var `secret_env`)
    topic: str | None = None  # mqtt; default boothwatch/<site>/pages/<responder>; ntfy template
    timeout: float = 5.0
    # ntfy access token or Pushover application token, from the env var `token_env`
    token: str | None = None
    # pushover: emergency retry and expiry overrides (else from the high policy, see
    # pushover_timing)
    retry: float | None = None
    expire: float | None = None
    poll_interval: float = 5.0  # pushover: how often an emergency receipt is polled
    # console: a person watches this process's output (the demo's terminal). A console
    # nobody watches (a service's journal) reaches nobody: what it prints is no delivery.
    watched: bool = False

    @property
    def reaches_a_person(self) -> bool:
        """Whether a page this channel accepts has reached someone (counts as delivered)."""
        return self.type != "console" or self.watched

    @property
    def needs_address(self) -> bool:
        """Whether a responder on this channel must give an address for it."""
        if self.type in NEEDS_ADDRESS:
            return True
        if self.type == "ntfy":
            return self.topic is None  # no topic template: the address is the topic
        if self.type == "apprise":
            return ADDRESS_PLACEHOLDER in (self.url or "")
        return False


@dataclass(frozen=True, slots=True)
class Shift:
    """A weekly shift in the site's time zone: on ``days`` from ``start`` to ``end``.

    Times are minutes after local midnight; an ``end`` at or before ``start`` runs
    into the next day (a night shift belongs to the day it starts).
    """

    days: frozenset[int]  # Monday = 0
    start: int
    end: int
    text: str = field(default="", compare=False)  # as written, for summaries


@dataclass(frozen=True, slots=True)
class BoardConfig:
    """The station board: when a board should be connected ([board] expected_hours)."""

    expected_hours: tuple[Shift, ...] | None = None  # None: always; (): never


@dataclass(frozen=True, slots=True)
class ResponderConfig:
    id: str
    name: str
    roles: tuple[str, ...]
    channels: tuple[str, ...]  # in fallback order
    # channel name -> this responder's address on it (ntfy topic, Pushover user key,
    # phone number for an Apprise URL template); personal data: never logged
    address: dict[str, str] = field(default_factory=dict)
    shifts: tuple[Shift, ...] = ()  # none: on duty unless checked out


@dataclass(frozen=True, slots=True)
class Step:
    after: float
    notify: tuple[str, ...]  # "role:<role>" or a responder id


@dataclass(frozen=True, slots=True)
class Policy:
    steps: tuple[Step, ...]
    repeat: float | None = None
    ack_timeout: float | None = None
    # run the whole list of steps this many more times (each cycle after `repeat`)
    # before only the last step repeats; None: the last step repeats from the start
    max_repeats: int | None = None
    # a role's responders busy at another booth are skipped for the free ones (else they
    # are paged last); when all are busy they are paged anyway
    skip_busy: bool = False


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """[rate_limit]: how much one sender may send before its messages are dropped.

    A token bucket per sender (see monitor/core/flood.py): ``burst`` messages at once,
    ``rate`` a second sustained. A real sensor sends a few a second at most.
    """

    rate: float = 10.0  # messages a second, sustained, per sender
    burst: int = 50  # messages at once
    # a call pressed again on an open call incident jumps escalation at most this often
    # per sender (0: every time); floods of repeats are dropped anyway
    repeat_call_interval: float = 5.0


@dataclass(frozen=True, slots=True)
class SelfTestConfig:
    """[self_test]: a test page to every responder's every channel on a weekly schedule."""

    days: frozenset[int]  # Monday = 0
    at: int  # minutes after local midnight, in the site's time zone
    schedule: str  # as written, for summaries
    answer_within: float = 3600.0  # seconds; unanswered by then: `notify` hears of it
    notify: tuple[str, ...] = (f"role:{COORDINATOR_ROLE}", f"role:{TECHNICIAN_ROLE}")


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
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    self_test: SelfTestConfig | None = None  # None: no scheduled self-tests
    board: BoardConfig = field(default_factory=BoardConfig)

    def booth(self, booth_id: str) -> BoothConfig | None:
        for booth in self.booths:
            if booth.id == booth_id:
                return booth
        return None


#: in an ntfy topic template, replaced by the responder id
RESPONDER_PLACEHOLDER = "{responder}"
#: in an Apprise URL, replaced by the responder's address on the channel
ADDRESS_PLACEHOLDER = "{address}"
#: channel types that cannot reach a responder without an address of theirs
NEEDS_ADDRESS: frozenset[str] = frozenset({"pushover"})
