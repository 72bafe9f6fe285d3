"""Tests for configuration loading and checking (interface section 3)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.cli import main
from monitor.config import ConfigError, load_config, parse_config
from monitor.core.durations import DURATION_PATTERN, format_duration, parse_duration
from monitor.core.settings import Config, DeviceConfig
from monitor.summary import summary

# Verbatim from /work/shared/interface.md section 3.
INTERFACE_TOML = """\
[site]
id = "lisbon-1"                       # [a-z0-9_-]+, used in topics
name = "Sala Mouraria"
timezone = "Europe/Lisbon"

[mqtt]
url = "mqtt://127.0.0.1:1883"         # mqtts://host:8883 for TLS
client_id = "boothwatch-lisbon-1"     # fixed, so the broker keeps our session while we are down
# username = "boothwatch"             # password from BOOTHWATCH_MQTT_PASSWORD
# ca_file = "ca.crt"  cert_file = "client.crt"  key_file = "client.key"

[store]
path = "boothwatch.db"

[http]
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"  # base of the ack links that pages carry

[defaults]                            # per booth, each can be overridden in [[booths]]
long_session = "20m"
stillness = "3m"
device_timeout = "15m"

[[booths]]
id = "b1"
name = "Booth 1"

[[booths]]
id = "b2"
name = "Booth 2"
long_session = "30m"

[channels.pager]
type = "webhook"                      # webhook | mqtt | console (more come later)
url = "http://127.0.0.1:9000/page"

[channels.screen]
type = "console"

[[responders]]
id = "ana"
name = "Ana"
roles = ["nurse"]
channels = ["pager"]

[[responders]]
id = "rui"
name = "Rui"
roles = ["coordinator"]
channels = ["pager", "screen"]

[escalation.high]
steps = [
  { after = "0s",  notify = ["role:nurse"] },
  { after = "30s", notify = ["role:nurse", "role:coordinator"] },
]
repeat = "60s"          # resend the last step this often until acknowledged
ack_timeout = "2m"      # acknowledged but nobody at the booth by then: re-open and escalate

[escalation.medium]
steps = [ { after = "0s", notify = ["role:nurse"] } ]
repeat = "5m"
ack_timeout = "5m"

