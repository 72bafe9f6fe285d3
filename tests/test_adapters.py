"""Firmware adapters turn each device's documented payloads into the exact readings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices import adapters
from devices.adapters import esphome, shelly, tasmota, zigbee2mqtt
from devices.adapters.payload import MAX_PAYLOAD, REASONS, Rejected
from monitor.core.events import MotionState
from monitor.core.readings import PRESS_TYPES, Reading
from monitor.core.settings import DeviceConfig
from tests.harness.devices import DEVICES, ESPHOME, GEN1, GEN2, TASMOTA, Z2M, device

MOVING, STILL, ABSENT = MotionState.MOVING, MotionState.STILL, MotionState.ABSENT


def payload(value: bytes | str | dict[str, Any]) -> bytes:
    if isinstance(value, dict):
        value = json.dumps(value)
    return value.encode() if isinstance(value, str) else value


def decode(
    dev: DeviceConfig, topic: str, value: bytes | str | dict[str, Any], retained: bool = False
) -> list[Reading]:
    result = adapters.decode(dev, topic, payload(value), retained)
    assert not isinstance(result, Rejected), result
    return result


def rejected(
    dev: DeviceConfig, topic: str, value: bytes | str | dict[str, Any], retained: bool = False
) -> str:
    result = adapters.decode(dev, topic, payload(value), retained)
    assert isinstance(result, Rejected), result
    assert result.detail
    return result.reason


# --- topics and dispatch ------------------------------------------------------------


@pytest.mark.parametrize(
    ("dev", "expected"),
    [
        (
            Z2M,
            (
                "zigbee2mqtt/booth1-button",
                "zigbee2mqtt/booth1-button/availability",
                "zigbee2mqtt/bridge/state",
            ),
        ),
        (
            device("zigbee2mqtt", "z2m/booth1/door"),
            ("z2m/booth1/door", "z2m/booth1/door/availability", "z2m/bridge/state"),
        ),
        (ESPHOME, ("booth1/binary_sensor/door/state", "booth1/status")),
        (
            TASMOTA,
            (
                "tele/booth1-button/LWT",
                "stat/booth1-button/RESULT",
                "tele/booth1-button/SENSOR",
            ),
        ),
        (
            GEN2,
            ("shellyplus1-a8032ab12345/events/rpc", "shellyplus1-a8032ab12345/online"),
        ),
        (
            GEN1,
            (
                "shellies/shellybutton1-E8DB84D12345/input_event/0",
                "shellies/shellybutton1-E8DB84D12345/online",
            ),
        ),
    ],
)
def test_topics_follow_the_table(dev: DeviceConfig, expected: tuple[str, ...]) -> None:
    """Each source subscribes exactly the topics docs/devices.md lists for it."""
    assert adapters.topics(dev) == expected


def test_sources_are_the_four_firmwares() -> None:
    """SOURCES names every firmware with an adapter, and canonical is not one of them."""
    assert adapters.SOURCES == ("zigbee2mqtt", "esphome", "tasmota", "shelly")


@pytest.mark.parametrize(
    ("module", "dev"),
    [(zigbee2mqtt, Z2M), (esphome, ESPHOME), (tasmota, TASMOTA), (shelly, GEN2)],
)
def test_dispatch_by_source(module: Any, dev: DeviceConfig) -> None:
    """The package functions hand each device to its source's module."""
    assert adapters.topics(dev) == module.topics(dev)
    topic = module.topics(dev)[-1]
    assert adapters.decode(dev, topic, b"x", False) == module.decode(dev, topic, b"x", False)


def test_canonical_devices_are_not_adapted() -> None:
    """A canonical device publishes booth events; asking for its adapter is our bug."""
    dev = device("canonical", "boothwatch/site/booths/b1/events")
    with pytest.raises(ValueError, match="canonical"):
        adapters.topics(dev)
    with pytest.raises(ValueError, match="canonical"):
        adapters.decode(dev, dev.topic, b"{}", False)


