"""Hostile input for fuzzing: hypothesis strategies and the oracles that judge each case.

Shared by tests/test_fuzz.py (short runs in the suite) and bench/fuzz.py (long
runs that count cases). Each oracle feeds one case to one decoder, asserts what
must hold for any input (a result, never an exception; a rejection reason from
the bounded set; a booth that names only itself), and returns the outcome label
the service would count: ``accepted`` or the rejection reason.

Payloads start from the documented examples (interface section 4,
docs/devices.md) and are mutated at the byte level (flips, inserts, deletes,
bad UTF-8) and at the JSON level (a value swapped for another type, a huge
integer, NaN, deep nesting, a lone surrogate), or are hostile from the start
(100 000 ``[``, over 16 KiB, UTF-16). Configs start from the interface's
example with devices and are mutated the same way before being written as TOML.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import re
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from hypothesis import strategies as st

from devices import adapters
from devices.adapters.canonical import Parsed, parse_event, parse_topic
from devices.adapters.payload import MAX_PAYLOAD, REASONS, Rejected
from monitor.config import ConfigError, load_config
from monitor.core.readings import Reading
from monitor.core.settings import Config, DeviceConfig
from tests.harness.devices import DEVICES, GEN1, GEN2, TASMOTA, Z2M
from tests.harness.site import Site, device, example_site

SITE: Final = "lisbon-1"
BOOTHS: Final = frozenset({"b1", "b2"})
ACCEPTED: Final = "accepted"
CONFIG_ERROR: Final = "config_error"


# --- payloads -----------------------------------------------------------------------------

CANONICAL_EXAMPLES: Final[tuple[dict[str, Any], ...]] = (
    {"kind": "button", "press": "call", "id": "e1", "device": "btn-1", "ts": 1764000000},
    {"kind": "button", "press": "presence"},
    {"kind": "button", "press": "clear", "ts": "2026-11-23T20:15:03.120Z"},
    {"kind": "occupancy", "occupied": True},
    {"kind": "motion", "state": "still", "device": "radar-1"},
    {"kind": "heartbeat", "battery": 57},
)

# Every documented payload of every source, by the topic it comes on (docs/devices.md).
_Z2M_BASE = Z2M.topic.partition("/")[0]
ADAPTER_EXAMPLES: Final[dict[str, tuple[bytes | dict[str, Any], ...]]] = {
    Z2M.topic: (
        {"action": "single", "battery": 97, "linkquality": 120},
        {"presence": True, "movement": "no_movement", "target_distance": 0.8},
        {"state": "presence", "presence": True, "distance": 1.1},
        {"occupancy": True, "battery": 100, "illuminance": 3},
        {"contact": False, "battery": 91, "voltage": 3005},
    ),
    f"{Z2M.topic}/availability": (b"online", {"state": "offline"}),
    f"{_Z2M_BASE}/bridge/state": (b"offline", {"state": "online"}),
    "booth1/binary_sensor/door/state": (b"ON", b"OFF"),
    "booth1/status": (b"online", b"offline"),
    f"tele/{TASMOTA.topic}/LWT": (b"Online", b"Offline"),
    f"stat/{TASMOTA.topic}/RESULT": ({"Button1": {"Action": "SINGLE"}}, {"POWER": "ON"}),
    f"tele/{TASMOTA.topic}/SENSOR": ({"Switch1": "ON", "Time": "2026-11-23T20:15:03"},),
    f"{GEN2.topic}/events/rpc": (
        {
            "src": GEN2.topic,
            "method": "NotifyEvent",
            "params": {
                "ts": 1764000000.1,
                "events": [
                    {"component": "input:0", "id": 0, "event": "single_push", "ts": 1764000000.1},
                ],
            },
        },
    ),
    f"{GEN2.topic}/online": (b"true", b"false"),
    f"{GEN1.topic}/input_event/0": ({"event": "S", "event_cnt": 4}, {"event": "SS"}),
    f"{GEN1.topic}/online": (b"true",),
}

# Field names the decoders read, so mutations reach the field checks and not only "ignored".
FIELDS: Final = (
    "kind press occupied state battery id device ts action occupancy presence movement "
    "contact Button1 Action Switch1 method params events component event"
).split()


def encode(value: bytes | dict[str, Any]) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


# Raw JSON text that json.dumps cannot write: it stands in a document as a placeholder string.
_RAW = "\x00raw{}\x00"
HOSTILE_JSON_TOKENS: Final[tuple[str, ...]] = (
    "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 400, "9" * 4300,
    "9" * 5000, "-0", "1e-400", '"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"', "[" * 100_000,
    "[" * 990 + "]" * 990, '{"a":' * 2000 + "1" + "}" * 2000, "[" * 50_000 + "]" * 50_000,
)  # fmt: skip
HOSTILE_NUMBERS: Final[tuple[Any, ...]] = (
    0, -1, 101, 2**63, -(2**63) - 1, 10**300, 10**400, -(10**400), 1.5, -0.0, 1e308, 0.5,
    100.4, 100.5, -0.5, 1764000000, True, False,
)  # fmt: skip
HOSTILE_STRINGS: Final[tuple[str, ...]] = (
    "", " ", "CALL", "\x00", "../b2", "b2", "+", "#", "é" * 50, "x" * (MAX_PAYLOAD + 1),
    "2026-11-23T20:15:03", "9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00-14:00",
)  # fmt: skip
HOSTILE_CONTAINERS: Final[tuple[Any, ...]] = (None, [], {}, [None], {"kind": "button"}, [[[]]])
hostile_values = (
    st.sampled_from(HOSTILE_NUMBERS)
    | st.sampled_from(HOSTILE_STRINGS)
    | st.sampled_from(HOSTILE_CONTAINERS).map(copy.deepcopy)  # mutations must not share them
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**4000), max_value=10**4000)
    | st.floats()
    | st.text(max_size=30)
    | hostile_values
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


# Weighted: most mutations swap a value the decoder reads for something hostile.
_JSON_OPS: Final = ("hostile",) * 4 + ("raw",) * 3 + ("replace",) * 3 + ("wrap", "delete", "add")


@st.composite
def json_mutants(draw: st.DrawFn, examples: Sequence[dict[str, Any]]) -> bytes:
    """A documented example with values replaced, keys dropped or added, raw tokens spliced."""
    doc: dict[str, Any] = json.loads(json.dumps(draw(st.sampled_from(examples))))
    raws: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        parent, key = _pick_slot(draw, doc)
        op = draw(st.sampled_from(_JSON_OPS))
        if op == "delete" and key in parent and isinstance(parent, dict):
            del parent[key]
        elif op == "raw":
            raws.append(draw(st.sampled_from(HOSTILE_JSON_TOKENS)))
            _put(parent, key, _RAW.format(len(raws) - 1))
        elif op == "wrap" and _has(parent, key):
            depth = draw(st.integers(1, 50))
            value = parent[key]
            as_list = draw(st.booleans())
            for _ in range(depth):
                value = [value] if as_list else {"v": value}
            _put(parent, key, value)
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(FIELDS) | st.text(max_size=8))] = draw(json_values)
        elif op == "hostile":
            _put(parent, key, draw(hostile_values))
        else:
            _put(parent, key, draw(json_values))
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(_RAW.format(i)), raw)
    return text.encode("utf-8", "surrogatepass")


def _pick_slot(draw: st.DrawFn, doc: dict[str, Any]) -> tuple[Any, Any]:
    """A (container, key) somewhere in `doc`: an existing place or a new key of a dict."""
    slots: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            slots.extend((node, k) for k in node for _ in range(3))
            slots.append((node, draw(st.sampled_from(FIELDS))))
            for v in list(node.values()):
                walk(v)
        elif isinstance(node, list):
            slots.extend((node, i) for i in range(len(node)))
            for v in node:
                walk(v)

    walk(doc)
    slot: tuple[Any, Any] = draw(st.sampled_from(slots))
    return slot


def _has(parent: Any, key: Any) -> bool:
    return key in parent if isinstance(parent, dict) else 0 <= key < len(parent)


def _put(parent: Any, key: Any, value: Any) -> None:
    parent[key] = value


# Raw JSON values that break naive decoders, spliced into templates that reach each field.
_CORPUS_VALUES: Final = (
    "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "9" * 400, "-" + "9" * 400, "9" * 5000,
    '"\\ud800"', "[" * 990 + "]" * 990, '{"a":' * 600 + "1" + "}" * 600, "[" * 5000,
    '"' + "x" * MAX_PAYLOAD + '"', "1.5", "-1", "true", "null", '""', "{}",
)  # fmt: skip
_CORPUS_TEMPLATES: Final = (
    *(f'{{"{field}":X}}' for field in FIELDS),
    '{"kind":"heartbeat","battery":X}',
    '{"kind":"heartbeat","ts":X,"id":X}',
    '{"kind":"button","press":"call","device":X}',
    '{"method":"NotifyEvent","params":{"events":[{"component":"input:0","event":X}]}}',
    '{"method":"NotifyEvent","params":{"events":[X]}}',
    '{"Button1":{"Action":X}}',
    '{"action":"single","battery":X,"presence":true,"movement":"movement"}',
)
#: Every classic hostile payload, always tried (random strategies may miss a rare one).
HOSTILE_CORPUS: Final[tuple[bytes, ...]] = (
    *(t.replace("X", v).encode() for t in _CORPUS_TEMPLATES for v in _CORPUS_VALUES),
    b"[" * 100_000, b"[" * 3000 + b"]" * 3000, b"[" * 8192 + b"]" * 8192,
    b'{"a":' * 3000 + b"1" + b"}" * 3000, b'{"kind":' + b"[" * 3000 + b"]" * 3000 + b"}",
    b'{"kind":"heartbeat","pad":"' + b"x" * MAX_PAYLOAD + b'"}', b" " * (MAX_PAYLOAD + 1),
    b"\xff\xfe", b"\xc0\xaf", b'{"kind":"button","press":"call\xff"}',
    b'{"device":"\xed\xa0\x80","kind":"heartbeat"}', b'{"kind":"\xe2\x82"}',
    b"\xef\xbb\xbf{}", b"[]", b'"call"', '{"kind":"heartbeat"}'.encode("utf-16"), b"",
    b"\x00", b"ON\x00",
)  # fmt: skip


_BAD_BYTES: Final[tuple[bytes, ...]] = (
    b"\xff", b"\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80", b"\x80",
    b"\x00", b'"', b"\\", b"{", b"[", b"]", b"}", b",", b":", b"\xef\xbb\xbf",
)  # fmt: skip


@st.composite
def byte_mutants(draw: st.DrawFn, seeds: Sequence[bytes]) -> bytes:
    """A seed payload with bytes flipped, inserted (often not UTF-8), deleted or repeated."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(("flip", "insert", "bad", "delete", "repeat", "truncate")))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "bad":
            data[at:at] = draw(st.sampled_from(_BAD_BYTES))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 16))] * draw(st.integers(1, 300))
        else:
            del data[at:]
    return bytes(data)


