"""A server the tests run as their own child process: Prometheus, Alertmanager.

Each runs from a config the test writes, in a private directory, on a free 127.0.0.1
port, never the system's service on its standard port (Debian's packages may start one).
It is ready when its readiness path answers 200, and stopped with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self

import aiohttp
import pytest

from tests.harness.broker import free_port

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
_PORT_ATTEMPTS = 3  # a free port can be taken by someone else before the server binds it


def missing(message: str) -> NoReturn:
    """Skip the test for a server that is not installed; fail it under CI, which must run
    the integration tests."""
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run the integration tests", pytrace=False)
    pytest.skip(message)


class DaemonError(RuntimeError):
    """The server did not start, or refused a request; the message says which and why."""


class Daemon:
    """``async with``: started and ready inside, stopped after. A subclass names the server,
    writes its config and gives its command line."""

    name = "server"
    ready_path = "/-/ready"

    def __init__(self, workdir: Path, binary: str) -> None:
        self.binary = binary
        self.workdir = Path(workdir)
        self.log_path = self.workdir / f"{self.name}.log"
        self.port = 0
        self._process: asyncio.subprocess.Process | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None, f"{self.name} not started"
        return self._http

    def write_config(self) -> None:
        raise NotImplementedError

    def arguments(self) -> list[str]:
        """The command line after the binary, for a server on ``self.port``."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        for attempt in range(_PORT_ATTEMPTS):
            self.port = free_port()
            await self._spawn()
            try:
                await self._wait_ready()
                return
            except DaemonError:
                lost_race = "address already in use" in self.log_text()
                await self._terminate()
                if not lost_race or attempt == _PORT_ATTEMPTS - 1:
                    await self.stop()
                    raise

    async def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL); safe to call more than once."""
        await self._terminate()
        if self._http is not None:
            await self._http.close()
            self._http = None

    def log_text(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    async def _spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                self.binary,
                *self.arguments(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while loop.time() < deadline:
            if self._process is None or self._process.returncode is not None:
                code = None if self._process is None else self._process.returncode
                raise DaemonError(f"{self.name} exited with {code}:\n{self.log_tail()}")
            try:
                async with self.http.get(self.url + self.ready_path) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise DaemonError(f"{self.name} not ready on {self.url} within {START_TIMEOUT:g} s:\n"
                          f"{self.log_tail()}")

    async def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
