"""The real `boothwatch run` process, for tests that need one: kill -9, SIGTERM, the
logs a process writes, sd_notify, the OpenAPI check against a running service.

Each start is a `Run` (spawned, ready, killed), so a test can tell what was due while
the service was dead. The environment is the test's own less every ``BOOTHWATCH_``
variable, plus what the test gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.harness.site import Site

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    """One life of the service process: spawned, ready (readyz 200), killed (SIGKILL)."""

    spawn: float
    ready: float | None = None
    killed: float | None = None


class ServiceProcess:
    """`python -m monitor.cli run --config FILE` as a child process, or ``command`` (an
    installed `boothwatch run`), in ``cwd``; stderr (the logs) appended to ``log``,
    stdout to ``stdout`` if given."""

    def __init__(self, config: Path, http_port: int, log: Path, *,
                 env: Mapping[str, str] | None = None, stdout: Path | None = None,
                 command: Sequence[str] | None = None, cwd: Path = ROOT) -> None:
        self.config, self.http_port, self.log, self.stdout = config, http_port, log, stdout
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BOOTHWATCH_")}
        self.env.update(env or {})
        self.command = list(command or [sys.executable, "-m", "monitor.cli", "run",
                                        "--config", str(config)])
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs: list[Run] = []
        self.kills = 0

    @classmethod
    def of(cls, site: Site, workdir: Path, *, env: Mapping[str, str] | None = None,
           stdout: Path | None = None) -> ServiceProcess:
        """The service of ``site``: its config in workdir/boothwatch.toml, its log in
        workdir/service.log."""
        return cls(site.write(workdir / "boothwatch.toml"), site.http_port,
                   workdir / "service.log", env=env, stdout=stdout)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        self.runs.append(Run(time.time()))
        with self.log.open("ab") as err, contextlib.ExitStack() as files:
            out = (files.enter_context(self.stdout.open("ab")) if self.stdout is not None
                   else subprocess.DEVNULL)
            self.proc = subprocess.Popen(self.command, stdout=out, stderr=err, cwd=self.cwd,
                                         env=self.env)

    async def ready(self, timeout: float = 15.0, every: float = 0.05) -> None:
        """Wait for /readyz to answer 200; fail at once if the process exits."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"service exited with {self.proc.returncode}: "
                                         f"{self.log.read_text()[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.base}/readyz") as resp:
                        if resp.status == 200:
                            if self.runs[-1].ready is None:
                                self.runs[-1].ready = time.time()
                            return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"service not ready within {timeout} s")
                await asyncio.sleep(every)

    def kill(self) -> None:
        """SIGKILL now; `reap` it (or use `kill9`)."""
        assert self.proc is not None
        self.runs[-1].killed = time.time()
        self.proc.send_signal(signal.SIGKILL)
        self.kills += 1

    async def reap(self) -> None:
        assert self.proc is not None
        await asyncio.to_thread(self.proc.wait, 10)

    def kill9(self) -> None:
        """SIGKILL and wait for the process to be gone."""
        self.kill()
        assert self.proc is not None
        self.proc.wait(5)

    async def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM; the exit code (the interface promises 0). The event loop runs on
        meanwhile: the receivers of the pages the service drains at shutdown live on it."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return await asyncio.to_thread(self.proc.wait, timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 5)
                raise
        return self.proc.returncode

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
