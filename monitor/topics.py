"""The service's own MQTT topics for one site (interface sections 4 and 5)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    site: str

    @property
    def events(self) -> str:
        return f"boothwatch/{self.site}/booths/+/events"

    @property
    def status(self) -> str:
        return f"boothwatch/{self.site}/status"

    @property
    def ack(self) -> str:
        return f"boothwatch/{self.site}/ack"

    @property
    def steps(self) -> str:
        return f"boothwatch/{self.site}/steps"

    @property
    def duty(self) -> str:
        return f"boothwatch/{self.site}/duty"

    def state(self, booth: str) -> str:
        return f"boothwatch/{self.site}/booths/{booth}/state"

    def incident(self, incident: str) -> str:
        return f"boothwatch/{self.site}/incidents/{incident}"