@pytest.mark.parametrize(
    "dev",
    [
        device("zigbee2mqtt", "booth1-button"),
        device("zigbee2mqtt", "zigbee2mqtt/"),
        device("zigbee2mqtt", "zigbee2mqtt/+"),
        device("esphome", "booth1/status"),
        device("esphome", "booth1/binary_sensor/state"),
        device("tasmota", ""),
        device("tasmota", "#"),
        device("shelly", "shellies/"),
    ],
)
def test_a_topic_not_of_the_source_form_is_a_config_error(dev: DeviceConfig) -> None:
    """A device topic that cannot be the firmware's fails loudly at startup."""
    with pytest.raises(ValueError, match="topic"):
        adapters.topics(dev)


@pytest.mark.parametrize("dev", DEVICES, ids=lambda d: d.topic)
@pytest.mark.parametrize(
    "topic",
    [
        "zigbee2mqtt/booth2-button",
        "zigbee2mqtt/booth1-button/set",
        "booth2/binary_sensor/door/state",
        "tele/booth2-button/LWT",
        "cmnd/booth1-button/POWER",
        "shellyplus1-other/events/rpc",
        "shellies/shellybutton1-E8DB84D12345/input_event/1",
        "boothwatch/site/booths/b1/events",
        "",
    ],
)
def test_another_devices_topic_is_rejected(dev: DeviceConfig, topic: str) -> None:
    """A message on a topic that is not one of this device's is rejected as bad_topic."""
    assert rejected(dev, topic, b"ON") == "bad_topic"


# --- payload-level rejections shared by every source -------------------------------


def _json_topics() -> list[tuple[DeviceConfig, str]]:
    return [
        (Z2M, "zigbee2mqtt/booth1-button"),
        (TASMOTA, "stat/booth1-button/RESULT"),
        (TASMOTA, "tele/booth1-button/SENSOR"),
        (GEN2, "shellyplus1-a8032ab12345/events/rpc"),
        (GEN1, "shellies/shellybutton1-E8DB84D12345/input_event/0"),
    ]


@pytest.mark.parametrize(("dev", "topic"), _json_topics())
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{" + b" " * MAX_PAYLOAD + b"}", "too_large"),
        (b'{"action":"\xff"}', "bad_utf8"),
        (b"{nope", "not_json"),
        (b'{"battery": NaN}', "not_json"),
        (b"[" * 20_000 + b"]" * 20_000, "too_large"),
        (b"[" * 8_000 + b"]" * 8_000, "not_json"),
        (b"[1, 2]", "not_object"),
        (b'"single"', "not_object"),
        (b"ON", "not_json"),
    ],
)
def test_broken_json_payloads_are_rejected(
    dev: DeviceConfig, topic: str, value: bytes, reason: str
) -> None:
    """Size, encoding, syntax and shape are checked in that order on every JSON topic."""
    assert rejected(dev, topic, value) == reason


# --- Zigbee2MQTT --------------------------------------------------------------------

Z2M_STATE = "zigbee2mqtt/booth1-button"
Z2M_AVAILABILITY = "zigbee2mqtt/booth1-button/availability"
Z2M_BRIDGE = "zigbee2mqtt/bridge/state"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (
            {"action": "single", "battery": 97, "linkquality": 120},
            Reading(press="single", battery=97),
        ),
        (
            {"presence": True, "movement": "no_movement", "target_distance": 0.8},
            Reading(occupancy=True, motion=STILL),
        ),
        (
            {"presence": True, "movement": "movement", "target_distance": 1.4},
            Reading(occupancy=True, motion=MOVING),
        ),
        ({"presence": False, "movement": "no_presence"}, Reading(occupancy=False, motion=ABSENT)),
        ({"presence": False}, Reading(occupancy=False, motion=ABSENT)),
        ({"presence": True}, Reading(occupancy=True)),
        (
            {"state": "presence", "presence": True, "distance": 1.1},
            Reading(occupancy=True, motion=STILL),
        ),
        (
            {"state": "move", "presence": True, "distance": 0.9},
            Reading(occupancy=True, motion=MOVING),
        ),
        (
            {"state": "none", "presence": False, "distance": 0},
            Reading(occupancy=False, motion=ABSENT),
        ),
        ({"contact": False}, Reading(contact=False)),
        ({"contact": True, "battery": 91, "voltage": 3005}, Reading(contact=True, battery=91)),
        (
            {"occupancy": True, "battery": 100, "illuminance": 3},
            Reading(occupancy=True, motion=MOVING, battery=100),
        ),
        (
            {"occupancy": False, "battery": 100},
            Reading(occupancy=False, motion=ABSENT, battery=100),
        ),
    ],
)
def test_zigbee2mqtt_state_objects(state: dict[str, Any], expected: Reading) -> None:
    """A state object becomes one reading with every field docs/devices.md reads."""
    assert decode(Z2M, Z2M_STATE, state) == [expected]