@st.composite
def hostile_payloads(draw: st.DrawFn, examples: Sequence[bytes]) -> bytes:
    """Payloads built to hurt: deep nesting, oversize, bad encodings, odd constants."""
    example = draw(st.sampled_from(examples))
    kind = draw(st.sampled_from(("deep", "large", "utf16", "bom", "raw", "bad_utf8", "nul")))
    if kind == "deep":
        depth = draw(st.sampled_from((1000, 3000, MAX_PAYLOAD // 2, 100_000)))
        shapes = ((b"[", b"]"), (b'{"a":', b"}"), (b'{"kind":[', b"]"))
        opener, closer = draw(st.sampled_from(shapes))
        return opener * depth + (closer * depth if draw(st.booleans()) else b"")
    if kind == "large":
        size = draw(st.integers(MAX_PAYLOAD - 2, 3 * MAX_PAYLOAD))
        pad = b" " * max(0, size - len(example))
        return example[:-1] + pad + example[-1:] if example.endswith(b"}") else example + pad
    if kind == "utf16":
        encoding = draw(st.sampled_from(("utf-16", "utf-32")))
        return example.decode("utf-8", "replace").encode(encoding)
    if kind == "bom":
        return b"\xef\xbb\xbf" + example
    if kind == "raw":
        return draw(st.sampled_from(HOSTILE_JSON_TOKENS)).encode()
    if kind == "bad_utf8":
        at = draw(st.integers(0, len(example)))
        return example[:at] + draw(st.sampled_from(_BAD_BYTES[:7])) + example[at:]
    return example + b"\x00" * draw(st.integers(1, 4))


def payloads(examples: Sequence[bytes | dict[str, Any]]) -> st.SearchStrategy[bytes]:
    """Any of: random bytes, byte mutants, JSON mutants and hostile payloads of `examples`."""
    seeds = [encode(e) for e in examples]
    objects = [e for e in examples if isinstance(e, dict)]
    hostile = hostile_payloads(seeds)
    parts = [
        st.binary(max_size=64),
        byte_mutants(seeds),
        hostile,
        hostile,  # twice: each of its kinds should come up in a short run
        *([json_mutants(objects)] * 2 if objects else []),
        st.builds(lambda v: json.dumps(v).encode(), json_values),
    ]
    return st.one_of(parts)


# --- topics -------------------------------------------------------------------------------

INJECTED_LEVELS: Final = (
    "+", "#", "", ".", "..", "../b2", "b1/../b2", "b1/x", "b1\x00", "\x00", "b1+", "b#",
    "B1", "\N{FULLWIDTH LATIN SMALL LETTER B}1", " b1", "b1 ", "%2F", "b1%2Fevents", "porto",
    "*", "\u202eb1", "b" * 70_000,
)  # fmt: skip


@st.composite
def hostile_topics(draw: st.DrawFn, valid: Sequence[str]) -> str:
    """A valid topic, one with a level swapped for a wildcard, NUL or "..", or any text."""
    topic = draw(st.sampled_from(valid))
    match draw(st.sampled_from(("valid", "level", "affix", "text"))):
        case "valid":
            return topic
        case "level":
            levels = topic.split("/")
            at = draw(st.integers(0, len(levels) - 1))
            levels[at] = draw(st.sampled_from(INJECTED_LEVELS) | st.text(max_size=6))
            return "/".join(levels)
        case "affix":
            affix = draw(st.sampled_from(("/", "../", "/#", "/+", "\x00", "/..", "//")))
            return affix + topic if draw(st.booleans()) else topic + affix
        case _:
            return str(draw(st.text(max_size=40)))


CANONICAL_TOPICS: Final = tuple(f"boothwatch/{SITE}/booths/{b}/events" for b in ("b1", "b2", "b9"))
DEVICE_TOPICS: Final = tuple((dev, topic) for dev in DEVICES for topic in adapters.topics(dev))

# --- oracles ------------------------------------------------------------------------------


def check_rejected(result: Rejected) -> str:
    assert result.reason in REASONS, result
    assert isinstance(result.detail, str) and 0 < len(result.detail) < 300, result
    return result.reason


def canonical_outcome(topic: str, payload: bytes) -> str:
    """An MQTT message to the canonical decoder, as the runtime feeds it: topic, then payload."""
    booth = parse_topic(topic, SITE)
    if booth is None:
        return "bad_topic"
    # The booth is the one level of our own site's topic: it can name nothing else.
    assert f"boothwatch/{SITE}/booths/{booth}/events" == topic, (topic, booth)
    assert booth and not any(c in booth for c in "/+#\x00"), booth
    result = parse_event(booth, payload, BOOTHS)
    if isinstance(result, Parsed):
        assert result.event.booth == booth and booth in BOOTHS, result
        payload.decode("utf-8")  # what the runtime stores: it must be text
        return ACCEPTED
    assert isinstance(result, Rejected), result
    assert result.reason != "bad_topic", result
    return check_rejected(result)


def adapter_outcome(dev: DeviceConfig, topic: str, payload: bytes, retained: bool) -> str:
    """One message of one device to its firmware adapter."""
    result = adapters.decode(dev, topic, payload, retained)
    if isinstance(result, Rejected):
        assert (result.reason == "bad_topic") == (topic not in adapters.topics(dev)), result
        return check_rejected(result)
    assert topic in adapters.topics(dev), topic
    assert isinstance(result, list), result
    assert all(isinstance(r, Reading) and r != Reading() for r in result), result
    assert not retained or all(r.press is None for r in result), result
    return ACCEPTED


# --- config documents ---------------------------------------------------------------------



def _base_site() -> Site:
    """The interface's example site with a door booth and a device of every firmware."""
    site = example_site()
    site.booth("b1").update(occupancy_from="door", door_window="45s")
    site.devices = [
        device("b1-button", "zigbee2mqtt", "zigbee2mqtt/b1-button", "b1", "call_button",
               actions={"hold": "presence", "release": "ignore"}),
        device("b1-door", "esphome", "b1node/binary_sensor/door/state", "b1", "door",
               inverted=True),
        device("b1.motion", "tasmota", "b1-pir", "b1", "motion", battery_low=35),
        device("b2-presence", "shelly", "shellies/shelly1-b2", "b2", "presence_button"),
        device("b2-call", "shelly", "shellyplusi4-b2", "b2", "call_button"),
        device("b2-occupancy", "canonical", f"boothwatch/{SITE}/booths/b2/events", "b2",
               "occupancy"),
    ]
    return site


BASE_CONFIG_TOML: Final = _base_site().text()

_SEGMENT = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*")(?:\[\d+\])*'
KEY_PATH: Final = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})*")

WEIRD_STRINGS: Final = (
    "", " ", "\x00", "\t", "\n", "\u202e", "é", "../../etc/passwd", "role:", "role:nurse",
    "role:role:nurse", "b1", "ana", "pager", "console", "webhook", "mqtt", "high", "x" * 5000,
    "1h30m", "-5m", "-0s", "0s", "99999999999999999999h", "1e309s", "nan", "inf", "1.5.5s",
    "90", "20m20m", "mqtt://", "mqtts://h:0", "mqtt://h:99999", "mqtt://[::1", "http://",
    "ftp://x", "http://127.0.0.1:8080/x?token=1", "127.0.0.1:", ":8080", "[::1]:80",
    "Europe/Nowhere", "../Europe/Lisbon", "UTC", "+", "#", "a/+/b", "boothwatch/x/#",
    "zigbee2mqtt/+", "shellies/", "x/binary_sensor//state", "5", "3.1.1", "door", "sensor",
)  # fmt: skip
TOML_SCALARS = (
    st.sampled_from(WEIRD_STRINGS)
    | st.text(max_size=20)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.sampled_from((0, -1, 1, 2**31, 2**63 - 1, -(2**63), 10**30))
    | st.floats()
    | st.sampled_from((math.nan, math.inf, -math.inf, -0.0, 5e-324, 1e308))
    | st.booleans()
    | st.dates()
    | st.times()
    | st.datetimes(timezones=st.none() | st.just(datetime.UTC))
)
toml_values = st.recursive(
    TOML_SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def config_documents(draw: st.DrawFn) -> dict[str, Any]:
    """The example site config (with devices and a door booth), mutated in a few places."""
    doc: dict[str, Any] = tomllib.loads(BASE_CONFIG_TOML)
    for _ in range(draw(st.integers(1, 5))):
        parent, key = _pick_config_slot(draw, doc)
        op = draw(st.sampled_from(("replace", "delete", "add", "duplicate", "wrap", "negate")))
        if op == "delete" and _has(parent, key):
            del parent[key]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12) | st.sampled_from(("id", "type", "steps")))] = draw(
                toml_values
            )
        elif op == "duplicate" and isinstance(parent, list) and _has(parent, key):
            parent.append(json.loads(json.dumps(parent[key], default=str)))
        elif op == "wrap" and _has(parent, key):
            parent[key] = [parent[key]] if draw(st.booleans()) else {"v": parent[key]}
        elif op == "negate" and _has(parent, key) and isinstance(parent[key], str):
            parent[key] = "-" + parent[key]
        else:
            _put(parent, key, draw(toml_values))
    return doc