[escalation.low]
steps = [ { after = "0s", notify = ["role:coordinator"] } ]
"""


def _data(text: str = INTERFACE_TOML) -> dict[str, object]:
    return tomllib.loads(text)


def _problems(data: dict[str, object], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env or {})
    return info.value.problems


def test_interface_example_parses() -> None:
    """The exact file from the interface contract loads with defaults and overrides applied."""
    config = parse_config(_data(), {}, source="interface.toml")
    assert isinstance(config, Config)
    assert config.source == "interface.toml"
    assert config.site.id == "lisbon-1"
    assert config.site.name == "Sala Mouraria"
    assert config.site.timezone == "Europe/Lisbon"
    b1, b2 = config.booth("b1"), config.booth("b2")
    assert b1 is not None and b2 is not None
    assert [b.id for b in config.booths] == ["b1", "b2"]
    assert isinstance(config.booths, tuple)
    assert b1.long_session == 1200.0
    assert b2.long_session == 1800.0
    assert b1.stillness == 180.0 and b2.stillness == 180.0
    assert b1.device_timeout == 900.0
    high = config.escalation["high"]
    assert [(s.after, s.notify) for s in high.steps] == [
        (0.0, ("role:nurse",)),
        (30.0, ("role:nurse", "role:coordinator")),
    ]
    assert high.repeat == 60.0
    assert high.ack_timeout == 120.0
    medium = config.escalation["medium"]
    assert (medium.repeat, medium.ack_timeout) == (300.0, 300.0)
    low = config.escalation["low"]
    assert low.repeat is None and low.ack_timeout is None
    assert low.steps[0].notify == ("role:coordinator",)
    assert {name: ch.type for name, ch in config.channels.items()} == {
        "pager": "webhook",
        "screen": "console",
    }
    assert config.channels["pager"].url == "http://127.0.0.1:9000/page"
    assert config.channels["pager"].timeout == 5.0
    assert config.mqtt.host == "127.0.0.1"
    assert config.mqtt.port == 1883
    assert config.mqtt.tls is False
    assert config.mqtt.client_id == "boothwatch-lisbon-1"
    assert config.mqtt.protocol == "5"
    assert config.mqtt.keepalive == 30
    assert config.mqtt.session_expiry == 7 * 24 * 3600.0
    assert config.mqtt.password is None
    assert (config.http.host, config.http.port) == ("127.0.0.1", 8080)
    assert config.http.public_url == "http://127.0.0.1:8080"
    assert config.http.ack_link_ttl == 12 * 3600.0
    assert config.store.path == "boothwatch.db"
    assert [(r.id, r.roles, r.channels) for r in config.responders] == [
        ("ana", ("nurse",), ("pager",)),
        ("rui", ("coordinator",), ("pager", "screen")),
    ]


def test_load_config_reads_file(tmp_path: Path) -> None:
    """load_config reads a TOML file and records its path as the source."""
    path = tmp_path / "boothwatch.toml"
    path.write_text(INTERFACE_TOML, encoding="utf-8")
    config = load_config(path, env={})
    assert config.source == str(path)
    assert config.booths[1].long_session == 1800.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (0, 0.0),
        (45, 45.0),
        (2.5, 2.5),
        ("45", 45.0),
        ("0s", 0.0),
        ("90s", 90.0),
        ("20m", 1200.0),
        ("2h", 7200.0),
        ("1h30m", 5400.0),
        ("1h30m15s", 5415.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
    ],
)
def test_parse_duration_good(text: object, seconds: float) -> None:
    """Numbers of seconds and h/m/s strings give the right number of seconds."""
    result = parse_duration(text)
    assert result == seconds
    assert isinstance(result, float)


@pytest.mark.parametrize(
    "value",
    [
        "20 minutes",
        "",
        "h",
        "1h30",
        "30m1h",
        " 45",
        "45 ",
        "1d",
        "-5s",
        "-5",
        -1,
        -0.5,
        True,
        False,
        None,
        [30],
        {"s": 30},
        float("nan"),
        float("inf"),
        10**400,
        "9" * 400 + "h",
    ],
)
def test_parse_duration_bad(value: object) -> None:
    """Anything but a non-negative number or an h/m/s string raises ValueError."""
    with pytest.raises(ValueError):
        parse_duration(value)


def test_parse_duration_messages() -> None:
    """The error names the expected forms and echoes the value; negatives say so."""
    with pytest.raises(ValueError) as info:
        parse_duration("20 minutes")
    assert str(info.value) == (
        'expected seconds or a duration like "90s", "20m", "1h30m", got "20 minutes"'
    )
    with pytest.raises(ValueError, match="negative"):
        parse_duration(-3)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (30, "30s"), (60, "60s"), (90, "90s"), (120, "2m"), (180, "3m"),
     (1200, "20m"), (3600, "1h"), (5400, "1h30m"), (5415, "1h30m15s"), (1.5, "1.5s")],
)  # fmt: skip
def test_format_duration(seconds: float, text: str) -> None:
    """Durations print in a short human form."""
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**7))
def test_format_duration_round_trips(seconds: int) -> None:
    """What format_duration prints, parse_duration reads back to the same value."""
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.one_of(st.text(), st.from_regex(r"-?[0-9hms.]{0,12}", fullmatch=True)))
def test_parse_duration_total(text: str) -> None:
    """On any text parse_duration returns a non-negative float or raises ValueError."""
    try:
        result = parse_duration(text)
    except ValueError as exc:
        assert str(exc)
    else:
        assert isinstance(result, float)
        assert result >= 0


MANY_MISTAKES = INTERFACE_TOML.replace(
    'name = "Sala Mouraria"\n', ""
).replace(
    'long_session = "30m"', 'long_session = "30 minutes"\nstillnes = "1m"'
).replace(
    '[[responders]]\nid = "ana"',
    '[[booths]]\nid = "b1"\nname = "Again"\n\n[[responders]]\nid = "ana"',
).replace(
    'notify = ["role:coordinator"] }', 'notify = ["role:coordinatr"] }'
).replace(
    'channels = ["pager", "screen"]', 'channels = ["pager", "scren"]'
)  # fmt: skip


def test_many_mistakes_reported_together() -> None:
    """Every mistake in a file is reported at once, each with its key path."""
    problems = _problems(_data(MANY_MISTAKES))
    expected = [
        "site.name: missing",
        "booths[1].long_session: expected seconds or a duration like",
        "booths[1].stillnes: unknown key",
        "booths[2].id: duplicate booth id \"b1\"",
        "responders[1].channels[1]: unknown channel \"scren\"",
        "escalation.low.steps[0].notify[0]: unknown role \"coordinatr\" (no responder has it)",
    ]
    for prefix in expected:
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)
    assert len(problems) == len(expected), problems


def test_config_error_str_lists_every_problem() -> None:
    """str(ConfigError) has one problem per line."""
    problems = _problems(_data(MANY_MISTAKES))
    with pytest.raises(ConfigError) as info:
        parse_config(_data(MANY_MISTAKES), {})
    assert str(info.value).splitlines() == problems


def test_missing_tables_and_wrong_types() -> None:
    """Missing tables and wrong types are problems naming the key, not Python exceptions."""
    data = _data()
    del data["site"]
    data["http"] = "127.0.0.1:8080"
    booths = data["booths"]
    assert isinstance(booths, list)
    booths[1]["name"] = 7
    data["responders"] = [{"id": "ana", "name": "Ana", "roles": "nurse", "channels": []}]
    problems = _problems(data)
    for prefix in (
        "site: missing",
        "http: expected a table",
        "booths[1].name: expected a string",
        "responders[0].roles: expected a list of strings",
        "responders[0].channels: must not be empty",
    ):
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)


def test_empty_document_lists_every_required_table() -> None:
    """An empty file names each missing required table and nothing else."""
    problems = _problems({})
    assert [p.split(":")[0] for p in problems] == [
        "site", "mqtt", "store", "http", "booths", "channels", "responders", "escalation",
    ]  # fmt: skip


def test_unknown_keys_everywhere() -> None:
    """Typos at the top level, in tables, channels and steps are each reported."""
    text = (
        INTERFACE_TOML.replace("[store]", "[store]\nsize = 1")
        .replace('type = "console"', 'type = "console"\nurl = "http://x"')
        .replace('{ after = "0s", notify = ["role:nurse"] } ]',
                 '{ after = "0s", notify = ["role:nurse"], when = 1 } ]')
        + '\n[extra]\nx = 1\n\n[escalation.urgent]\nsteps = []\n'
    )  # fmt: skip
    problems = _problems(_data(text))
    assert sorted(p.split(":")[0] for p in problems) == sorted([
        "store.size",
        "channels.screen.url",
        "escalation.medium.steps[0].when",
        "extra",
        "escalation.urgent",
    ])  # fmt: skip


def test_booth_typo_suggests_key() -> None:
    """An unknown booth key is reported with the close known key."""
    data = _data()
    booths = data["booths"]
    assert isinstance(booths, list)
    booths[0]["long_sesion"] = "5m"
    assert _problems(data) == [
        'booths[0].long_sesion: unknown key (did you mean "long_session"?)'
    ]


def test_escalation_rules() -> None:
    """Steps must not go back in time, repeat must be positive, targets must exist."""
    data = _data()
    escalation = data["escalation"]
    assert isinstance(escalation, dict)
    escalation["high"] = {
        "steps": [
            {"after": "30s", "notify": ["ana"]},
            {"after": "10s", "notify": ["bob", "role:nurse"]},
        ],
        "repeat": "0s",
        "ack_timeout": "soon",
    }
    del escalation["low"]
    escalation["medium"]["steps"] = []
    problems = _problems(data)
    assert [p.split(": ")[0] for p in problems] == [
        "escalation.high.steps[1].after",
        "escalation.high.steps[1].notify[0]",
        "escalation.high.repeat",
        "escalation.high.ack_timeout",
        "escalation.medium.steps",
        "escalation.low",
    ]
    assert 'unknown responder "bob"' in problems[1]
    assert problems[2].endswith("must be greater than 0")


def test_defaults_table_optional_and_positive() -> None:
    """Without [defaults] the built-in thresholds apply; zero thresholds are rejected."""
    data = _data()
    del data["defaults"]
    config = parse_config(data, {})
    assert config.booths[0].long_session == 1200.0
    assert config.booths[0].stillness == 180.0
    assert config.booths[0].device_timeout == 900.0
    data["defaults"] = {"stillness": 0}
    booths = data["booths"]
    assert isinstance(booths, list)
    booths[0]["device_timeout"] = "0s"
    assert _problems(data) == [
        "defaults.stillness: must be greater than 0",
        "booths[0].device_timeout: must be greater than 0",
    ]


def test_password_in_file_rejected() -> None:
    """A password in the file is a problem that points at the environment variable."""
    data = _data()
    mqtt = data["mqtt"]
    assert isinstance(mqtt, dict)
    mqtt["password"] = "hunter2"
    problems = _problems(data)
    assert len(problems) == 1
    assert problems[0].startswith("mqtt.password: ")
    assert "BOOTHWATCH_MQTT_PASSWORD" in problems[0]
    assert "hunter2" not in problems[0]


def test_password_from_env() -> None:
    """BOOTHWATCH_MQTT_PASSWORD from the environment lands in mqtt.password."""
    data = _data()
    mqtt = data["mqtt"]
    assert isinstance(mqtt, dict)
    mqtt["username"] = "boothwatch"
    config = parse_config(data, {"BOOTHWATCH_MQTT_PASSWORD": "s3cret-pw"})
    assert config.mqtt.password == "s3cret-pw"


def _store(**table: str) -> dict[str, object]:
    data = _data()
    data["store"] = table
    return data


def test_store_url_selects_postgresql_with_the_password_from_the_environment() -> None:
    """[store] url instead of path: the password comes from BOOTHWATCH_DB_PASSWORD (or
    libpq's own files: none then), and the summary never shows it."""
    url = "postgresql://boothwatch@db.example:5432/boothwatch?sslmode=verify-full"
    config = parse_config(_store(url=url), {"BOOTHWATCH_DB_PASSWORD": "s3cret-db"})
    assert (config.store.url, config.store.path, config.store.password) == (
        url, None, "s3cret-db")
    assert config.store.where == url and "s3cret-db" not in repr(config.store)
    shown = summary(config)
    assert f"store: {url} (PostgreSQL, password from BOOTHWATCH_DB_PASSWORD)" in shown
    assert "s3cret-db" not in shown
    assert parse_config(_store(url=url), {}).store.password is None
    # a password in the environment is for the URL only
    assert parse_config(_data(), {"BOOTHWATCH_DB_PASSWORD": "x"}).store.password is None


def test_store_needs_one_of_path_and_url() -> None:
    """Neither or both: one problem naming both keys."""
    assert _problems(_store()) == [
        "store.path: missing, and no store.url either: give path for a SQLite file (one "
        "box) or url for PostgreSQL"]
    assert _problems(_store(path="bw.db", url="postgresql://bw@db/bw")) == [
        "store.url: given with store.path: give one, path for SQLite or url for PostgreSQL"]


def test_store_url_problems_are_named() -> None:
    """Not a PostgreSQL URL, a password in it or beside it, an option libpq does not know:
    each a problem at its key, never showing the password."""
    for url, why in (
        ("mysql://bw@db/bw", 'expected "postgresql://user@host:port/database", got '
                             '"mysql://bw@db/bw"'),
        ("postgresql://bw:hunter2@db/bw", "do not put the password in the URL; set the "
                                          "environment variable BOOTHWATCH_DB_PASSWORD"),
        ("postgresql://bw@db/bw?colour=blue", 'libpq cannot read it: '),
    ):
        problems = _problems(_store(url=url))
        assert len(problems) == 1 and problems[0].startswith(f"store.url: {why}"), problems
        assert "hunter2" not in problems[0]
    problems = _problems(_store(url="postgresql://bw@db/bw", password="hunter2"))
    assert len(problems) == 1 and problems[0].startswith("store.password: do not put")
    assert "BOOTHWATCH_DB_PASSWORD" in problems[0] and "hunter2" not in problems[0]


def test_a_user_name_without_its_password_names_the_variable() -> None:
    """A user name with no BOOTHWATCH_MQTT_PASSWORD is a problem naming the variable: the
    broker would refuse every attempt, and nobody would be watched."""
    data = _data()
    mqtt = data["mqtt"]
    assert isinstance(mqtt, dict)
    mqtt["username"] = "boothwatch"
    for env in ({}, {"BOOTHWATCH_MQTT_PASSWORD": "  "}):
        assert _problems(data, env) == [
            'mqtt.username: "boothwatch" needs a password: environment variable '
            "BOOTHWATCH_MQTT_PASSWORD is not set"]


def test_mqtts_defaults() -> None:
    """mqtts:// means TLS on port 8883 unless a port is given."""
    data = _data()
    mqtt = data["mqtt"]
    assert isinstance(mqtt, dict)
    mqtt["url"] = "mqtts://broker.example.org"
    config = parse_config(data, {})
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls) == (
        "broker.example.org", 8883, True,
    )  # fmt: skip
    mqtt["url"] = "mqtts://broker.example.org:9999"
    assert parse_config(data, {}).mqtt.port == 9999
    mqtt["url"] = "mqtt://broker.example.org"
    config = parse_config(data, {})
    assert (config.mqtt.port, config.mqtt.tls) == (1883, False)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:1883", "mqtt.url: scheme must be mqtt or mqtts"),
        ("mqtt://", "mqtt.url: missing host"),
        ("mqtt://u:p@host", "mqtt.url: must not carry credentials"),
        ("mqtt://host:0", "mqtt.url: port must be between 1 and 65535"),
    ],
)
def test_bad_mqtt_url(url: str, message: str) -> None:
    """A bad broker URL is a problem at mqtt.url."""
    data = _data()
    mqtt = data["mqtt"]
    assert isinstance(mqtt, dict)
    mqtt["url"] = url
    problems = _problems(data)
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_client_id_required() -> None:
    """An empty or missing client id is a problem explaining why it must be fixed."""
    data = _data()
    mqtt = data["mqtt"]
    assert isinstance(mqtt, dict)
    mqtt["client_id"] = ""
    (problem,) = _problems(data)
    assert problem.startswith("mqtt.client_id: ") and "session" in problem
    del mqtt["client_id"]
    (problem,) = _problems(data)
    assert problem.startswith("mqtt.client_id: missing") and "session" in problem


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [("127.0.0.1:8080", "127.0.0.1", 8080), ("[::1]:8081", "::1", 8081),
     ("0.0.0.0:65535", "0.0.0.0", 65535)],
)  # fmt: skip
def test_http_listen_good(listen: str, host: str, port: int) -> None:
    """host:port, including a bracketed IPv6 host, is split into host and port."""
    data = _data()
    http = data["http"]
    assert isinstance(http, dict)
    http["listen"] = listen
    http["public_url"] = "https://watch.example.org/bw/"
    config = parse_config(data, {})
    assert (config.http.host, config.http.port) == (host, port)
    assert config.http.public_url == "https://watch.example.org/bw"