@pytest.mark.parametrize(
    "state",
    [
        {"linkquality": 120},
        {"action": "", "linkquality": 120},
        {"action": None},
        {"action": "rotate_left"},
        {"state": "ON", "brightness": 254},
        {},
    ],
)
def test_zigbee2mqtt_messages_with_nothing_we_read(state: dict[str, Any]) -> None:
    """Empty or unknown actions, a switch's state and unread fields give no reading."""
    assert decode(Z2M, Z2M_STATE, state) == []


def test_zigbee2mqtt_unknown_action_keeps_the_rest() -> None:
    """An action outside the table is no press, but the battery it came with still counts."""
    assert decode(Z2M, Z2M_STATE, {"action": "shake", "battery": 40}) == [Reading(battery=40)]


def test_zigbee2mqtt_switch_state_does_not_look_like_a_radar() -> None:
    """Only none|presence|move in `state` are Tuya radar values; "ON" is a switch."""
    assert decode(Z2M, Z2M_STATE, {"state": "ON", "occupancy": True}) == [
        Reading(occupancy=True, motion=MOVING)
    ]


@pytest.mark.parametrize(
    ("battery", "expected"),
    [(0, 0), (100, 100), (54.6, 55), (99.4, 99), (101, None), (-1, None), (1e300, None)],
)
def test_zigbee2mqtt_battery(battery: float, expected: int | None) -> None:
    """A battery is rounded to whole percent; out of range drops the field, not the message."""
    result = decode(Z2M, Z2M_STATE, {"contact": True, "battery": battery})
    assert result == [Reading(contact=True, battery=expected)]


def test_zigbee2mqtt_infinite_battery_is_dropped() -> None:
    """1e400 parses as infinity and is dropped like any out-of-range battery."""
    assert decode(Z2M, Z2M_STATE, b'{"contact":true,"battery":1e400}') == [Reading(contact=True)]


@pytest.mark.parametrize(
    "state",
    [
        {"battery": "97"},
        {"battery": True},
        {"action": 1},
        {"occupancy": "true"},
        {"presence": 1},
        {"movement": ["movement"]},
        {"contact": "closed"},
    ],
)
def test_zigbee2mqtt_wrong_field_types_are_rejected(state: dict[str, Any]) -> None:
    """A field we read with the wrong type is the device's fault: bad_field."""
    assert rejected(Z2M, Z2M_STATE, state) == "bad_field"


@pytest.mark.parametrize(
    ("value", "online"),
    [
        ({"state": "online"}, True),
        ({"state": "offline"}, False),
        ("online", True),
        ("offline", False),
    ],
)
def test_zigbee2mqtt_availability_both_forms(value: str | dict[str, Any], online: bool) -> None:
    """Availability is read in the 2.x JSON form and the 1.x plain form, retained or not."""
    assert decode(Z2M, Z2M_AVAILABILITY, value) == [Reading(online=online)]
    assert decode(Z2M, Z2M_AVAILABILITY, value, retained=True) == [Reading(online=online)]


@pytest.mark.parametrize("value", [{"state": "offline"}, "offline"])
def test_zigbee2mqtt_bridge_offline(value: str | dict[str, Any]) -> None:
    """The bridge going offline makes every device's state unknown: offline."""
    assert decode(Z2M, Z2M_BRIDGE, value) == [Reading(online=False)]


