"""A real PostgreSQL for the tests: a cluster of our own, never the server on 5432.

Debian's ``postgresql`` package (``make servers`` installs it) gives ``initdb`` and
``pg_ctl`` in /usr/lib/postgresql/<version>/bin. `Postgres` makes a cluster with them
in a temporary directory and runs it on a free 127.0.0.1 port, with its socket in
that directory too; the server Debian's package may have started is never used. As
root, both run as the user ``postgres`` (``runuser``): PostgreSQL refuses to run as
root, and the directory is theirs.

One cluster per test session (``initdb`` takes seconds): `database` gives each test
a database of its own, owned by the role the service logs in as (`ROLE`, whose
password, `PASSWORD`, goes in as BOOTHWATCH_DB_PASSWORD does); TCP connections
need the password (scram-sha-256), as a production server's would.

Tests run it with ``fsync=off`` (nothing here survives a power cut anyway);
``durable=True`` keeps PostgreSQL's defaults, for the benchmarks that compare it with
SQLite's ``synchronous=FULL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psycopg

from monitor.store import Store
from monitor.store_postgres import pg_sql
from tests.harness.broker import free_port
from tests.harness.daemon import missing

ROLE = "boothwatch"
PASSWORD = "test-db-password"  # BOOTHWATCH_DB_PASSWORD of the tests' service
_ADMIN_PASSWORD = "test-admin-password"
_PORT_ATTEMPTS = 3  # a free port can be taken by someone else before the server binds it
_LIB = Path("/usr/lib/postgresql")


def find_postgres() -> Path | None:
    """The bin directory of the newest PostgreSQL Debian installed, with initdb and pg_ctl."""
    if not _LIB.is_dir():
        return None
    found = [d / "bin" for d in _LIB.iterdir() if d.name.isdigit()
             and (d / "bin" / "initdb").exists() and (d / "bin" / "pg_ctl").exists()]
    return max(found, key=lambda d: int(d.parent.name), default=None)


def require_postgres() -> Path:
    """The bin directory, else skip the test (fail it under CI)."""
    found = find_postgres()
    if found is None:
        missing("PostgreSQL is not installed (make test installs it: apt-get install postgresql)")
    return found


class PostgresError(RuntimeError):
    """The cluster could not be made or started; the message has the tail of its log."""


class Postgres:
    """``with Postgres(bindir):`` a started cluster; stopped and removed after."""

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.bindir = bindir
        self.durable = durable
        self.host = "127.0.0.1"
        self.port = 0
        self.workdir = Path(tempfile.mkdtemp(prefix="boothwatch-pg-"))
        self.data = self.workdir / "data"
        self.log_path = self.workdir / "postgres.log"
        self._databases = 0

    # --- the cluster ---------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self._initdb()
            self.start()
            with self.admin() as conn:
                conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def start(self) -> None:
        """Start the server (a restart keeps its port) and return once it accepts us."""
        fixed = self.port != 0
        for attempt in range(1 if fixed else _PORT_ATTEMPTS):
            if not fixed:
                self.port = free_port()
            settings = {
                "port": str(self.port), "listen_addresses": self.host,
                "unix_socket_directories": str(self.workdir),
                # few connections and little memory: the box is shared with the other tests
                "max_connections": "250", "shared_buffers": "16MB",
            }
            if not self.durable:
                settings |= {"fsync": "off", "full_page_writes": "off"}
            options = " ".join(f"-c {key}={value}" for key, value in settings.items())
            done = self._run(["pg_ctl", "-D", str(self.data), "-l", str(self.log_path),
                              "-w", "-t", "30", "-o", options, "start"])
            if done.returncode == 0:
                return
            lost_race = "already in use" in self.log_tail()
            if not lost_race or fixed or attempt == _PORT_ATTEMPTS - 1:
                raise PostgresError(f"pg_ctl start failed ({done.returncode}): "
                                    f"{done.stdout}\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server (fast: clients are disconnected); safe when it is not running."""
        if (self.data / "postmaster.pid").exists():
            self._run(["pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # --- databases -------------------------------------------------------------------------

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        """A superuser connection (autocommit), over TCP with its password."""
        return psycopg.connect(host=self.host, port=self.port, user="postgres",
                               password=_ADMIN_PASSWORD, dbname=dbname, autocommit=True)

    def database(self) -> str:
        """A new, empty database owned by ROLE: its URL (no password in it)."""
        self._databases += 1
        name = f"test_{self._databases}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {ROLE}")
        return self.url(name)

    def drop(self, url: str) -> None:
        """Remove a database made by `database`, closing whatever is still connected."""
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")

    def url(self, dbname: str, user: str = ROLE) -> str:
        return f"postgresql://{user}@{self.host}:{self.port}/{dbname}"

    # --- running the binaries ----------------------------------------------------------------

    def _initdb(self) -> None:
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(_ADMIN_PASSWORD + "\n", encoding="utf-8")
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        done = self._run(["initdb", "-D", str(self.data), "-U", "postgres",
                          f"--pwfile={pwfile}", "--auth-local=trust",
                          "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8",
                          "--no-sync"])
        pwfile.unlink()
        if done.returncode != 0:
            raise PostgresError(f"initdb failed ({done.returncode}): {done.stdout}")

    def _run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=60, check=False)


@dataclass(frozen=True)
class StoreAt:
    """Where a test's store is, on either backend: a SQLite file or a PostgreSQL URL (and
    its password); it opens the `Store` there, or reads its rows as another process would."""

    backend: str  # "sqlite" | "postgresql"
    where: str
    password: str | None = None

    async def open(self, **kw: Any) -> Store:
        return await Store.open(self.where, password=self.password, **kw)

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of `sql` (``?`` parameters), read on a connection of its own."""
        if self.backend == "sqlite":
            import sqlite3

            with sqlite3.connect(self.where) as db:
                return [tuple(r) for r in db.execute(sql, args)]
        with psycopg.connect(self.where, password=self.password, autocommit=True) as conn:
            return [tuple(r) for r in conn.execute(pg_sql(sql), args).fetchall()]

    def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        """Run a statement (``?`` parameters) on a connection of its own, committed."""
        if self.backend == "sqlite":
            import sqlite3

            with sqlite3.connect(self.where) as db:
                db.execute(sql, args)
            return
        with psycopg.connect(self.where, password=self.password, autocommit=True) as conn:
            conn.execute(pg_sql(sql), args)


@contextlib.asynccontextmanager
async def writing(at: StoreAt, **kw: Any) -> AsyncIterator[Store]:
    """The store open with its writer running; everything committed and closed after."""
    store = await at.open(**kw)
    writer = asyncio.create_task(store.run_writer())
    try:
        yield store
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await store.drain()
        await store.close()
