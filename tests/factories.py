"""Configs for tests, built from the dataclasses (no TOML)."""

from __future__ import annotations

from dataclasses import replace

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
        channels=channels or {"pager": ChannelConfig(name="pager", type="console")},
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


__all__ = ["make_config", "replace"]