@pytest.mark.parametrize("value", [{"state": "online"}, "online"])
def test_zigbee2mqtt_bridge_online_says_nothing(value: str | dict[str, Any]) -> None:
    """The bridge coming back says nothing of one device; its own availability follows."""
    assert decode(Z2M, Z2M_BRIDGE, value) == []


@pytest.mark.parametrize("topic", [Z2M_AVAILABILITY, Z2M_BRIDGE])
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Online", "not_json"),
        ({"state": "unknown"}, "bad_field"),
        ({"status": "online"}, "bad_field"),
        ("[]", "not_object"),
    ],
)
def test_zigbee2mqtt_availability_garbage(
    topic: str, value: str | dict[str, Any], reason: str
) -> None:
    """Availability that is neither form is rejected."""
    assert rejected(Z2M, topic, value) == reason


# --- ESPHome ------------------------------------------------------------------------

ESPHOME_STATE = "booth1/binary_sensor/door/state"
ESPHOME_STATUS = "booth1/status"


@pytest.mark.parametrize(
    ("topic", "value", "expected"),
    [
        (ESPHOME_STATE, "ON", Reading(binary=True)),
        (ESPHOME_STATE, "OFF", Reading(binary=False)),
        (ESPHOME_STATUS, "online", Reading(online=True)),
        (ESPHOME_STATUS, "offline", Reading(online=False)),
    ],
)
def test_esphome(topic: str, value: str, expected: Reading) -> None:
    """ON/OFF is the binary sensor; the status topic is the node's LWT."""
    assert decode(ESPHOME, topic, value) == [expected]
    assert decode(ESPHOME, topic, value, retained=True) == [expected]


@pytest.mark.parametrize(
    ("topic", "value"),
    [
        (ESPHOME_STATE, "on"),
        (ESPHOME_STATE, "online"),
        (ESPHOME_STATE, '{"state":"ON"}'),
        (ESPHOME_STATE, ""),
        (ESPHOME_STATUS, "ON"),
        (ESPHOME_STATUS, "Online"),
    ],
)
def test_esphome_anything_else_is_rejected(topic: str, value: str) -> None:
    """Any other payload on an ESPHome topic is a bad field."""
    assert rejected(ESPHOME, topic, value) == "bad_field"


def test_esphome_invalid_utf8_is_rejected() -> None:
    """Plain-text topics check the encoding first."""
    assert rejected(ESPHOME, ESPHOME_STATE, b"O\xffN") == "bad_utf8"


# --- Tasmota ------------------------------------------------------------------------

TASMOTA_LWT = "tele/booth1-button/LWT"
TASMOTA_RESULT = "stat/booth1-button/RESULT"
TASMOTA_SENSOR = "tele/booth1-button/SENSOR"


@pytest.mark.parametrize(
    ("topic", "value", "expected"),
    [
        (TASMOTA_LWT, "Online", [Reading(online=True)]),
        (TASMOTA_LWT, "Offline", [Reading(online=False)]),
        (TASMOTA_RESULT, {"Button1": {"Action": "SINGLE"}}, [Reading(press="single")]),
        (TASMOTA_RESULT, {"Button4": {"Action": "HOLD"}}, [Reading(press="hold")]),
        (TASMOTA_RESULT, {"Button1": {"Action": "INC_DEC"}}, []),
        (TASMOTA_RESULT, {"POWER": "ON"}, []),
        (TASMOTA_RESULT, {"ButtonDebounce": 50}, []),
        (
            TASMOTA_SENSOR,
            {"Time": "2024-05-01T10:00:00", "Switch1": "ON"},
            [Reading(binary=True)],
        ),
        (TASMOTA_SENSOR, {"Switch1": "OFF"}, [Reading(binary=False)]),
        (TASMOTA_SENSOR, {"Time": "2024-05-01T10:00:00", "ANALOG": {"A0": 512}}, []),
    ],
)
def test_tasmota(topic: str, value: str | dict[str, Any], expected: list[Reading]) -> None:
    """LWT, button actions and Switch1 read as documented; other content says nothing."""
    assert decode(TASMOTA, topic, value) == expected