@pytest.mark.parametrize("listen", ["8080", "localhost", "host:0", "host:70000", "::1:80", ":80"])
def test_http_listen_bad(listen: str) -> None:
    """A listen address without a valid host and port is a problem at http.listen."""
    data = _data()
    http = data["http"]
    assert isinstance(http, dict)
    http["listen"] = listen
    problems = _problems(data)
    assert len(problems) == 1 and problems[0].startswith("http.listen: "), problems


def test_site_rules() -> None:
    """A bad site id and an unknown time zone are both reported."""
    data = _data()
    site = data["site"]
    assert isinstance(site, dict)
    site["id"] = "Lisbon 1"
    site["timezone"] = "Europe/Lisbn"
    problems = _problems(data)
    assert [p.split(": ")[0] for p in problems] == ["site.id", "site.timezone"]


def test_site_language() -> None:
    """English unless told; a language the package has a catalog for is taken; an unknown
    one is refused naming site.language and the languages there are."""
    assert parse_config(_data(), {}).site.language == "en"
    data = _data()
    site = data["site"]
    assert isinstance(site, dict)
    site["language"] = "pt_PT"
    assert parse_config(data, {}).site.language == "pt_PT"
    site["language"] = "pt-PT"
    assert _problems(data) == ['site.language: unknown language "pt-PT": catalogs exist for '
                               'en, pt_PT (did you mean "pt_PT"?)']


