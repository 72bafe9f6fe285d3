"""A real Caddy for the reverse-proxy test: deploy/caddy/Caddyfile as shipped, in front of
the test's service, on free ports, with its own CA in a private directory.

The shipped file has no global options; the test puts its own block in front of it (free
ports, no admin endpoint, no install of the CA into this box's trust store) and passes the
site name and upstream through the environment placeholders the file reads.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
from pathlib import Path

import aiohttp

from tests.harness.broker import free_port
from tests.harness.daemon import START_TIMEOUT, Daemon, DaemonError, missing

CADDYFILE = Path(__file__).resolve().parents[2] / "deploy" / "caddy" / "Caddyfile"


def require_caddy() -> str:
    found = shutil.which("caddy")
    if found is None:
        missing("caddy is not installed (make test installs it: apt-get install caddy)")
    return found


class Caddy(Daemon):
    """``async with Caddy(...)``: serving https://localhost:<port> in front of ``upstream``."""

    name = "caddy"
    ready_path = "/healthz"  # boothwatch's, through the proxy

    def __init__(self, workdir: Path, binary: str, upstream: str, *,
                 caddyfile: Path = CADDYFILE, env: dict[str, str] | None = None) -> None:
        """`caddyfile`: a shipped file (deploy/pair/Caddyfile for a pair); `env`: more of
        its placeholders (BOOTHWATCH_A, BOOTHWATCH_B)."""
        super().__init__(workdir, binary)
        self.upstream = upstream
        self.caddyfile = caddyfile
        self.env = env or {}
        self.config_path = self.workdir / "Caddyfile"
        self.http_port = 0

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def root_certificate(self) -> Path:
        return self.workdir / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts Caddy's own CA alone, as a phone that installed its root would."""
        return ssl.create_default_context(cafile=str(self.root_certificate))

    def write_config(self) -> None:
        self.http_port = free_port()
        test_options = ("{\n\tadmin off\n\tskip_install_trust\n"
                        f"\thttp_port {self.http_port}\n\thttps_port {{$TEST_HTTPS_PORT}}\n}}\n\n")
        self.config_path.write_text(test_options + self.caddyfile.read_text(encoding="utf-8"),
                                    encoding="utf-8")

    def arguments(self) -> list[str]:
        return ["run", "--config", str(self.config_path), "--adapter", "caddyfile"]

    async def _spawn(self) -> None:
        env = {**os.environ, "HOME": str(self.workdir), "XDG_DATA_HOME": str(self.workdir / "data"),
               "XDG_CONFIG_HOME": str(self.workdir / "config"), "TEST_HTTPS_PORT": str(self.port),
               "BOOTHWATCH_SITE": "localhost", "BOOTHWATCH_UPSTREAM": self.upstream,
               **self.env}
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                self.binary, *self.arguments(), stdin=asyncio.subprocess.DEVNULL, stdout=log,
                stderr=asyncio.subprocess.STDOUT, env=env)

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while loop.time() < deadline:
            if self._process is None or self._process.returncode is not None:
                raise DaemonError(f"caddy exited:\n{self.log_tail()}")
            if self.root_certificate.exists():
                try:
                    async with self.http.get(self.url + self.ready_path,
                                             ssl=self.ssl_context()) as resp:
                        # TLS works; the upstream may not be up yet (502)
                        if resp.status in (200, 502):
                            return
                except (aiohttp.ClientError, ssl.SSLError):
                    pass
            await asyncio.sleep(0.1)
        raise DaemonError(f"caddy not ready on {self.url} within {START_TIMEOUT:g} s:\n"
                          f"{self.log_tail()}")
