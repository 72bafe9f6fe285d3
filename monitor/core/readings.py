"""What one device message says, in firmware-neutral terms. Pure.

Firmware adapters (`devices/adapters/`) turn a topic and payload into
`Reading`s; the device registry turns readings into booth events according to
the device's role, after dropping what did not change (Zigbee2MQTT repeats its
whole state cache in every message) and debouncing chatty sensors.
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.core.events import MotionState

#: normalised button press types; adapters map firmware vocabularies onto these
PRESS_TYPES = ("single", "double", "triple", "quadruple", "hold", "release")


@dataclass(frozen=True, slots=True)
class Reading:
    """Fields a message carried; None means the message said nothing about it."""

    press: str | None = None  # one of PRESS_TYPES: a button event (never from a retained message)
    binary: bool | None = None  # a generic ON/OFF sensor (ESPHome binary_sensor, Tasmota Switch1)
    occupancy: bool | None = None  # someone is there (PIR occupancy, mmWave presence)
    motion: MotionState | None = None  # when the sensor tells moving / still / absent apart
    contact: bool | None = None  # door contact: True = closed
    online: bool | None = None  # availability / LWT / status
    battery: int | None = None  # percent

    def __post_init__(self) -> None:
        if self.press is not None and self.press not in PRESS_TYPES:
            raise ValueError(f"press must be one of {PRESS_TYPES}, got {self.press!r}")
        if self.battery is not None and not 0 <= self.battery <= 100:
            raise ValueError(f"battery must be 0-100, got {self.battery!r}")