def test_site_catalogs(tmp_path: Path) -> None:
    """site.catalogs must be a directory boothwatch can read; its languages count too."""
    data = _data()
    site = data["site"]
    assert isinstance(site, dict)
    site["catalogs"] = str(tmp_path / "missing")
    site["language"] = "de"
    # one mistake, one problem: which languages exist depends on the directory
    assert _problems(data) == [f'site.catalogs: cannot read the directory '
                               f'"{tmp_path / "missing"}": No such file or directory']
    (tmp_path / "de" / "LC_MESSAGES").mkdir(parents=True)
    (tmp_path / "de" / "LC_MESSAGES" / "boothwatch.po").write_text(
        'msgid "call button pressed"\nmsgstr "Rufknopf gedrückt"\n')
    site["catalogs"] = str(tmp_path)
    config = parse_config(data, {})
    assert (config.site.language, config.site.catalogs) == ("de", str(tmp_path))
    assert f"language de (catalogs in {tmp_path} first)" in summary(config)


def test_channel_rules() -> None:
    """Channel types, webhook URLs and secret_env are checked."""
    data = _data()
    channels = data["channels"]
    assert isinstance(channels, dict)
    channels["pager"] = {"type": "webhook", "url": "ftp://x", "secret_env": "PAGER_KEY"}
    channels["bad name"] = {"type": "console"}
    channels["sms"] = {"type": "sms"}
    channels["bus"] = {"type": "mqtt", "topic": "pages/out"}
    problems = _problems(data)
    assert [p.split(": ")[0] for p in problems] == [
        "channels.pager.url",
        "channels.pager.secret_env",
        'channels."bad name"',
        "channels.sms.type",
    ]


def test_a_responder_needs_a_channel_that_reaches_a_person() -> None:
    """A console nobody watches is only marked as a fallback (the interface's example), but
    a responder with nothing else is refused; ``watched = true`` says a person watches it."""
    data = _data()
    channels, responders = data["channels"], data["responders"]
    assert isinstance(channels, dict) and isinstance(responders, list)
    responders[1]["channels"] = ["screen", "screen"]
    channels["pager"]["watched"] = True
    assert _problems(data) == [
        'channels.pager.watched: unknown key',
        "responders[1].channels: no channel that reaches a person: a console prints on the "
        "service's output, which nobody watches; add a webhook, ntfy, pushover, apprise or "
        "mqtt channel",
    ]
    del channels["pager"]["watched"]
    channels["screen"]["watched"] = "yes"
    assert _problems(data) == ['channels.screen.watched: expected true or false, got "yes"']
    channels["screen"]["watched"] = True
    config = parse_config(data, {})
    assert config.channels["screen"].reaches_a_person
    assert not parse_config(_data(), {}).channels["screen"].reaches_a_person
    text = summary(config)
    assert "rui Rui: roles coordinator; channels screen; always on duty" in text
    assert ("screen: console, watched: what it prints counts as delivered; only for a "
            "terminal a person watches (the demo), never a service whose output is its "
            "journal") in text


def test_channel_secret_from_env() -> None:
    """secret_env takes the webhook secret from the named environment variable."""
    data = _data()
    channels = data["channels"]
    assert isinstance(channels, dict)
    channels["pager"]["secret_env"] = "PAGER_KEY"
    config = parse_config(data, {"PAGER_KEY": "k3y-from-env"})
    assert config.channels["pager"].secret == "k3y-from-env"


def test_bad_toml_names_file(tmp_path: Path) -> None:
    """A TOML syntax error is one problem naming the file and the line."""
    path = tmp_path / "broken.toml"
    path.write_text('[site]\nid = "x\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}: ")
    assert "line 2" in problem


def test_missing_file_names_file(tmp_path: Path) -> None:
    """An unreadable file is one problem naming the file."""
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}: cannot read")


def test_summary_content_without_secrets() -> None:
    """The summary shows booths, responders, channels and policies but no secret."""
    data = _data()
    channels = data["channels"]
    assert isinstance(channels, dict)
    channels["pager"]["secret"] = "webhook-secret-value"
    channels["pager"]["url"] = "https://hooks.example.org/T0/tok3n-in-path"
    mqtt = data["mqtt"]
    assert isinstance(mqtt, dict)
    mqtt["username"] = "boothwatch"
    config = parse_config(data, {"BOOTHWATCH_MQTT_PASSWORD": "mqtt-pass-value"})
    text = summary(config)
    for needle in (
        "lisbon-1",
        "Sala Mouraria",
        "Europe/Lisbon",
        "mqtt://127.0.0.1:1883",
        "boothwatch-lisbon-1",
        "boothwatch.db",
        "127.0.0.1:8080",
        "b1 Booth 1: long session 20m, stillness 3m, device timeout 15m",
        "b2 Booth 2: long session 30m",
        "ana Ana: roles nurse; channels pager",
        "rui Rui: roles coordinator; channels pager → screen (reaches nobody); always on duty",
        "pager: webhook",
        "screen: console (reaches nobody: it prints on the service's output; no fallback, a "
        "page it prints is not delivered)",
        "high: 0s → role:nurse; 30s → role:nurse, role:coordinator; repeat 60s; ack timeout 2m",
        "low: 0s → role:coordinator",
    ):
        assert needle in text, (needle, text)
    for secret in ("webhook-secret-value", "mqtt-pass-value", "tok3n-in-path"):
        assert secret not in text
    assert len(text.splitlines()) <= 40


