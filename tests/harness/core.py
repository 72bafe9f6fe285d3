"""The pure core on a hand-stepped clock, and its configs built from the dataclasses.

`CoreDriver` is what the runtime's driver and timer task do, without I/O and
without sleeping: an event is handled at `now`, and moving time forward fires
every deadline on the way, each at its own time (as aioquic's tests do).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

from monitor.core.events import Button, Command, Event, IncidentChanged, Press, SendPage
from monitor.core.settings import (
    BoothConfig,
    ChannelConfig,
    Config,
    HttpConfig,
    MqttConfig,
    Policy,
    ResponderConfig,
    SiteConfig,
    Step,
    StoreConfig,
)
from monitor.core.site import SiteCore

T0 = 1_800_000_000.0


def make_config(
    *,
    booths: int = 2,
    stillness: float = 180.0,
    long_session: float = 1200.0,
    high: Policy | None = None,
    medium: Policy | None = None,
    low: Policy | None = None,
    mqtt_url: str = "mqtt://127.0.0.1:1883",
    store_path: str = "boothwatch.db",
    http_port: int = 8080,
    channels: dict[str, ChannelConfig] | None = None,
    responders: tuple[ResponderConfig, ...] | None = None,
) -> Config:
    host, port = mqtt_url.removeprefix("mqtt://").split(":")
    return Config(
        site=SiteConfig(id="lisbon-1", name="Sala Mouraria", timezone="Europe/Lisbon"),
        mqtt=MqttConfig(url=mqtt_url, host=host, port=int(port), tls=False,
                        client_id="boothwatch-test"),
        store=StoreConfig(path=store_path),
        http=HttpConfig(host="127.0.0.1", port=http_port,
                        public_url=f"http://127.0.0.1:{http_port}"),
        booths=tuple(
            BoothConfig(id=f"b{i}", name=f"Booth {i}", long_session=long_session,
                        stillness=stillness, device_timeout=900.0)
            for i in range(1, booths + 1)
        ),
        channels=channels or {"pager": ChannelConfig(name="pager", type="console",
                                                          watched=True)},
        responders=responders or (
            ResponderConfig(id="ana", name="Ana", roles=("nurse",), channels=("pager",)),
            ResponderConfig(id="rui", name="Rui", roles=("coordinator",), channels=("pager",)),
        ),
        escalation={
            "high": high or Policy(
                steps=(Step(0, ("role:nurse",)), Step(30, ("role:nurse", "role:coordinator"))),
                repeat=60, ack_timeout=120),
            "medium": medium or Policy(steps=(Step(0, ("role:nurse",)),), repeat=300,
                                       ack_timeout=300),
            "low": low or Policy(steps=(Step(0, ("role:coordinator",)),)),
        },
    )


class CoreDriver:
    """A site core plus the time we tell it; every command it gave, with its time, in
    `history`."""

    def __init__(self, config: Config | None = None, *, now: float = T0, ids: str = "inc",
                 start: bool = False) -> None:
        counter = itertools.count(1)
        self.core = SiteCore(config or make_config(), lambda: f"{ids}{next(counter)}")
        self.now = now
        self.history: list[tuple[float, Command]] = []
        if start:
            self.core.start(now)

    def send(self, event: Event) -> list[Command]:
        return self._keep(self.core.handle(event, self.now))

    def advance(self, seconds: float) -> list[Command]:
        """Step time forward, firing every deadline on the way, as the runtime's timer does."""
        return self.at(self.now + seconds)

    def at(self, when: float) -> list[Command]:
        """Move the clock to ``when``, firing every deadline on the way."""
        assert when >= self.now, "time only moves forward"
        out: list[Command] = []
        while (due := self.core.next_deadline()) is not None and due <= when:
            self.now = due
            out.extend(self._keep(self.core.on_timer(due)))
        self.now = when
        return out

    def _keep(self, commands: list[Command]) -> list[Command]:
        self.history.extend((self.now, cmd) for cmd in commands)
        return commands


def pages(commands: list[Command]) -> list[tuple[str, int]]:
    """The pages among ``commands``: (responder, level)."""
    return [(c.responder, c.level) for c in commands if isinstance(c, SendPage)]


def incident(commands: list[Command]) -> IncidentChanged:
    """The last incident change among ``commands``; there must be one."""
    changes = [c for c in commands if isinstance(c, IncidentChanged)]
    assert changes, "expected an incident change"
    return changes[-1]


def call(driver: CoreDriver, booth: str = "b1") -> str:
    """Press call at ``booth``; the id of the incident it raised."""
    return incident(driver.send(Button(booth, Press.CALL))).view.id


__all__ = ["T0", "CoreDriver", "call", "incident", "make_config", "pages", "replace"]
