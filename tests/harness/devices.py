"""One device of each firmware, as the adapter and fuzz tests use them."""

from __future__ import annotations

from monitor.core.settings import DeviceConfig, DeviceRole, DeviceSource


def device(source: DeviceSource, topic: str, role: DeviceRole = "call_button") -> DeviceConfig:
    return DeviceConfig(id=f"{source}-dev", source=source, topic=topic, booth="b1", role=role)


Z2M = device("zigbee2mqtt", "zigbee2mqtt/booth1-button")
ESPHOME = device("esphome", "booth1/binary_sensor/door/state", "door")
TASMOTA = device("tasmota", "booth1-button")
GEN2 = device("shelly", "shellyplus1-a8032ab12345")
GEN1 = device("shelly", "shellies/shellybutton1-E8DB84D12345")
DEVICES = (Z2M, ESPHOME, TASMOTA, GEN2, GEN1)