# --------------------------------------------------------------------------- devices

DEVICES_TOML = """
[[devices]]
id = "b1-button"
source = "zigbee2mqtt"
topic = "zigbee2mqtt/b1-button"
booth = "b1"
role = "call_button"
actions = { hold = "presence", release = "ignore" }

[[devices]]
id = "b1-door"
source = "esphome"
topic = "b1node/binary_sensor/door/state"
booth = "b1"
role = "door"
inverted = true

[[devices]]
id = "b1.motion"
source = "tasmota"
topic = "b1-pir"
booth = "b1"
role = "motion"
battery_low = 35

[[devices]]
id = "b2-presence"
source = "shelly"
topic = "shellies/shelly1-b2"
booth = "b2"
role = "presence_button"

[[devices]]
id = "b2-call"
source = "shelly"
topic = "shellyplusi4-b2"
booth = "b2"
role = "call_button"

[[devices]]
id = "b2-occupancy"
source = "canonical"
topic = "boothwatch/lisbon-1/booths/b2/events"
booth = "b2"
role = "occupancy"
"""

DOOR_BOOTH = 'id = "b1"\nname = "Booth 1"\noccupancy_from = "door"\ndoor_window = "45s"'


def _with_devices(battery_low: int | None = None) -> dict[str, object]:
    text = INTERFACE_TOML.replace('id = "b1"\nname = "Booth 1"', DOOR_BOOTH) + DEVICES_TOML
    if battery_low is not None:
        text = text.replace(
            'device_timeout = "15m"', f'device_timeout = "15m"\nbattery_low = {battery_low}'
        )
    return _data(text)


def test_devices_parse() -> None:
    """One device of every source and role becomes the right DeviceConfig, defaults applied."""
    config = parse_config(_with_devices(), {})
    by_id = {d.id: d for d in config.devices}
    assert list(by_id) == [
        "b1-button", "b1-door", "b1.motion", "b2-presence", "b2-call", "b2-occupancy",
    ]  # fmt: skip
    assert isinstance(config.devices, tuple)
    assert DeviceConfig(
        id="b1-button", source="zigbee2mqtt", topic="zigbee2mqtt/b1-button", booth="b1",
        role="call_button", actions={"hold": "presence", "release": "ignore"},
        battery_low=20, inverted=False,
    ) == by_id["b1-button"]  # fmt: skip
    door = by_id["b1-door"]
    assert (door.source, door.role, door.inverted, door.actions) == ("esphome", "door", True, {})
    motion = by_id["b1.motion"]
    assert (motion.source, motion.topic, motion.role, motion.battery_low) == (
        "tasmota", "b1-pir", "motion", 35,
    )  # fmt: skip
    assert [(by_id[i].source, by_id[i].role, by_id[i].booth) for i in
            ("b2-presence", "b2-call", "b2-occupancy")] == [
        ("shelly", "presence_button", "b2"),
        ("shelly", "call_button", "b2"),
        ("canonical", "occupancy", "b2"),
    ]  # fmt: skip
    assert all(d.battery_low == 20 for i, d in by_id.items() if i != "b1.motion")
    b1, b2 = config.booths
    assert (b1.occupancy_from, b1.door_window) == ("door", 45.0)
    assert (b2.occupancy_from, b2.door_window) == ("sensor", 30.0)


def test_device_defaults_from_defaults_table() -> None:
    """[defaults] sets battery_low for every device and occupancy_from/door_window per booth."""
    data = _with_devices(battery_low=15)
    defaults = data["defaults"]
    assert isinstance(defaults, dict)
    defaults["door_window"] = "1m"
    config = parse_config(data, {})
    assert {d.id: d.battery_low for d in config.devices} == {
        "b1-button": 15, "b1-door": 15, "b1.motion": 35, "b2-presence": 15, "b2-call": 15,
        "b2-occupancy": 15,
    }  # fmt: skip
    assert [b.door_window for b in config.booths] == [45.0, 60.0]
    defaults["occupancy_from"] = "door"  # b2 has no door device
    assert _problems(data) == [
        'booths[1].occupancy_from: "door" needs a door device and a motion or occupancy '
        'device for booth "b2"'
    ]


def test_interface_example_has_no_devices() -> None:
    """Without [[devices]] the config has none and booths take occupancy from sensors."""
    config = parse_config(_data(), {})
    assert config.devices == ()
    assert all((b.occupancy_from, b.door_window) == ("sensor", 30.0) for b in config.booths)


DEVICE_MISTAKES = """
[[devices]]
id = "d0"
source = "zigbee2mqtt"
topic = "zigbee2mqtt/d0"
booth = "b9"
role = "call_button"

[[devices]]
id = "d1"
source = "zigbe2mqtt"
topic = "zigbee2mqtt/d1"
booth = "b2"
role = "call_button"

[[devices]]
id = "d2"
source = "zigbee2mqtt"
topic = "zigbee2mqtt/d2"
booth = "b2"
role = "buton"

[[devices]]
id = "d3"
source = "zigbee2mqtt"
topic = "zigbee2mqtt/d0"
booth = "b2"
role = "motion"

[[devices]]
id = "d4"
source = "tasmota"
topic = "tele/+/SENSOR"
booth = "b2"
role = "motion"

[[devices]]
id = "d5"
source = "esphome"
topic = "b2node/sensor/door/state"
booth = "b2"
role = "door"

[[devices]]
id = "d6"
source = "esphome"
topic = "b2node/binary_sensor/pir/state"
booth = "b2"
role = "motion"
actions = { single = "call" }

[[devices]]
id = "d7"
source = "shelly"
topic = "shellyplus1-b2"
booth = "b2"
role = "presence_button"
actions = { double = "page" }

[[devices]]
id = "b1-radar"
source = "zigbee2mqtt"
topic = "zigbee2mqtt/b1-radar"
booth = "b1"
role = "occupancy"
"""