@pytest.mark.parametrize(
    ("topic", "value"),
    [
        (TASMOTA_LWT, "online"),
        (TASMOTA_RESULT, {"Button1": "SINGLE"}),
        (TASMOTA_RESULT, {"Button1": {"Action": 1}}),
        (TASMOTA_SENSOR, {"Switch1": "TOGGLE"}),
        (TASMOTA_SENSOR, {"Switch1": 1}),
    ],
)
def test_tasmota_garbage_is_rejected(topic: str, value: str | dict[str, Any]) -> None:
    """A field we read in a shape Tasmota does not send is a bad field."""
    assert rejected(TASMOTA, topic, value) == "bad_field"


# --- Shelly -------------------------------------------------------------------------

GEN2_RPC = "shellyplus1-a8032ab12345/events/rpc"
GEN2_ONLINE = "shellyplus1-a8032ab12345/online"
GEN1_EVENT = "shellies/shellybutton1-E8DB84D12345/input_event/0"
GEN1_ONLINE = "shellies/shellybutton1-E8DB84D12345/online"


def notify(*events: dict[str, Any], method: str = "NotifyEvent") -> dict[str, Any]:
    return {
        "src": "shellyplus1-a8032ab12345",
        "dst": "shellyplus1-a8032ab12345/events",
        "method": method,
        "params": {"ts": 1714557600.12, "events": list(events)},
    }


def test_shelly_gen2_documented_event() -> None:
    """The documented NotifyEvent of input:0 is a single press."""
    value = {
        "method": "NotifyEvent",
        "params": {"events": [{"component": "input:0", "event": "single_push"}]},
    }
    assert decode(GEN2, GEN2_RPC, value) == [Reading(press="single")]


def test_shelly_gen2_reads_only_presses_of_input_0() -> None:
    """btn_down/btn_up and other components are ignored; each push is one reading."""
    value = notify(
        {"component": "input:0", "id": 0, "event": "btn_down", "ts": 1.0},
        {"component": "input:0", "id": 0, "event": "btn_up", "ts": 1.1},
        {"component": "input:1", "id": 1, "event": "single_push", "ts": 1.2},
        {"component": "input:0", "id": 0, "event": "double_push", "ts": 1.3},
        {"component": "input:0", "id": 0, "event": "long_push", "ts": 1.4},
    )
    assert decode(GEN2, GEN2_RPC, value) == [Reading(press="double"), Reading(press="hold")]


@pytest.mark.parametrize(
    "value",
    [
        notify(method="NotifyStatus"),
        {"method": "NotifyFullStatus", "params": {"switch:0": {"output": True}}},
        notify(),
        {"src": "shellyplus1-a8032ab12345"},
    ],
)
def test_shelly_gen2_other_notifications_say_nothing(value: dict[str, Any]) -> None:
    """Status notifications and empty event lists give no reading."""
    assert decode(GEN2, GEN2_RPC, value) == []


@pytest.mark.parametrize(
    "value",
    [
        {"method": 1},
        {"method": "NotifyEvent", "params": []},
        {"method": "NotifyEvent", "params": {"events": {}}},
        notify("single_push"),  # type: ignore[arg-type]  # an event that is not an object
        notify({"component": 0, "event": "single_push"}),
    ],
)
def test_shelly_gen2_wrong_field_types_are_rejected(value: dict[str, Any]) -> None:
    """Fields read in the wrong shape are bad fields."""
    assert rejected(GEN2, GEN2_RPC, value) == "bad_field"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"event": "S", "event_cnt": 3}, [Reading(press="single")]),
        ({"event": "L", "event_cnt": 4}, [Reading(press="hold")]),
        ({"event": "", "event_cnt": 0}, []),
        ({"event": "LL", "event_cnt": 5}, []),
    ],
)
def test_shelly_gen1_input_event(value: dict[str, Any], expected: list[Reading]) -> None:
    """Gen1 input events are presses; "" (no event yet) and unknown ones are not."""
    assert decode(GEN1, GEN1_EVENT, value) == expected


def test_shelly_gen1_wrong_event_type_is_rejected() -> None:
    """An event that is not a string is a bad field."""
    assert rejected(GEN1, GEN1_EVENT, {"event": 1}) == "bad_field"


