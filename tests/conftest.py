"""Shared fixtures: a real Mosquitto per test and a publisher that waits for the broker's ack."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

# the harness's own asserts explain themselves as a test's do
pytest.register_assert_rewrite("tests.harness")

from monitor.logs import PRIVACY  # noqa: E402
from tests.harness.broker import Mosquitto, Publish, Publisher, require_mosquitto  # noqa: E402
from tests.harness.postgres import PASSWORD, Postgres, StoreAt, require_postgres  # noqa: E402
from tests.harness.receivers import Webhook  # noqa: E402


@pytest.fixture(autouse=True)
def _privacy_forgets_the_site() -> Iterator[None]:
    """The log redaction is process-wide (structlog's processors are): a runtime started by
    one test must not decide what another test's log lines show."""
    yield
    PRIVACY.reset()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A started Mosquitto on a free 127.0.0.1 port with its own config, stopped afterwards."""
    broker = Mosquitto(tmp_path / "mosquitto", binary=require_mosquitto())
    with broker:
        yield broker


@pytest.fixture
def mqtt_publish(mosquitto: Mosquitto) -> Iterator[Publish]:
    """A function that publishes through one MQTT v5 client and returns once the broker has it."""
    publisher = Publisher(mosquitto.host, mosquitto.port)
    try:
        yield publisher.publish
    finally:
        publisher.close()


@pytest.fixture
async def hook() -> AsyncIterator[Webhook]:
    """The test site's pager, a real HTTP server."""
    async with Webhook() as webhook:
        yield webhook


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL cluster for the whole test session, started when a test first needs it
    (tests/harness/postgres.py); each test takes a database of its own from it."""
    with Postgres(require_postgres()) as server:
        yield server


@pytest.fixture
def postgres_url(postgres: Postgres) -> Iterator[str]:
    """A fresh, empty database of the session's cluster; dropped after the test."""
    url = postgres.database()
    yield url
    postgres.drop(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_at(request: pytest.FixtureRequest, tmp_path: Path) -> StoreAt:
    """The test's store on each backend in turn: a new SQLite file, a new PostgreSQL
    database (the cluster starts only when a test asks for this one)."""
    if request.param == "sqlite":
        return StoreAt("sqlite", str(tmp_path / "s.db"))
    return StoreAt("postgresql", request.getfixturevalue("postgres_url"), PASSWORD)
