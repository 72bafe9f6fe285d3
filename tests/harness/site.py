"""The one writer of site config files, for every test and benchmark that needs one.

A `Site` holds the document as the tables `tomllib` reads back, with the test
site's defaults: two booths, Ana the nurse and Rui the coordinator on one pager
(a console the test watches: what it prints counts as delivered), the three
escalation policies. A test changes what it is about (a booth's
override, a channel, a responder's channels, a wrong value for the config checks)
and writes the file; tomli-w writes the TOML, so every value lands as given.

The interface's own example stays literal text in `tests/test_config.py`: a test
pins that exact file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

SITE = "lisbon-1"
WEBHOOK_SECRET = "hook-secret"

Table = dict[str, Any]


def booth(id: str, name: str | None = None, **overrides: Any) -> Table:
    """``[[booths]]``: ``b3`` is named "Booth 3" unless told; overrides as in the TOML."""
    return {"id": id, "name": name or f"Booth {id.removeprefix('b')}", **overrides}


def booths(count: int) -> list[Table]:
    """b1 .. b<count>."""
    return [booth(f"b{i}") for i in range(1, count + 1)]


def responder(id: str, roles: list[str], channels: list[str], name: str | None = None,
              **extra: Any) -> Table:
    """``[[responders]]``; ``extra`` for address, shifts..."""
    return {"id": id, "name": name or id.capitalize(), "roles": roles, "channels": channels,
            **extra}


def webhook(url: str, *, secret: str | None = WEBHOOK_SECRET, timeout: str = "2s",
            **extra: Any) -> Table:
    """A webhook channel, signed with ``secret`` (the `Webhook` receiver checks it)."""
    table: Table = {"type": "webhook", "url": url, "timeout": timeout, **extra}
    if secret is not None:
        table["secret"] = secret
    return table


def step(after: str | float, *notify: str) -> Table:
    return {"after": after, "notify": list(notify)}


def policy(*steps: Table, repeat: str | None = None, ack_timeout: str | None = None) -> Table:
    table: Table = {"steps": list(steps)}
    if repeat is not None:
        table["repeat"] = repeat
    if ack_timeout is not None:
        table["ack_timeout"] = ack_timeout
    return table


def escalation(step2: str = "1s", repeat: str = "1s", ack_timeout: str = "1.5s"
               ) -> dict[str, Table]:
    """The test policies: high pages the nurse, then at ``step2`` the nurse and the
    coordinator; medium the nurse, low the coordinator."""
    return {
        "high": policy(step("0s", "role:nurse"), step(step2, "role:nurse", "role:coordinator"),
                       repeat=repeat, ack_timeout=ack_timeout),
        "medium": policy(step("0s", "role:nurse"), repeat="1h", ack_timeout="1h"),
        "low": policy(step("0s", "role:coordinator")),
    }


def device(id: str, source: str, topic: str, booth: str, role: str, **extra: Any) -> Table:
    """``[[devices]]``."""
    return {"id": id, "source": source, "topic": topic, "booth": booth, "role": role, **extra}


@dataclass
class Site:
    """A site config; every field is the table of the same name (``site``, ``mqtt`` and
    ``http`` beyond their ids, URL and port)."""

    id: str = SITE
    name: str = "Sala Mouraria"
    timezone: str = "Europe/Lisbon"
    site: Table = field(default_factory=dict)  # language, catalogs
    mqtt_port: int = 1883
    mqtt_url: str | None = None  # else plain MQTT to 127.0.0.1:mqtt_port
    client_id: str = "boothwatch-test"
    mqtt: Table = field(default_factory=dict)  # username, ca_file, protocol, ...
    store: str | Path = "boothwatch.db"
    store_url: str | None = None  # PostgreSQL instead of the SQLite file `store`
    http_port: int = 8080
    http: Table = field(default_factory=dict)  # ack_link_ttl, ...
    defaults: Table = field(default_factory=lambda: {
        "long_session": "20m", "stillness": "3m", "device_timeout": "15m"})
    booths: list[Table] = field(default_factory=lambda: booths(2))
    channels: dict[str, Table] = field(default_factory=lambda: {
        "pager": {"type": "console", "watched": True}})
    responders: list[Table] = field(default_factory=lambda: [
        responder("ana", ["nurse"], ["pager"]), responder("rui", ["coordinator"], ["pager"])])
    escalation: dict[str, Table] = field(default_factory=escalation)
    devices: list[Table] = field(default_factory=list)
    rate_limit: Table | None = None
    self_test: Table | None = None

    def booth(self, id: str) -> Table:
        return next(b for b in self.booths if b["id"] == id)

    def responder(self, id: str) -> Table:
        return next(r for r in self.responders if r["id"] == id)

    def no_rate_limit(self) -> None:
        """For a test that sends bursts from one booth, the flood limit not under test."""
        self.rate_limit = {"rate": 100000, "burst": 100000}

    def document(self) -> Table:
        doc: Table = {
            "site": {"id": self.id, "name": self.name, "timezone": self.timezone, **self.site},
            "mqtt": {"url": self.mqtt_url or f"mqtt://127.0.0.1:{self.mqtt_port}",
                     "client_id": self.client_id, **self.mqtt},
            "store": {"url": self.store_url} if self.store_url else {"path": str(self.store)},
            "http": {"listen": f"127.0.0.1:{self.http_port}",
                     "public_url": f"http://127.0.0.1:{self.http_port}", **self.http},
            "defaults": self.defaults,
            "booths": self.booths,
            "channels": self.channels,
            "responders": self.responders,
            "escalation": self.escalation,
        }
        if self.devices:
            doc["devices"] = self.devices
        if self.rate_limit is not None:
            doc["rate_limit"] = self.rate_limit
        if self.self_test is not None:
            doc["self_test"] = self.self_test
        return doc

    def text(self) -> str:
        return tomli_w.dumps(self.document())

    def write(self, path: Path) -> Path:
        path.write_text(self.text(), encoding="utf-8")
        return path


def service_site(*, mqtt_port: int, http_port: int, webhook_url: str, store: Path,
                 stillness: str = "3m", long_session: str = "20m", step2: str = "1s",
                 repeat: str = "1s", ack_timeout: str = "1.5s",
                 store_url: str | None = None) -> Site:
    """The site the service tests run: Ana and Rui paged on one signed webhook."""
    return Site(mqtt_port=mqtt_port, http_port=http_port, store=store, store_url=store_url,
                defaults={"long_session": long_session, "stillness": stillness,
                          "device_timeout": "15m"},
                channels={"pager": webhook(webhook_url)},
                escalation=escalation(step2, repeat, ack_timeout))


def example_site() -> Site:
    """The interface's example site, as tables (`tests/test_config.py` has its text)."""
    site = Site(client_id="boothwatch-lisbon-1",
                channels={"pager": {"type": "webhook", "url": "http://127.0.0.1:9000/page"},
                          "screen": {"type": "console"}},
                escalation={
                    "high": policy(step("0s", "role:nurse"),
                                   step("30s", "role:nurse", "role:coordinator"),
                                   repeat="60s", ack_timeout="2m"),
                    "medium": policy(step("0s", "role:nurse"), repeat="5m", ack_timeout="5m"),
                    "low": policy(step("0s", "role:coordinator")),
                })
    site.booth("b2")["long_session"] = "30m"
    site.responder("rui")["channels"] = ["pager", "screen"]
    return site