@pytest.mark.parametrize(("dev", "topic"), [(GEN2, GEN2_ONLINE), (GEN1, GEN1_ONLINE)])
def test_shelly_online(dev: DeviceConfig, topic: str) -> None:
    """Both generations say online as true/false; anything else is rejected."""
    assert decode(dev, topic, "true") == [Reading(online=True)]
    assert decode(dev, topic, "false", retained=True) == [Reading(online=False)]
    assert rejected(dev, topic, "online") == "bad_field"


# --- retained messages --------------------------------------------------------------


@pytest.mark.parametrize(
    ("dev", "topic", "value", "expected"),
    [
        (
            Z2M,
            Z2M_STATE,
            {"action": "single", "battery": 97, "linkquality": 120},
            [Reading(battery=97)],
        ),
        (Z2M, Z2M_STATE, {"action": "hold"}, []),
        (TASMOTA, TASMOTA_RESULT, {"Button1": {"Action": "SINGLE"}}, []),
        (
            GEN2,
            GEN2_RPC,
            {
                "method": "NotifyEvent",
                "params": {"events": [{"component": "input:0", "event": "single_push"}]},
            },
            [],
        ),
        (GEN1, GEN1_EVENT, {"event": "S", "event_cnt": 3}, []),
    ],
)
def test_retained_button_message_is_no_press(
    dev: DeviceConfig, topic: str, value: dict[str, Any], expected: list[Reading]
) -> None:
    """A retained message is a snapshot: no press, though its other fields count."""
    assert decode(dev, topic, value, retained=True) == expected


def test_retained_snapshot_keeps_occupancy() -> None:
    """A retained radar state still says who is there."""
    value = {"presence": True, "movement": "no_movement", "target_distance": 0.8}
    assert decode(Z2M, Z2M_STATE, value, retained=True) == [Reading(occupancy=True, motion=STILL)]


# --- press vocabularies (docs/devices.md, copied by hand) ----------------------------

Z2M_TABLE = {
    "single": ["single", "on", "toggle", "arrow_left_click", "arrow_right_click", "press"],
    "double": ["double", "off"],
    "triple": ["triple"],
    "quadruple": ["quadruple", "many"],
    "hold": ["hold", "long", "brightness_move_up", "brightness_move_down", "toggle_hold"],
    "release": ["release", "brightness_stop"],
}
TASMOTA_TABLE = {
    "single": ["SINGLE"],
    "double": ["DOUBLE"],
    "triple": ["TRIPLE"],
    "quadruple": ["QUAD", "PENTA"],
    "hold": ["HOLD"],
    "release": ["CLEAR"],
}
GEN2_TABLE = {
    "single": ["single_push"],
    "double": ["double_push"],
    "triple": ["triple_push"],
    "hold": ["long_push"],
}
GEN1_TABLE = {"single": ["S"], "double": ["SS"], "triple": ["SSS"], "hold": ["L"]}


def entries(table: dict[str, list[str]]) -> list[tuple[str, str]]:
    return [(word, press) for press, words in table.items() for word in words]


@pytest.mark.parametrize(
    ("constant", "table"),
    [
        (zigbee2mqtt.PRESSES, Z2M_TABLE),
        (tasmota.PRESSES, TASMOTA_TABLE),
        (shelly.GEN2_PRESSES, GEN2_TABLE),
        (shelly.GEN1_PRESSES, GEN1_TABLE),
    ],
)
def test_vocabulary_constants_are_the_documented_tables(
    constant: dict[str, str], table: dict[str, list[str]]
) -> None:
    """Each module's table holds exactly the documented words, onto PRESS_TYPES."""
    assert dict(constant) == dict(entries(table))
    assert set(constant.values()) <= set(PRESS_TYPES)


@pytest.mark.parametrize(("action", "press"), entries(Z2M_TABLE))
def test_zigbee2mqtt_vocabulary(action: str, press: str) -> None:
    """Every Zigbee2MQTT action in the table is its press."""
    assert decode(Z2M, Z2M_STATE, {"action": action, "linkquality": 80}) == [Reading(press=press)]