def test_device_mistakes_reported_together() -> None:
    """Every device mistake is one problem with its key path, all in one ConfigError."""
    text = (
        INTERFACE_TOML.replace('id = "b1"\nname = "Booth 1"', DOOR_BOOTH) + DEVICE_MISTAKES
    )
    problems = _problems(_data(text))
    assert problems == [
        'devices[0].booth: unknown booth "b9" (known: b1, b2)',
        'devices[1].source: expected zigbee2mqtt, esphome, tasmota, shelly or canonical, '
        'got "zigbe2mqtt" (did you mean "zigbee2mqtt"?)',
        "devices[2].role: expected call_button, presence_button, motion, occupancy or door, "
        'got "buton" (did you mean "call_button"?)',
        "devices[3].topic: same topic as devices[0]",
        "devices[4].topic: must not contain the wildcards + or #",
        "devices[5].topic: expected <node>/binary_sensor/<name>/state for esphome, "
        'got "b2node/sensor/door/state"',
        "devices[6].actions: only call_button and presence_button devices take actions, "
        "not motion",
        "devices[7].actions.double: expected call, presence, clear or ignore, got \"page\"",
        'booths[0].occupancy_from: "door" needs a door device and a motion or occupancy '
        'device for booth "b1"',
    ]


@pytest.mark.parametrize(
    ("source", "topic", "message"),
    [
        ("zigbee2mqtt", "b1-button", "expected <base>/<friendly_name>"),
        ("zigbee2mqtt", "/zigbee2mqtt/b1", 'must not start or end with "/"'),
        ("zigbee2mqtt", "zigbee2mqtt/b1/", 'must not start or end with "/"'),
        ("zigbee2mqtt", "zigbee2mqtt//b1", "must not have an empty level"),
        ("zigbee2mqtt", "zigbee2mqtt/#", "must not contain the wildcards"),
        ("zigbee2mqtt", "boothwatch/lisbon-1/x", 'must not be under "boothwatch/"'),
        ("tasmota", "boothwatch", 'must not be under "boothwatch/"'),
        ("tasmota", "tele/b1/SENSOR", "expected <t>"),
        ("shelly", "shellies/a/b", "expected shellies/<id> (Gen1) or <id> (Gen2"),
        ("shelly", "shellyplus/b1", "expected shellies/<id> (Gen1) or <id> (Gen2"),
        ("esphome", "b1/binary_sensor/door", "expected <node>/binary_sensor/<name>/state"),
        ("esphome", "binary_sensor/door/state", "expected <node>/binary_sensor/<name>/state"),
        ("canonical", "boothwatch/lisbon-1/booths/b2/events", "a canonical device publishes"),
    ],
)
def test_device_topic_shapes(source: str, topic: str, message: str) -> None:
    """A topic that does not fit its source is one problem at devices[i].topic."""
    data = _data()
    data["devices"] = [
        {"id": "d", "source": source, "topic": topic, "booth": "b1", "role": "call_button"}
    ]
    (problem,) = _problems(data)
    assert problem.startswith(f"devices[0].topic: {message}"), problem


@pytest.mark.parametrize(
    ("source", "topic"),
    [
        ("zigbee2mqtt", "zigbee2mqtt/room/b1 button"),
        ("esphome", "site/b1node/binary_sensor/call/state"),
        ("shelly", "shellies/shelly1-b1"),
        ("shelly", "shellyplus1-b1"),
        ("tasmota", "b1-button"),
        ("canonical", "boothwatch/lisbon-1/booths/b1/events"),
    ],
)
def test_device_topic_shapes_good(source: str, topic: str) -> None:
    """Each source's own topic forms are accepted."""
    data = _data()
    data["devices"] = [
        {"id": "d", "source": source, "topic": topic, "booth": "b1", "role": "call_button"}
    ]
    assert parse_config(data, {}).devices[0].topic == topic


def test_device_types_and_keys() -> None:
    """Wrong types, bad ids, duplicate ids and unknown keys in [[devices]] are problems."""
    data = _data()
    data["defaults"] = {"battery_low": 100, "occupancy_from": "doors"}
    booths = data["booths"]
    assert isinstance(booths, list)
    booths[1]["door_window"] = "0s"
    base = {"source": "tasmota", "booth": "b1", "role": "call_button"}
    data["devices"] = [
        {"id": "a b", "topic": "t0", **base, "battery_low": "20"},
        {"id": "x", "topic": "t1", **base, "inverted": "yes", "actons": {}},
        {"id": "x", "topic": "t2", **base, "actions": {"hould": "call"}},
        {"id": "y", "topic": "t3", **base, "actions": "call"},
        {"id": "z", "source": "canonical", "topic": "boothwatch/lisbon-1/booths/b1/events",
         "booth": "b1", "role": "door"},
        "not a table",
    ]  # fmt: skip
    problems = _problems(data)
    assert problems == [
        "defaults.occupancy_from: expected sensor or door, got \"doors\" "
        '(did you mean "door"?)',
        "defaults.battery_low: must be between 1 and 99, got 100",
        "booths[1].door_window: must be greater than 0",
        "devices[5]: expected a table, got \"not a table\"",
        'devices[0].id: "a b" must match ^[A-Za-z0-9_.-]+$',
        'devices[0].battery_low: expected a whole percentage from 1 to 99, got "20"',
        'devices[1].actons: unknown key (did you mean "actions"?)',
        'devices[1].inverted: expected true or false, got "yes"',
        'devices[2].id: duplicate device id "x" (also devices[1])',
        "devices[2].actions.hould: unknown press type (expected single, double, triple, "
        'quadruple, hold or release) (did you mean "hold"?)',
        'devices[3].actions: expected a table of press type = action, got "call"',
        "devices[4].role: a canonical device cannot be a door (the canonical event has no door)",
    ]


def test_devices_must_be_array_of_tables() -> None:
    """[devices] as a table is a problem; an empty [[devices]] list is fine."""
    data = _data()
    data["devices"] = {"id": "x"}
    assert _problems(data) == ["devices: expected a list of tables ([[devices]]), got a table"]
    data["devices"] = []
    assert parse_config(data, {}).devices == ()


def test_door_booth_check_not_echoed() -> None:
    """A door booth whose device has a bad role gets no second problem; a bad booth does."""
    text = INTERFACE_TOML.replace('id = "b1"\nname = "Booth 1"', DOOR_BOOTH) + DEVICES_TOML
    data = _data(text)
    devices = data["devices"]
    assert isinstance(devices, list)
    devices[1]["role"] = "dor"
    (problem,) = _problems(data)
    assert problem.startswith("devices[1].role: ")
    devices[1]["role"] = "door"
    devices[2]["booth"] = "b3"
    assert _problems(data) == [
        'devices[2].booth: unknown booth "b3" (known: b1, b2)',
        'booths[0].occupancy_from: "door" needs a door device and a motion or occupancy '
        'device for booth "b1"',
    ]