def _pick_config_slot(draw: st.DrawFn, doc: dict[str, Any]) -> tuple[Any, Any]:
    slots: list[tuple[Any, Any]] = [(doc, draw(st.text(max_size=8)))]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            slots.extend((node, k) for k in node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            slots.extend((node, i) for i in range(len(node)))
            for v in node:
                walk(v)

    walk(doc)
    slot: tuple[Any, Any] = draw(st.sampled_from(slots))
    return slot


#: Config files built to hurt the loader: deep nesting, bad encodings, odd TOML.
HOSTILE_CONFIGS: Final[tuple[bytes, ...]] = (
    b"a = " + b"[" * 100_000, b"a = " + b"[" * 500 + b"]" * 500, b"a = " + b"{b=" * 5000,
    b"\xff\xfe", b"\xef\xbb\xbf" + BASE_CONFIG_TOML.encode(), BASE_CONFIG_TOML.encode("utf-16"),
    BASE_CONFIG_TOML.encode() + b"\x00", b"[site]\nid = 1e400\n", b"[site]\nid = " + b"9" * 5000,
    b"[[booths]]\n" * 1000, b"", b"[site]\n[site]\n", b"site = 1\n[site.x]\n",
)  # fmt: skip


def config_outcome(text: str | bytes) -> str:
    """A config file's text to load_config: a Config, or a ConfigError naming key paths."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "boothwatch.toml"
        path.write_bytes(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
        try:
            config = load_config(path, env={})
        except ConfigError as exc:
            assert exc.problems, exc
            for problem in exc.problems:
                where = re.escape(str(path)) + "|" + KEY_PATH.pattern
                assert re.match(rf"(?:{where}): \S", problem), problem
            return CONFIG_ERROR
    assert isinstance(config, Config)
    return ACCEPTED
