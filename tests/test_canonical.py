"""The canonical event parser turns every payload into an event or a counted rejection."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.adapters.canonical import KINDS, Parsed, parse_event, parse_topic
from devices.adapters.payload import MAX_PAYLOAD, REASONS, Rejected
from monitor.core.events import Button, Heartbeat, Motion, MotionState, Occupancy, Press

BOOTHS = frozenset({"b1", "b2"})


def parse(payload: bytes | str | dict[str, Any], booth: str = "b1") -> Parsed | Rejected:
    if isinstance(payload, dict):
        payload = json.dumps(payload)
    if isinstance(payload, str):
        payload = payload.encode()
    return parse_event(booth, payload, BOOTHS)


def parsed(payload: bytes | str | dict[str, Any]) -> Parsed:
    result = parse(payload)
    assert isinstance(result, Parsed), result
    return result


def reason(payload: bytes | str | dict[str, Any], booth: str = "b1") -> str:
    result = parse(payload, booth)
    assert isinstance(result, Rejected), result
    assert result.detail
    return result.reason


# --- each kind ----------------------------------------------------------------------


@pytest.mark.parametrize("press", list(Press))
def test_button_parses(press: Press) -> None:
    """A button event carries its press."""
    assert parsed({"kind": "button", "press": press.value}).event == Button("b1", press)


@pytest.mark.parametrize("occupied", [True, False])
def test_occupancy_parses(occupied: bool) -> None:
    """An occupancy event carries occupied as a bool."""
    assert parsed({"kind": "occupancy", "occupied": occupied}).event == Occupancy("b1", occupied)


def test_occupancy_says_a_sessions_risk_and_route() -> None:
    """An occupancy event may carry the session's risk and route (never a person's name);
    other fields beside them are ignored, as firmware adds its own."""
    event = parsed({"kind": "occupancy", "occupied": True, "risk": "high", "route": "inject",
                    "name": "ignored"}).event
    assert event == Occupancy("b1", True, risk="high", route="inject")
    assert parsed({"kind": "occupancy", "occupied": True, "risk": "standard"}).event == (
        Occupancy("b1", True, risk="standard"))
    result = parse({"kind": "occupancy", "occupied": True, "risk": "HIGH"})
    assert isinstance(result, Rejected)
    assert result.detail == "risk: must be one of standard|high, got 'HIGH'"


@pytest.mark.parametrize("state", list(MotionState))
def test_motion_parses(state: MotionState) -> None:
    """A motion event carries its state."""
    assert parsed({"kind": "motion", "state": state.value}).event == Motion("b1", state)


@pytest.mark.parametrize("battery", [0, 57, 100])
def test_heartbeat_parses_with_battery(battery: int) -> None:
    """A heartbeat carries a battery level from 0 to 100."""
    assert parsed({"kind": "heartbeat", "battery": battery}).event == Heartbeat("b1", battery)


def test_heartbeat_battery_is_optional() -> None:
    """A heartbeat without a battery level is fine."""
    assert parsed({"kind": "heartbeat"}).event == Heartbeat("b1", None)


def test_optional_fields_are_carried() -> None:
    """id, device and ts come back beside the event, and device goes into the event too."""
    result = parsed(
        {"kind": "button", "press": "call", "id": "e-1", "device": "btn-7", "ts": 1764000000}
    )
    assert result == Parsed(
        event=Button("b1", Press.CALL, device="btn-7"),
        event_id="e-1",
        device="btn-7",
        ts=1764000000.0,
    )


def test_optional_fields_default_to_none() -> None:
    """An event without id, device or ts has None for each."""
    result = parsed({"kind": "occupancy", "occupied": True})
    assert (result.event_id, result.device, result.ts) == (None, None, None)


def test_extra_fields_are_ignored() -> None:
    """Fields that firmware adds are ignored."""
    payload = {"kind": "motion", "state": "still", "linkquality": 120, "extra": {"a": [1]}}
    assert parsed(payload).event == Motion("b1", MotionState.STILL)


# --- ts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "epoch"),
    [
        ("2026-11-23T20:15:03.120Z", 1795464903.12),
        ("2026-11-23T21:15:03.120+01:00", 1795464903.12),
        (1764000000, 1764000000.0),
        (1764000000.5, 1764000000.5),
    ],
)
def test_ts_becomes_epoch_seconds(ts: str | float, epoch: float) -> None:
    """ts as ISO 8601 with Z or an offset, or as epoch seconds, becomes a float epoch."""
    result = parsed({"kind": "heartbeat", "ts": ts})
    assert isinstance(result.ts, float)
    assert result.ts == pytest.approx(epoch, abs=1e-6)


@pytest.mark.parametrize(
    "ts", ["2026-11-23T20:15:03", "yesterday", "", True, None, [1], "1764000000"]
)
def test_bad_ts_is_bad_field(ts: object) -> None:
    """ts without an offset, not a date, or of another type is bad_field."""
    assert reason({"kind": "heartbeat", "ts": ts}) == "bad_field"


def test_infinite_ts_is_rejected() -> None:
    """A ts number that overflows to infinity is bad_field."""
    assert reason('{"kind":"heartbeat","ts":1e400}') == "bad_field"
    assert reason('{"kind":"heartbeat","ts":' + "9" * 400 + "}") == "bad_field"


# --- each rejection reason ----------------------------------------------------------


def test_too_large() -> None:
    """A payload over 16 KiB is too_large, even if it is valid JSON."""
    payload = json.dumps({"kind": "heartbeat", "pad": "x" * MAX_PAYLOAD}).encode()
    assert reason(payload) == "too_large"


def test_exactly_the_limit_is_accepted() -> None:
    """A payload of exactly 16 KiB is still parsed."""
    head = b'{"kind":"heartbeat","pad":"'
    payload = head + b"x" * (MAX_PAYLOAD - len(head) - 2) + b'"}'
    assert len(payload) == MAX_PAYLOAD
    assert isinstance(parse(payload), Parsed)


@pytest.mark.parametrize("payload", [b"\xff\xfe", b'{"kind":"heartbeat","device":"\xc3"}'])
def test_bad_utf8(payload: bytes) -> None:
    """Bytes that are not strict UTF-8 are bad_utf8."""
    assert reason(payload) == "bad_utf8"


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "{",
        "kind=button",
        '{"kind":"heartbeat","battery":NaN}',
        '{"kind":"heartbeat","ts":Infinity}',
        '{"kind":"heartbeat","ts":-Infinity}',
        "\ufeff{}",
        "[" * 10_000,
        '{"kind":"heartbeat","n":' + "1" * 5000 + "}",
    ],
)
def test_not_json(payload: str) -> None:
    """Not JSON, NaN or Infinity, too deep, or an int too long is not_json."""
    assert reason(payload) == "not_json"


@pytest.mark.parametrize("payload", ["[1,2]", '"button"', "42", "null", "true"])
def test_not_object(payload: str) -> None:
    """JSON that is not an object is not_object."""
    assert reason(payload) == "not_object"


@pytest.mark.parametrize("booth", ["b3", "", "B1"])
def test_unknown_booth(booth: str) -> None:
    """A booth that is not configured is unknown_booth, even with a good payload."""
    assert reason({"kind": "button", "press": "call"}, booth=booth) == "unknown_booth"


@pytest.mark.parametrize("kind", ["Button", "door", "", "heartbeat "])
def test_unknown_kind(kind: str) -> None:
    """A kind string we do not know is unknown_kind."""
    assert reason({"kind": kind}) == "unknown_kind"


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"kind": None},
        {"kind": 1},
        {"kind": ["button"]},
        {"kind": "button"},
        {"kind": "button", "press": "CALL"},
        {"kind": "button", "press": "single"},
        {"kind": "button", "press": 1},
        {"kind": "occupancy"},
        {"kind": "occupancy", "occupied": 1},
        {"kind": "occupancy", "occupied": "true"},
        {"kind": "occupancy", "occupied": None},
        {"kind": "occupancy", "occupied": True, "risk": "very"},
        {"kind": "occupancy", "occupied": True, "risk": None},
        {"kind": "occupancy", "occupied": True, "route": "vein"},
        {"kind": "occupancy", "occupied": True, "route": 1},
        {"kind": "motion", "state": "no_movement"},
        {"kind": "motion", "state": None},
        {"kind": "heartbeat", "battery": True},
        {"kind": "heartbeat", "battery": False},
        {"kind": "heartbeat", "battery": 101},
        {"kind": "heartbeat", "battery": -1},
        {"kind": "heartbeat", "battery": 50.0},
        {"kind": "heartbeat", "battery": "50"},
        {"kind": "heartbeat", "battery": None},
        {"kind": "heartbeat", "id": 7},
        {"kind": "heartbeat", "id": ""},
        {"kind": "heartbeat", "id": "x" * 129},
        {"kind": "heartbeat", "device": 7},
        {"kind": "heartbeat", "device": None},
        {"kind": "heartbeat", "device": "\ud800"},
    ],
)
def test_bad_field(payload: dict[str, Any]) -> None:
    """A missing, wrong-typed or out-of-range field is bad_field."""
    assert reason(payload) == "bad_field"


def test_id_of_128_characters_is_accepted() -> None:
    """An id of exactly 128 characters is accepted."""
    assert parsed({"kind": "heartbeat", "id": "x" * 128}).event_id == "x" * 128


def test_bad_value_in_detail_is_shortened() -> None:
    """The detail quotes a bad value but never more than a short prefix of it."""
    result = parse({"kind": "button", "press": "x" * 10_000})
    assert isinstance(result, Rejected)
    assert len(result.detail) < 200


def test_rejected_checks_its_reason() -> None:
    """A reason outside REASONS is our bug and fails at once."""
    with pytest.raises(ValueError, match="REASONS"):
        Rejected("weird", "detail")


def test_reasons_are_the_documented_set() -> None:
    """REASONS is exactly the bounded set of Prometheus label values."""
    assert (
        frozenset(
            {
                "too_large",
                "bad_utf8",
                "not_json",
                "not_object",
                "unknown_booth",
                "unknown_kind",
                "bad_field",
                "bad_topic",
            }
        )
        == REASONS
    )


# --- topics -------------------------------------------------------------------------


def test_topic_gives_the_booth() -> None:
    """A topic of our site names its booth."""
    assert parse_topic("boothwatch/lisbon-1/booths/b1/events", "lisbon-1") == "b1"


@pytest.mark.parametrize(
    "topic",
    [
        "boothwatch/porto/booths/b1/events",
        "boothwatch/lisbon-1/booths/b1/state",
        "boothwatch/lisbon-1/booths/b1/events/extra",
        "boothwatch/lisbon-1/booths/b1/x/events",
        "boothwatch/lisbon-1/booths//events",
        "boothwatch/lisbon-1/booths/+/events",
        "boothwatch/lisbon-1/booths/#/events",
        "boothwatch/lisbon-1/booths/b+/events",
        "boothwatch/lisbon-1/booths/#",
        "boothwatch/+/booths/b1/events",
        "/boothwatch/lisbon-1/booths/b1/events",
        "boothwatch/lisbon-1/booths/b1/events/",
        "other/lisbon-1/booths/b1/events",
        "boothwatch/lisbon-1/booth/b1/events",
        "",
    ],
)
def test_other_topics_give_none(topic: str) -> None:
    """Another site, another shape, extra levels or wildcards give None."""
    assert parse_topic(topic, "lisbon-1") is None


# --- never raises -------------------------------------------------------------------


def check(result: Parsed | Rejected) -> None:
    assert isinstance(result, Parsed | Rejected)
    if isinstance(result, Rejected):
        assert result.reason in REASONS
        assert result.reason != "bad_topic"
        assert isinstance(result.detail, str)


@given(st.binary(max_size=2 * MAX_PAYLOAD))
def test_any_bytes_parse_or_reject(payload: bytes) -> None:
    """For any bytes, parse_event returns Parsed or Rejected with a known reason."""
    check(parse_event("b1", payload, BOOTHS))


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from([*KINDS, "call", "presence", "clear", "moving", "still", "absent"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
KNOWN_FIELDS = ("kind", "press", "occupied", "state", "battery", "id", "device", "ts")
field_names = st.sampled_from(KNOWN_FIELDS) | st.text(max_size=10)
json_objects = st.fixed_dictionaries(
    {"kind": st.sampled_from(KINDS) | json_values},
) | st.dictionaries(field_names, json_values, max_size=8)


@given(
    st.tuples(json_objects, st.dictionaries(field_names, json_values, max_size=6)),
    st.sampled_from(["b1", "b2", "b9", ""]),
)
def test_any_json_object_parses_or_rejects(
    objects: tuple[dict[str, Any], dict[str, Any]], booth: str
) -> None:
    """For any JSON object, parse_event returns Parsed or Rejected with a known reason."""
    base, extra = objects
    payload = json.dumps({**extra, **base}).encode()
    check(parse_event(booth, payload, BOOTHS))


valid_events = st.one_of(
    st.builds(lambda p: {"kind": "button", "press": p.value}, st.sampled_from(Press)),
    st.builds(lambda o: {"kind": "occupancy", "occupied": o}, st.booleans()),
    st.builds(lambda s: {"kind": "motion", "state": s.value}, st.sampled_from(MotionState)),
    st.builds(
        lambda b: {"kind": "heartbeat"} if b is None else {"kind": "heartbeat", "battery": b},
        st.none() | st.integers(0, 100),
    ),
)


@given(
    valid_events,
    st.dictionaries(
        st.text(max_size=10).filter(lambda k: k not in KNOWN_FIELDS), json_values, max_size=4
    ),
    st.text(min_size=1, max_size=128),
)
def test_valid_events_always_parse(
    event: dict[str, Any], extra: dict[str, Any], event_id: str
) -> None:
    """A valid event parses whatever extra fields ride along."""
    payload = {**extra, **event, "id": event_id}
    result = parse_event("b2", json.dumps(payload).encode(), BOOTHS)
    assert isinstance(result, Parsed), result
    assert result.event.booth == "b2"
    assert result.event_id == event_id