def test_summary_mentions_devices() -> None:
    """The summary lists each device and the booths taking occupancy from their door."""
    text = summary(parse_config(_with_devices(), {}))
    for needle in (
        "devices (6):",
        "b1-button: zigbee2mqtt zigbee2mqtt/b1-button → booth b1, call_button; "
        "actions hold=presence, release=ignore",
        "b1-door: esphome b1node/binary_sensor/door/state → booth b1, door; inverted",
        "b2-occupancy: canonical boothwatch/lisbon-1/booths/b2/events → booth b2, occupancy",
        "b1 Booth 1: long session 20m, stillness 3m, device timeout 15m, "
        "occupancy from door (window 45s)",
    ):
        assert needle in text, (needle, text)
    assert "occupancy from door" not in text.split("b2 Booth 2")[1].splitlines()[0]
    assert "devices (0):" in summary(parse_config(_data(), {}))


# --------------------------------------------------------------------------- the JSON Schema

TOP_LEVEL = {"site", "mqtt", "store", "http", "defaults", "booths", "devices", "channels",
             "responders", "escalation", "rate_limit", "board", "self_test"}


def _refusals(schema: dict[str, Any], node: dict[str, Any], value: object, at: str) -> list[str]:
    """Where `value` breaks what `node` of `schema` says: a key it does not name, a required
    key that is absent, a value of another JSON type, a string its pattern refuses. A check of
    the printed schema's structure: no JSON Schema validator is installed."""
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    if "discriminator" in node:
        mapping = node["discriminator"]["mapping"]
        tag = value.get(node["discriminator"]["propertyName"]) if isinstance(value, dict) else None
        if tag not in mapping:
            return [f"{at}: no channel type {tag!r}"]
        return _refusals(schema, {"$ref": mapping[tag]}, value, at)
    if "anyOf" in node:
        fits = any(not _refusals(schema, option, value, at) for option in node["anyOf"])
        return [] if fits else [f"{at}: fits none of its forms"]
    kinds = {"object": dict, "array": list, "string": str, "integer": int, "number": int | float,
             "boolean": bool}
    if "type" in node and not isinstance(value, kinds[node["type"]]):
        return [f"{at}: not {node['type']}"]
    problems = []
    if isinstance(value, dict):
        named = {**node.get("properties", {}), **{key: part for pattern, part in
                 node.get("patternProperties", {}).items() for key in value
                 if re.search(pattern, key)}}
        for key, item in value.items():
            if key in named:
                problems += _refusals(schema, named[key], item, f"{at}.{key}")
            elif isinstance(node.get("additionalProperties"), dict):
                problems += _refusals(schema, node["additionalProperties"], item, f"{at}.{key}")
            else:
                problems.append(f"{at}.{key}: not allowed")
        problems += [f"{at}.{key}: required" for key in node.get("required", ())
                     if key not in value]
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problems += _refusals(schema, node.get("items", {}), item, f"{at}[{index}]")
    elif isinstance(value, str) and not re.search(node.get("pattern", ""), value):
        problems.append(f"{at}: does not match")
    elif "enum" in node and value not in node["enum"]:
        problems.append(f"{at}: not one of {node['enum']}")
    return problems