@pytest.mark.parametrize(("action", "press"), entries(TASMOTA_TABLE))
def test_tasmota_vocabulary(action: str, press: str) -> None:
    """Every Tasmota button action in the table is its press."""
    value = {"Button1": {"Action": action}}
    assert decode(TASMOTA, TASMOTA_RESULT, value) == [Reading(press=press)]


@pytest.mark.parametrize(("event", "press"), entries(GEN2_TABLE))
def test_shelly_gen2_vocabulary(event: str, press: str) -> None:
    """Every Shelly Gen2 input event in the table is its press."""
    value = notify({"component": "input:0", "id": 0, "event": event, "ts": 1.0})
    assert decode(GEN2, GEN2_RPC, value) == [Reading(press=press)]


@pytest.mark.parametrize(("event", "press"), entries(GEN1_TABLE))
def test_shelly_gen1_vocabulary(event: str, press: str) -> None:
    """Every Shelly Gen1 input event in the table is its press."""
    assert decode(GEN1, GEN1_EVENT, {"event": event, "event_cnt": 7}) == [Reading(press=press)]


# --- never raises -------------------------------------------------------------------

DEVICE_TOPICS = [(dev, topic) for dev in DEVICES for topic in adapters.topics(dev)]

# Keys every adapter reads, so generated objects reach the field checks, not only "ignored".
READ_KEYS = (
    "action battery occupancy presence movement state contact Button1 Button2 Action "
    "Switch1 method params events component event event_cnt"
).split()
WORDS = st.sampled_from(
    [
        w
        for table in (Z2M_TABLE, TASMOTA_TABLE, GEN2_TABLE, GEN1_TABLE)
        for words in table.values()
        for w in words
    ]
    + ["input:0", "NotifyEvent", "online", "offline", "none", "move", "no_presence", "ON", ""]
)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | WORDS
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(READ_KEYS) | st.text(max_size=10), children, max_size=6)
    ),
    max_leaves=25,
)


def check(dev: DeviceConfig, topic: str, value: bytes, retained: bool) -> None:
    result = adapters.decode(dev, topic, value, retained)
    if isinstance(result, Rejected):
        assert result.reason in REASONS
        assert isinstance(result.detail, str)
        assert len(result.detail) < 300
        return
    assert isinstance(result, list)
    assert all(isinstance(reading, Reading) for reading in result)
    assert all(reading != Reading() for reading in result)
    if retained:
        assert all(reading.press is None for reading in result)


@pytest.mark.parametrize(("dev", "topic"), DEVICE_TOPICS, ids=lambda x: getattr(x, "id", x))
@given(value=st.binary(max_size=256), retained=st.booleans())
def test_any_bytes_decode_or_reject(
    dev: DeviceConfig, topic: str, value: bytes, retained: bool
) -> None:
    """For any bytes on any of a device's topics, decode returns readings or a Rejected."""
    check(dev, topic, value, retained)


@pytest.mark.parametrize(("dev", "topic"), DEVICE_TOPICS, ids=lambda x: getattr(x, "id", x))
@given(value=JSON, retained=st.booleans())
def test_any_json_decodes_or_rejects(
    dev: DeviceConfig, topic: str, value: Any, retained: bool
) -> None:
    """For any JSON on any of a device's topics, decode returns readings or a Rejected."""
    check(dev, topic, json.dumps(value).encode(), retained)


@pytest.mark.parametrize(("dev", "topic"), DEVICE_TOPICS, ids=lambda x: getattr(x, "id", x))
@given(value=st.dictionaries(st.sampled_from(READ_KEYS), JSON, max_size=6), retained=st.booleans())
def test_any_object_of_read_fields_decodes_or_rejects(
    dev: DeviceConfig, topic: str, value: dict[str, Any], retained: bool
) -> None:
    """Objects made only of the fields adapters read never make decode raise."""
    check(dev, topic, json.dumps(value).encode(), retained)


@given(topic=st.text(max_size=60), value=st.binary(max_size=64), retained=st.booleans())
def test_any_topic_decodes_or_rejects(topic: str, value: bytes, retained: bool) -> None:
    """Any topic string at all never makes decode raise."""
    for dev in DEVICES:
        check(dev, topic, value, retained)
