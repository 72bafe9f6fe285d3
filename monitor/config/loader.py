"""Reading the site config: TOML, the schema, the checks across tables, the core's `Config`.

The schema (`monitor.config.schema`) checks every table on its own. What it cannot
see needs two tables: a device's booth, a responder's channels (one must reach a
person), a step's targets, a door booth's devices, ids used twice. Those checks
run here, after it, on the values the schema found no problem with: a value with
a problem of its own was reported already, so nothing that depends on it is
checked, and one mistake gives one problem.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import tomli
from pydantic import ValidationError

from devices import adapters
from devices.mqtt import PASSWORD_ENV
from monitor import i18n
from monitor.config.channels import CHANNEL
from monitor.config.host import Host
from monitor.config.problems import ConfigError, Problem, child, from_validation, ordered
from monitor.config.schema import Booth as BoothTable
from monitor.config.schema import BoothHighRisk, Defaults, SiteFile
from monitor.config.schema import Policy as PolicyTable
from monitor.config.values import Loc
from monitor.core.durations import describe, format_duration, parse_duration
from monitor.core.selftest import parse_schedule
from monitor.core.settings import (
    PRIORITIES,
    TECHNICIAN_ROLE,
    BoardConfig,
    BoothConfig,
    Config,
    DeviceConfig,
    HttpConfig,
    MqttConfig,
    Policy,
    RateLimitConfig,
    ResponderConfig,
    SelfTestConfig,
    SiteConfig,
    Step,
    StoreConfig,
    Thresholds,
)
from monitor.store_base import DB_PASSWORD_ENV


def load_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None, host: Host | None = None
) -> Config:
    """Read and check a TOML file; env defaults to os.environ. With `host`, also what the
    service will need of the box (check-config: the store's directory, files readable)."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            # tomli is tomllib (its origin, the same parser), compiled: 10,000 booths
            # parse in 30 ms instead of 100
            data = tomli.load(handle)
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read: {exc.strerror or exc}"]) from exc
    except tomli.TOMLDecodeError as exc:
        raise ConfigError([f"{name}: invalid TOML: {exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{name}: not UTF-8 text: {exc}"]) from exc
    except RecursionError:
        raise ConfigError([f"{name}: invalid TOML: nested too deeply"]) from None
    except ValueError as exc:  # e.g. an integer past Python's digit limit
        raise ConfigError([f"{name}: invalid TOML: {exc}"]) from exc
    return parse_config(data, os.environ if env is None else env, source=name, host=host)


def parse_config(
    data: Mapping[str, object], env: Mapping[str, str], source: str = "<memory>",
    host: Host | None = None,
) -> Config:
    """Check a parsed TOML document; raise ConfigError listing every problem found."""
    checked: SiteFile | None = None
    problems: list[Problem] = []
    try:
        checked = SiteFile.model_validate(dict(data), context={"env": env})
    except ValidationError as exc:
        problems = from_validation(exc, data)
    good = _Good(data, problems)
    problems += _across_tables(good, env)
    if host is not None:
        files = {("mqtt", key): good.get("mqtt", key)
                 for key in ("ca_file", "cert_file", "key_file")}
        catalogs = good.get("site", "catalogs")
        if catalogs is not None:  # the language's catalog there, if the site has one
            mine = i18n.catalog_file(Path(catalogs), good.get("site", "language") or i18n.SOURCE)
            files["site", "catalogs"] = str(mine) if mine.is_file() else None
        problems += host.problems(good.get("store", "path"),
                                  {key: path for key, path in files.items() if path},
                                  url=good.get("store", "url"), env=env)
    if problems or checked is None:
        raise ConfigError(ordered(problems, data))
    return _config(checked, env, source)


class _Good:
    """The file's values, where the schema found no problem."""

    def __init__(self, data: Mapping[str, object], problems: list[Problem]) -> None:
        self.data = data
        # sets, as these are asked of every booth's values (10,000 booths: ~100,000 times)
        self._bad = {p.loc for p in problems}
        self._at_or_under = {p.loc[:n] for p in problems for n in range(len(p.loc) + 1)}

    def get(self, *loc: str | int) -> Any:
        """The value at `loc`; None if absent or if a problem is at, above or under it."""
        if loc in self._at_or_under:
            return None
        return self.whole(*loc)

    def whole(self, *loc: str | int) -> Any:
        """The value at `loc`; None if absent or if a problem is at or above it (problems
        inside it, as with one bad item of a list, are fine)."""
        if self._bad and any(loc[:n] in self._bad for n in range(len(loc) + 1)):
            return None
        node: Any = self.data
        for part in loc:
            node = child(node, part)
        return node

    def tables(self, *loc: str | int) -> Iterator[tuple[int, dict[str, Any]]]:
        """The index and table of each item of the list at `loc` that is a table with no
        problem at or above it."""
        value = self.whole(*loc)
        if not isinstance(value, list):
            return
        # the list is walked once (10,000 booths: walking from the top for each was 40 ms);
        # above each item, only the item itself is left to ask about
        bad = self._bad
        for i, table in enumerate(value):
            if isinstance(table, dict) and not (bad and (*loc, i) in bad):
                yield i, table

    def column(self, *loc: str | int, key: str) -> list[Any] | None:
        """`get(*loc, i, key)` for each index i of the list at `loc`; None if the list
        itself has a problem."""
        value = self.whole(*loc)
        if not isinstance(value, list):
            return None
        if self._bad:
            return [self.get(*loc, i, key) for i in range(len(value))]
        return [item.get(key) if type(item) is dict else child(item, key) for item in value]

    def items(self, *loc: str | int) -> range | None:
        """The indexes of the list at `loc`; None if the list itself has a problem."""
        value = self.whole(*loc)
        return range(len(value)) if isinstance(value, list) else None


def _across_tables(good: _Good, env: Mapping[str, str]) -> list[Problem]:
    problems: list[Problem] = []
    booths = _ids(good, "booths", "booth", problems)
    _ids(good, "devices", "device", problems)
    roles = _devices(good, booths, problems)
    if roles is not None:
        _door_booths(good, *roles, problems)
    _high_risk(good, problems)
    responders = _ids(good, "responders", "responder", problems)
    duties = _responders(good, env, problems)
    if duties is not None and good.get("site", "hours") and TECHNICIAN_ROLE not in duties:
        problems.append(Problem(("site", "hours"), "outside these hours long sessions and "
                                "device trouble page role:technician, but no responder has "
                                f'the role "{TECHNICIAN_ROLE}"'))
    notifies: list[Loc] = [("escalation", priority, "steps", s, "notify")
                           for priority in PRIORITIES
                           for s in good.items("escalation", priority, "steps") or ()]
    for priority in PRIORITIES:
        _in_time(good, ("escalation", priority, "steps"), problems)
    self_test = good.whole("self_test")
    if isinstance(self_test, dict) and "notify" in self_test:
        notifies.append(("self_test", "notify"))  # the default's roles need no responder
    for notify in notifies:
        for k in good.items(*notify) or ():
            target = good.get(*notify, k)
            if target is None:
                continue
            if target.startswith("role:"):
                role = target.removeprefix("role:")
                if duties is not None and role not in duties:
                    problems.append(Problem((*notify, k), f"unknown role {describe(role)} "
                                                          "(no responder has it)"))
            elif responders is not None and target not in responders:
                problems.append(Problem((*notify, k), f"unknown responder {describe(target)} "
                                        "(expected a responder id or role:<role>)"))
    return problems


def _in_time(good: _Good, steps: Loc, problems: list[Problem]) -> None:
    """Each step at or after the one before it that has a usable ``after``."""
    before: float | None = None
    for s in good.items(*steps) or ():
        after = good.get(*steps, s, "after")
        if after is None:
            continue
        seconds = parse_duration(after)
        if before is not None and seconds < before:
            problems.append(Problem((*steps, s, "after"), f"{format_duration(seconds)} is earlier "
                                    f"than the step before it ({format_duration(before)}); steps "
                                    "must not go back in time"))
        before = seconds


def _high_risk(good: _Good, problems: list[Problem]) -> None:
    """A high-risk threshold written in a table is no longer than the standard one that
    table's booths get: marking a session high risk must never watch it less closely."""
    standard = Defaults()
    defaults = good.whole("defaults")
    tables: list[tuple[Loc, Loc | None, dict[str, Any]]] = \
        [(("defaults",), None, defaults)] if isinstance(defaults, dict) else []
    tables += [(("booths", i), ("defaults",), table) for i, table in good.tables("booths")
               if "high_risk" in table]  # the others have no high-risk threshold to check
    for at, fallback, table in tables:
        for key in ("stillness", "long_session"):
            high = good.get(*at, "high_risk", key)
            where = at if key in table else fallback  # whose standard threshold it is
            written = good.whole(*where) if where is not None else None
            usual = good.get(*where, key) if where is not None else None
            if high is None or (isinstance(written, dict) and key in written and usual is None):
                continue  # not written, or the standard one has a problem of its own
            limit = getattr(standard, key) if usual is None else parse_duration(usual)
            if parse_duration(high) > limit:
                problems.append(Problem((*at, "high_risk", key), f"must not be longer than "
                                        f"{key} ({format_duration(limit)}): a high-risk session "
                                        "is watched more closely, never less"))


def _ids(good: _Good, table: str, noun: str, problems: list[Problem]) -> set[str] | None:
    """The ids in a list of tables, each used once; None unless every id is usable."""
    first: dict[str, int] = {}
    ids = good.column(table, key="id")
    usable = ids is not None
    for i, item_id in enumerate(ids or ()):
        if item_id is None:
            usable = False
        elif item_id in first:
            problems.append(Problem((table, i, "id"), f"duplicate {noun} id {describe(item_id)} "
                                                      f"(also {table}[{first[item_id]}])"))
        else:
            first[item_id] = i
    return set(first) if usable else None


def _devices(
    good: _Good, booths: set[str] | None, problems: list[Problem]
) -> tuple[set[tuple[str, str]], set[str]] | None:
    """Each device's booth and topic. Returns the (booth, role) pairs, and the booths with a
    device whose role has a problem (it may be the door or sensor that booth needs)."""
    rows = good.items("devices") if "devices" in good.data else range(0)
    if rows is None:
        return None
    site = good.get("site", "id") or ""
    roles: set[tuple[str, str]] = set()
    doubtful: set[str] = set()
    topics: dict[tuple[str, str], int] = {}
    for i in rows:
        source, booth, role, topic = (good.get("devices", i, key)
                                      for key in ("source", "booth", "role", "topic"))
        if booth is not None and booths is not None and booth not in booths:
            known = ", ".join(sorted(booths)) or "none defined"
            problems.append(Problem(("devices", i, "booth"),
                                    f"unknown booth {describe(booth)} (known: {known})"))
            booth = None
        if topic is not None:
            problem = adapters.topic_problem(source, topic, site, booth or "")
            if problem is not None:
                problems.append(Problem(("devices", i, "topic"), problem))
            elif source not in (None, "canonical"):  # a booth's canonical devices share a topic
                first = topics.setdefault((source, topic), i)
                if first != i:
                    problems.append(Problem(("devices", i, "topic"),
                                            f"same topic as devices[{first}]"))
        if booth is not None and role is not None:
            roles.add((booth, role))
        elif booth is not None:
            doubtful.add(booth)
    return roles, doubtful


def _door_booths(
    good: _Good, roles: set[tuple[str, str]], doubtful: set[str], problems: list[Problem]
) -> None:
    """A booth whose occupancy comes from its door needs a door and a presence sensor."""
    default = good.get("defaults", "occupancy_from") or Defaults().occupancy_from
    for i, table in good.tables("booths"):
        if default != "door" and "occupancy_from" not in table:
            continue  # from its sensor
        booth = good.get("booths", i, "id")
        if (good.get("booths", i, "occupancy_from") or default) != "door" or booth is None:
            continue
        if booth in doubtful:
            continue  # a device with a bad role may be the one it needs; that is reported
        if (booth, "door") not in roles or not {(booth, "motion"), (booth, "occupancy")} & roles:
            problems.append(Problem(
                ("booths", i, "occupancy_from"),
                f'"door" needs a door device and a motion or occupancy device for booth '
                f"{describe(booth)}", after="devices"))


def _responders(good: _Good, env: Mapping[str, str], problems: list[Problem]) -> set[str] | None:
    """Each responder's channels and addresses. Returns every role, None unless every
    responder's roles are usable."""
    channels = good.whole("channels")
    names = set(channels) if isinstance(channels, Mapping) else None
    needs_address = {}  # channel -> its type, for channels that reach a responder by address
    reach_nobody = set()  # consoles nobody watches
    for name in names or ():
        if good.get("channels", name) is not None:
            checked = CHANNEL.validate_python(channels[name], context={"env": env})
            config = checked.config(name, env)
            if config.needs_address:
                needs_address[name] = config.type
            if not config.reaches_a_person:
                reach_nobody.add(name)
    roles: set[str] | None = set()
    for i in good.items("responders") or ():
        at = ("responders", i)
        found = good.get(*at, "roles")
        roles = roles | set(found) if roles is not None and found is not None else None
        table = good.whole(*at)
        if not isinstance(table, dict):
            continue  # reported as not a table
        mine = []
        for j in good.items(*at, "channels") or ():
            channel = good.get(*at, "channels", j)
            if channel is not None and names is not None and channel not in names:
                known = ", ".join(sorted(names)) or "none defined"
                problems.append(Problem((*at, "channels", j), f"unknown channel "
                                        f"{describe(channel)} (known: {known})"))
            elif channel is not None:
                mine.append(channel)
        listed = good.items(*at, "channels")
        # A console as a fallback (the interface's example) is only marked, in the summary:
        # with no other channel every page to this responder fails.
        if mine and listed is not None and len(mine) == len(listed) and set(mine) <= reach_nobody:
            problems.append(Problem((*at, "channels"), "no channel that reaches a person: a "
                                    "console prints on the service's output, which nobody "
                                    "watches; add a webhook, ntfy, pushover, apprise or mqtt "
                                    "channel"))
        address = good.get(*at, "address") if "address" in table else {}
        for channel in dict.fromkeys(mine) if address is not None else ():
            if channel in needs_address and channel not in address:
                problems.append(Problem((*at, "address", channel), f"missing: a "
                                        f"{needs_address[channel]} channel needs the "
                                        "responder's address"))
    return roles if good.items("responders") is not None else None


_BOOTH_KEYS = tuple(k for k in BoothTable.model_fields if k != "high_risk")
_HIGH_RISK_KEYS = tuple(BoothHighRisk.model_fields)


def _config(checked: SiteFile, env: Mapping[str, str], source: str) -> Config:
    """The core's `Config` from a file that passed every check."""
    f, d = checked, checked.defaults
    mqtt, http = f.mqtt, f.http

    def policy(p: PolicyTable) -> Policy:
        steps = tuple(Step(after=s.after, notify=tuple(s.notify)) for s in p.steps)
        return Policy(steps, repeat=p.repeat, ack_timeout=p.ack_timeout,
                      max_repeats=p.max_repeats, skip_busy=p.skip_busy)

    # what every booth starts from, made once (10,000 booths: a dump each was 50 ms)
    standard = d.model_dump(exclude={"battery_low", "high_risk"})
    high_risk = d.high_risk.model_dump()
    standard_high = Thresholds(**high_risk)

    def booth(b: BoothTable) -> BoothConfig:
        """A booth's own thresholds over [defaults], its high_risk ones over its own."""
        own = {k: v for k in _BOOTH_KEYS if (v := getattr(b, k)) is not None}
        mine = {k: v for k in _HIGH_RISK_KEYS if (v := getattr(b.high_risk, k)) is not None}
        return BoothConfig(**standard | own,
                           high_risk=Thresholds(**high_risk | mine) if mine else standard_high)

    hours = f.site.hours
    return Config(
        site=SiteConfig(**f.site.model_dump(exclude={"hours"}),
                        hours=None if hours is None else tuple(hours)),
        # the table's keys are MqttConfig's fields, the broker URL aside
        mqtt=MqttConfig(*mqtt.url, **mqtt.model_dump(exclude={"url"}),
                        password=env.get(PASSWORD_ENV) or None),
        store=StoreConfig(**f.store.model_dump(),
                          password=(env.get(DB_PASSWORD_ENV) or None) if f.store.url else None),
        http=HttpConfig(*http.listen, public_url=http.public_url, ack_link_ttl=http.ack_link_ttl),
        booths=tuple(booth(b) for b in f.booths),
        channels={name: c.config(name, env) for name, c in f.channels.items()},
        responders=tuple(
            ResponderConfig(id=r.id, name=r.name, roles=tuple(dict.fromkeys(r.roles)),
                            channels=tuple(dict.fromkeys(r.channels)), address=r.address,
                            shifts=tuple(r.shifts))
            for r in f.responders
        ),
        escalation={p: policy(getattr(f.escalation, p)) for p in PRIORITIES},
        source=source,
        devices=tuple(DeviceConfig(**{"battery_low": d.battery_low}
                                   | dev.model_dump(exclude_none=True)) for dev in f.devices),
        rate_limit=RateLimitConfig(**f.rate_limit.model_dump()),
        self_test=None if f.self_test is None else SelfTestConfig(
            *parse_schedule(f.self_test.schedule), schedule=f.self_test.schedule,
            answer_within=f.self_test.answer_within, notify=tuple(f.self_test.notify)),
        board=BoardConfig(None if f.board.expected_hours is None
                          else tuple(f.board.expected_hours)),
    )