def test_config_schema_names_the_tables_and_takes_the_example(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`boothwatch config-schema` prints a JSON Schema of the file: it names every top-level
    table and accepts the interface's example, and a site with devices and push channels."""
    assert main(["config-schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["properties"]) == TOP_LEVEL
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == TOP_LEVEL - {"defaults", "devices", "rate_limit", "board",
                                                   "self_test"}
    example = json.loads(json.dumps(_data()))  # the TOML as JSON, as an editor checks it
    assert _refusals(schema, schema, example, "") == []
    fuller = tomllib.loads(
        INTERFACE_TOML.replace('type = "console"', 'type = "console"\n\n[channels.po]\n'
                               'type = "pushover"\ntoken_env = "PUSHOVER_TOKEN"\nretry = 45')
        + DEVICES_TOML + '\n[rate_limit]\nrate = 2.5\nburst = 8\n'
        + '\n[board]\nexpected_hours = ["mon-fri 08:00-22:00"]\n')
    assert _refusals(schema, schema, fuller, "") == []


def test_config_schema_refuses_mistakes(capsys: pytest.CaptureFixture[str]) -> None:
    """The printed schema refuses what the loader refuses: an unknown key, a missing table, a
    bad id, a duration in words, a channel of no known type."""
    main(["config-schema"])
    schema = json.loads(capsys.readouterr().out)
    data = _data()
    booths, site, channels = data["booths"], data["site"], data["channels"]
    assert isinstance(booths, list) and isinstance(site, dict) and isinstance(channels, dict)
    booths[0]["long_sesion"] = "5m"
    booths[1]["long_session"] = "30 minutes"
    site["id"] = "Lisbon 1"
    channels["sms"] = {"type": "sms"}
    del data["escalation"]
    assert _refusals(schema, schema, data, "") == [
        ".site.id: does not match",
        ".booths[0].long_sesion: not allowed",
        ".booths[1].long_session: fits none of its forms",
        ".channels.sms: no channel type 'sms'",
        ".escalation: required",
    ]


@given(st.from_regex(r"[0-9hms.]{0,10}", fullmatch=True))
def test_duration_pattern_is_what_parse_duration_reads(text: str) -> None:
    """The JSON Schema's duration pattern accepts exactly the strings parse_duration reads."""
    try:
        parse_duration(text)
    except ValueError:
        assert re.search(DURATION_PATTERN, text) is None
    else:
        assert re.search(DURATION_PATTERN, text) is not None


def test_shift_problems_by_key_path() -> None:
    """A shift that is not a string, or not of the shift grammar, is one problem at its index."""
    data = _data()
    responders = data["responders"]
    assert isinstance(responders, list)
    responders[0]["shifts"] = ["mon-fri 08:00-16:00", 7, "mon 25:00-26:00", " ", "weekdays"]
    assert _problems(data) == [
        "responders[0].shifts[1]: expected a string, got 7",
        'responders[0].shifts[2]: 25:00 is not a time of day (00:00 to 24:00), '
        'got "mon 25:00-26:00"',
        "responders[0].shifts[3]: must not be empty",
        'responders[0].shifts[4]: expected "<days> HH:MM-HH:MM" such as "mon-fri 08:00-16:00" '
        'or "sat,sun 20:00-08:00", got "weekdays"',
    ]
    responders[0]["shifts"] = ["sat,sun 20:00-08:00"]
    (shift,) = parse_config(data, {}).responders[0].shifts
    assert (shift.days, shift.start, shift.end) == (frozenset({5, 6}), 20 * 60, 8 * 60)


def test_self_test_table_refused_by_key_path() -> None:
    """[self_test]: every problem named by its key; a good one becomes the core's config."""
    data = _data()
    data["self_test"] = {"schedule": "every day 9am", "answer_within": "25h",
                         "notify": ["role:janitor", "zoe", "role:coordinator"], "when": 1}
    assert _problems(data) == [
        "self_test.when: unknown key",
        'self_test.schedule: expected "<days> HH:MM" such as "daily 09:00" or "mon-fri 09:30", '
        'got "every day 9am"',
        "self_test.answer_within: must be at most 24h",
        'self_test.notify[0]: unknown role "janitor" (no responder has it)',
        'self_test.notify[1]: unknown responder "zoe" (expected a responder id or role:<role>)',
    ]
    data["self_test"] = {"schedule": "mon-fri 09:30"}
    test = parse_config(data, {}).self_test
    assert test is not None
    assert (test.days, test.at, test.answer_within) == (frozenset(range(5)), 570, 3600)
    assert test.notify == ("role:coordinator", "role:technician")  # no technician: no problem
    assert parse_config(_data(), {}).self_test is None


# --- issue 15: high-risk thresholds, opening hours, skip_busy -------------------------------


def test_high_risk_thresholds_default_merge_and_are_never_longer_than_standard() -> None:
    """[defaults.high_risk] and a booth's high_risk merge key by key; one longer than the
    standard threshold beside it is refused at its key, each mistake once."""
    from monitor.core.settings import Thresholds

    data = _data()
    config = parse_config(data, {})
    assert config.booths[0].high_risk == Thresholds(60.0, 600.0)
    data["defaults"] = {"stillness": "3m", "high_risk": {"stillness": "90s"}}
    booths = data["booths"]
    assert isinstance(booths, list)
    booths[1]["high_risk"] = {"long_session": "15m"}
    config = parse_config(data, {})
    assert [b.high_risk for b in config.booths] == [Thresholds(90.0, 600.0),
                                                   Thresholds(90.0, 900.0)]
    data["defaults"] = {"stillness": "3m", "high_risk": {"stillness": "5m", "long_sesion": 1}}
    booths[0]["stillness"] = "1m"
    booths[0]["high_risk"] = {"stillness": "2m"}
    booths[1]["long_session"] = "nope"  # bad on its own: its high_risk is not compared
    booths[1]["high_risk"] = {"long_session": "25m", "stillness": -1}
    assert _problems(data) == [
        'defaults.high_risk.long_sesion: unknown key (did you mean "long_session"?)',
        "defaults.high_risk.stillness: must not be longer than stillness (3m): a high-risk "
        "session is watched more closely, never less",
        "booths[0].high_risk.stillness: must not be longer than stillness (60s): a high-risk "
        "session is watched more closely, never less",
        'booths[1].long_session: expected seconds or a duration like "90s", "20m", "1h30m", '
        'got "nope"',
        'booths[1].high_risk.stillness: must not be negative, got -1',
    ]
    data["defaults"] = {"stillness": "soon"}  # b2's high_risk is compared with nothing
    booths[0].clear()
    booths[0].update({"id": "b1", "name": "Booth 1"})
    booths[1].update({"long_session": "30m", "high_risk": {"stillness": "2m"}})
    assert _problems(data) == [
        'defaults.stillness: expected seconds or a duration like "90s", "20m", "1h30m", '
        'got "soon"']


def test_opening_hours_parse_and_need_a_technician() -> None:
    """[site] hours take the shift grammar, each bad one named; with hours, someone must
    have the technician role (outside them, device trouble pages it)."""
    data = _data()
    site = data["site"]
    assert isinstance(site, dict)
    site["hours"] = ["mon-fri 08:00-22:00", "sat,sun 10:00-20:00"]
    assert _problems(data) == [
        'site.hours: outside these hours long sessions and device trouble page '
        'role:technician, but no responder has the role "technician"']
    responders = data["responders"]
    assert isinstance(responders, list)
    responders[1]["roles"] = ["coordinator", "technician"]
    config = parse_config(data, {})
    assert config.site.hours is not None
    assert [h.text for h in config.site.hours] == ["mon-fri 08:00-22:00", "sat,sun 10:00-20:00"]
    assert parse_config(_data(), {}).site.hours is None
    site["hours"] = ["mon-fri 8-22", 3]
    assert _problems(data) == [
        'site.hours[0]: expected "<days> HH:MM-HH:MM" such as "mon-fri 08:00-16:00" or '
        '"sat,sun 20:00-08:00", got "mon-fri 8-22"',
        "site.hours[1]: expected a string, got 3"]
    site["hours"] = []
    assert _problems(data) == [
        "site.hours: must not be empty; leave hours out for a site open at every hour"]


def test_skip_busy_is_a_flag_on_a_policy() -> None:
    data = _data()
    escalation = data["escalation"]
    assert isinstance(escalation, dict)
    escalation["high"]["skip_busy"] = True
    config = parse_config(data, {})
    assert (config.escalation["high"].skip_busy, config.escalation["medium"].skip_busy) == (
        True, False)
    escalation["high"]["skip_busy"] = "yes"
    assert _problems(data) == ['escalation.high.skip_busy: expected true or false, got "yes"']
def test_board_expected_hours() -> None:
    """[board] expected_hours: shifts in the roster's grammar, each bad one named; left out,
    always; empty, never."""
    data = _data()
    assert parse_config(data, {}).board.expected_hours is None
    data["board"] = {"expected_hours": ["daily 08:00-22:00", "mon 25:00-26:00", 3],
                     "expectd": True}
    assert _problems(data) == [
        'board.expectd: unknown key (did you mean "expected_hours"?)',
        'board.expected_hours[1]: 25:00 is not a time of day (00:00 to 24:00), '
        'got "mon 25:00-26:00"',
        "board.expected_hours[2]: expected a string, got 3",
    ]
    data["board"] = {"expected_hours": "daily 08:00-22:00"}
    assert _problems(data) == ["board.expected_hours: expected a list of strings, "
                               'got "daily 08:00-22:00"']
    data["board"] = {"expected_hours": ["sat,sun 20:00-08:00"]}
    (shift,) = parse_config(data, {}).board.expected_hours or ()
    assert (shift.days, shift.start, shift.end) == (frozenset({5, 6}), 20 * 60, 8 * 60)
    data["board"] = {"expected_hours": []}
    assert parse_config(data, {}).board.expected_hours == ()
