"""The shipped broker config, run as it is, with a site's credentials.

`make_credentials` runs deploy/mosquitto/make-site-credentials; `SiteBroker` runs
deploy/mosquitto/mosquitto.conf and deploy/mosquitto/acl with them, changing only file
paths, ports, the log destination and the process user (`changed_lines` says what else
differs, so a test can check that nothing does). Its TLS listener (8883 in the file) is
`port`, its loopback listener (1883) `loopback_port`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from tests.harness.broker import Mosquitto, free_port
from tests.harness.site import SITE

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
DEPLOY_CONF = DEPLOY / "mosquitto.conf"
DEPLOY_ACL = DEPLOY / "acl"
SCRIPT = DEPLOY / "make-site-credentials"

# The directives a test broker may change, and nothing else. Files keep their names.
FILES = ("cafile", "certfile", "keyfile", "password_file", "acl_file")
SUBSTITUTED = (*FILES, "listener", "persistence_location", "log_dest", "user")


def directive(line: str) -> str:
    stripped = line.strip()
    return "" if not stripped or stripped.startswith("#") else stripped.split()[0]


def changed_lines(deploy: str, running: str) -> list[str]:
    """Where ``running`` differs from ``deploy`` other than by SUBSTITUTED values."""
    ours, theirs = deploy.splitlines(), running.splitlines()
    if len(ours) != len(theirs):
        return [f"{len(theirs)} lines instead of {len(ours)}"]
    problems = []
    for number, (want, got) in enumerate(zip(ours, theirs, strict=True), 1):
        key = directive(want)
        if want == got:
            continue
        if key not in SUBSTITUTED or directive(got) != key:
            problems.append(f"line {number}: {got!r} instead of {want!r}")
        elif key in FILES and Path(got.split()[1]).name != Path(want.split()[1]).name:
            problems.append(f"line {number}: {got!r} names another file than {want!r}")
    return problems


@dataclass(frozen=True)
class Credentials:
    dir: Path
    passwords: dict[str, str]

    def file(self, name: str) -> str:
        return str(self.dir / name)


def make_credentials(out: Path, booths: Sequence[str], devices: Sequence[str] = (),
                     *, zigbee2mqtt: bool = False) -> Credentials:
    """The test site's CA, certificates and accounts, made by the deploy script (for the
    hosts 127.0.0.1 and localhost); no password may appear in its output."""
    done = subprocess.run(
        [str(SCRIPT), "--site", SITE, "--out", str(out), "--host", "127.0.0.1",
         "--host", "localhost", "--booths", *booths,
         *(["--zigbee2mqtt"] if zigbee2mqtt else []),
         *(arg for device in devices for arg in ("--device", device))],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = (out / "passwords").read_text(encoding="utf-8").splitlines()
    passwords = dict(line.split(":", 1) for line in lines)
    for secret in passwords.values():
        assert secret not in done.stdout + done.stderr, "a password was printed"
    return Credentials(out, passwords)


class SiteBroker:
    """Mosquitto with the deploy config: ``port`` is the TLS listener, ``loopback_port`` 1883's."""

    def __init__(self, workdir: Path, credentials: Credentials, binary: str) -> None:
        self.credentials = credentials
        self.loopback_port = 0
        self.mosquitto = Mosquitto(workdir, binary=binary, config=self._render)

    @property
    def port(self) -> int:
        return self.mosquitto.port

    def __enter__(self) -> Self:
        """Start it, and check that it runs the deploy file with only the allowed changes."""
        self.mosquitto.start()
        try:
            running = self.mosquitto.config_text()
            assert changed_lines(DEPLOY_CONF.read_text(encoding="utf-8"), running) == []
        except BaseException:
            self.mosquitto.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.mosquitto.stop()

    def _render(self, broker: Mosquitto) -> str:
        self.loopback_port = free_port()
        ports = {"1883": self.loopback_port, "8883": broker.port}
        out = []
        for line in DEPLOY_CONF.read_text(encoding="utf-8").splitlines():
            key = directive(line)
            words = line.split()
            if key == "listener":
                # a test broker listens on loopback only, whatever the address in the file
                out.append(f"listener {ports[words[1]]} 127.0.0.1")
            elif key == "acl_file":
                out.append(f"acl_file {DEPLOY_ACL}")  # the shipped file itself
            elif key in FILES:
                out.append(f"{key} {self.credentials.dir / Path(words[1]).name}")
            elif key == "persistence_location":
                out.append(f"persistence_location {broker.workdir}/")
            elif key == "log_dest":
                out.append(f"log_dest file {broker.log_path}")  # where Mosquitto looks for it
            elif key == "user" and os.geteuid() == 0:
                out.append("user root")  # the packaged user could not read our temporary files
            else:
                out.append(line)
        return "\n".join(out) + "\n"
