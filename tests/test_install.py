"""The documented install, run end to end, ending in a page (issue 16's "Done when").

`deploy/install` runs against a throwaway root, a temporary directory with the host's
systemd units copied in, rather than a debootstrap'ed tree. Every step of the install
takes a root directory natively: systemd-sysusers --root writes the root's
/etc/passwd and /etc/group, systemctl --root enables the unit, and the rest are files
under /etc and /opt. A debootstrap'ed tree would add minutes, a Debian mirror and
hundreds of megabytes to prove the same steps, and would still have no running
systemd. So the service is started as its installed unit says, by the test rather
than by systemd: the unit's ExecStartPre and ExecStart command lines, pointed into the
root, with the variables of its EnvironmentFile= and Environment= lines, in the
StateDirectory= systemd would make (owner and mode from the unit and the root's
/etc/passwd); `systemd-analyze verify --root` checks the unit itself against the
installed tree.

Real: the script, systemd-sysusers, systemctl, a venv with this checkout built and
installed into it by pip, the installed `boothwatch` entry point running check-config
and run with the installed config (edited as the docs say) and env file,
make-site-credentials, the shipped Mosquitto config and ACL with its TLS listener,
`mosquitto_pub` over TLS as booth b1, and a webhook receiving the page.
Skipped: PyPI. The venv sees the test's own site-packages on PYTHONPATH, so pip finds
every dependency already there and builds boothwatch without build isolation
(PIP_NO_INDEX, PIP_NO_BUILD_ISOLATION); the test checks that `monitor` itself is
imported from the installed venv. The service runs as the test's user (root), not as
boothwatch: the venv's base Python may sit where boothwatch cannot read (pyenv under
/root); the owners and modes the install gives are checked instead. The broker runs
on free ports and the store lies under the root, so the config names those.
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import importlib.util
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import tomli_w

from monitor import envfile
from tests.harness.broker import free_port, require_mosquitto
from tests.harness.process import ServiceProcess
from tests.harness.receivers import Webhook
from tests.harness.site import WEBHOOK_SECRET
from tests.harness.site_broker import Credentials, SiteBroker, make_credentials

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "deploy" / "install"
CHECK_BROKER = REPO / "deploy" / "mosquitto" / "check-config"
SHIPPED_UNIT = REPO / "deploy" / "systemd" / "boothwatch.service"
SHIPPED_SYSUSERS = REPO / "deploy" / "systemd" / "boothwatch.sysusers"
UNIT = Path("/etc/systemd/system/boothwatch.service")
CONFIG = Path("/etc/boothwatch/boothwatch.toml")
ENV = Path("/etc/boothwatch/env")
VENV = Path("/opt/boothwatch")
HOST_UNITS = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
                   if p.is_dir()), None)


def require_tools(*names: str) -> None:
    """Skip without root or the tools (CI must have them: `make servers` installs them)."""
    if os.geteuid() != 0:
        pytest.skip("the install makes a user and owners: it runs as root")
    missing = [name for name in names if shutil.which(name) is None]
    if HOST_UNITS is None:
        missing.append("systemd's units")
    if missing:
        message = f"{', '.join(missing)} missing (make test installs them: apt-get install systemd)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the integration tests", pytrace=False)
        pytest.skip(message)


def own_site_packages() -> str:
    """Where the test's dependencies are, for the installed venv to find them."""
    paths = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    return os.pathsep.join(paths)


def run_install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ, "PYTHONPATH": own_site_packages(), "PIP_NO_INDEX": "1",
        # pip reads its "no-" options' variables inverted: 0 means --no-build-isolation
        # (pypa/pip#5735)
        "PIP_NO_BUILD_ISOLATION": "0",
    }
    return subprocess.run([sys.executable, str(INSTALL), "--root", str(root), *args],
                          env=env, capture_output=True, text=True, timeout=300, check=False)


@dataclass
class Box:
    """The throwaway root, seen as the site box it stands for."""

    root: Path

    def at(self, path: Path | str) -> Path:
        return self.root / Path(path).relative_to("/")

    def env(self, name: str) -> str | None:
        """A variable of the installed env file, as systemd reads it."""
        return envfile.read(self.at(ENV))[0].get(name)

    def passwd(self, name: str) -> list[str]:
        lines = self.at("/etc/passwd").read_text(encoding="utf-8").splitlines()
        entries = [line.split(":") for line in lines if line.split(":")[0] == name]
        assert len(entries) == 1, f"{name} in /etc/passwd: {entries}"
        return entries[0]

    def unit(self) -> dict[str, list[str]]:
        """The installed unit's settings, "Section.Key" -> values in order."""
        settings: dict[str, list[str]] = defaultdict(list)
        section = ""
        for line in self.at(UNIT).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            settings[f"{section}.{key}"].append(value)
        return settings

    def command(self, line: str) -> list[str]:
        """An Exec line of the unit, its paths pointed into the root."""
        return [str(self.at(word)) if word.startswith("/") else word
                for word in shlex.split(line)]

    def snapshot(self) -> dict[str, tuple[int, int, int, int, int, str]]:
        """Every path under the root: mode, owner, group, size, mtime, link target."""
        found = {}
        for path in [self.root, *self.root.rglob("*")]:
            st = path.lstat()
            target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            found[str(path.relative_to(self.root))] = (
                st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, target)
        return found


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Box:
    """The install, run once for the module into a root that has the host's systemd units."""
    require_tools("systemd-sysusers", "systemctl")
    assert HOST_UNITS is not None
    box = Box(tmp_path_factory.mktemp("box"))
    shutil.copytree(HOST_UNITS, box.at("/usr/lib/systemd/system"), symlinks=True)
    done = run_install(box.root)
    assert done.returncode == 0, done.stdout + done.stderr
    return box


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return make_credentials(tmp_path_factory.mktemp("site") / "credentials", ("b1", "b2"))


def test_install_makes_the_user_files_and_enabled_unit(box: Box) -> None:
    """A system user with no shell, the config for it to read, the env file for root
    alone, the shipped unit enabled; the store's directory is left to systemd."""
    _, _, uid, gid, _, home, shell = box.passwd("boothwatch")
    assert int(uid) < 1000 and home == "/var/lib/boothwatch" and shell.endswith("nologin")
    groups = box.at("/etc/group").read_text(encoding="utf-8").splitlines()
    assert f"boothwatch:x:{gid}:" in groups

    def owned(path: Path) -> tuple[int, int, int]:
        st = box.at(path).stat()
        return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid

    assert owned(CONFIG.parent) == (0o755, 0, 0)
    assert owned(CONFIG) == (0o640, 0, int(gid))
    assert owned(ENV) == (0o600, 0, 0)
    secrets = [line for line in box.at(ENV).read_text(encoding="utf-8").splitlines()
               if line.startswith("BOOTHWATCH_SECRET=")]
    assert len(secrets) == 1 and len(secrets[0].split("=", 1)[1]) == 64
    passwords = [line.split("=", 1)[1] for line in box.at(ENV).read_text(encoding="utf-8")
                 .splitlines() if line.startswith("BOOTHWATCH_BOARD_PASSWORD=")]
    assert len(passwords) == 1 and len(passwords[0]) == 12
    assert box.env("BOOTHWATCH_API_TOKEN") is not None
    assert box.at(UNIT).read_bytes() == SHIPPED_UNIT.read_bytes()
    assert box.at("/etc/sysusers.d/boothwatch.conf").read_bytes() == SHIPPED_SYSUSERS.read_bytes()
    wants = box.at("/etc/systemd/system/multi-user.target.wants/boothwatch.service")
    assert os.readlink(wants) == str(UNIT)
    assert os.access(box.at(VENV / "bin" / "boothwatch"), os.X_OK)
    assert not box.at("/var/lib/boothwatch").exists()


def test_installed_unit_passes_systemd_analyze_verify(box: Box) -> None:
    """`systemd-analyze verify --root` accepts the installed unit, its commands the
    installed ones."""
    require_tools("systemd-analyze")
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={box.root}", UNIT.name],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"}, check=False)
    problems = [line for line in (done.stdout + done.stderr).splitlines()
                if UNIT.name in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr


async def test_installed_service_pages_for_a_test_press_over_tls(
    box: Box, credentials: Credentials, tmp_path: Path
) -> None:
    """The docs' path: install, edit the config, add the broker's password, start the
    service as its unit says; b1's test press with mosquitto_pub over TLS pages Ana, as
    the webhook, /api/incidents and the log show. Running the install again changes
    nothing."""
    require_tools("mosquitto_pub")
    config = box.at(CONFIG)
    assert config.read_bytes() == (REPO / "deploy" / "boothwatch.toml").read_bytes()
    with SiteBroker(tmp_path / "mosquitto", credentials, require_mosquitto()) as broker:
        async with Webhook() as hook:
            # the technician's edits: addresses, the broker account, the pager's secret
            http_port = free_port()
            doc = tomllib.loads(config.read_text(encoding="utf-8"))
            site = doc["site"]["id"]
            doc["mqtt"].update(url=f"mqtt://127.0.0.1:{broker.loopback_port}",
                               username="boothwatch")
            doc["store"]["path"] = str(box.at("/var/lib/boothwatch/boothwatch.db"))
            doc["http"].update(listen=f"127.0.0.1:{http_port}",
                               public_url=f"http://127.0.0.1:{http_port}")
            doc["channels"]["pager"].update(url=hook.url, secret_env="BOOTHWATCH_PAGER_SECRET")
            config.write_text(tomli_w.dumps(doc), encoding="utf-8")  # in place: mode kept
            with box.at(ENV).open("a", encoding="utf-8") as env:  # broker.md's `cat >>`
                env.write((credentials.dir / "boothwatch.env").read_text(encoding="utf-8"))
                env.write(f"BOOTHWATCH_PAGER_SECRET={WEBHOOK_SECRET}\n")

            service = start_as_the_unit_says(box, http_port, tmp_path / "service.log")
            try:
                await service.ready()
                press = json.dumps({"kind": "button", "press": "call", "id": "test-press-1"})
                sent = await asyncio.to_thread(
                    subprocess.run,
                    ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port),
                     "--cafile", credentials.file("ca.crt"),
                     "-u", "b1", "-P", credentials.passwords["b1"], "-V", "mqttv5", "-q", "1",
                     "-t", f"boothwatch/{site}/booths/b1/events", "-m", press],
                    capture_output=True, text=True, timeout=10, check=False)
                # a refused publish exits 0 too, saying "Warning: Publish 1 failed: ..."
                assert (sent.returncode, sent.stdout + sent.stderr) == (0, ""), sent

                (page,) = await hook.wait(1)
                assert (page["booth"], page["responder"], page["triggers"], page["message"]) == (
                    "b1", "ana", ["call"], "Booth 1: call button pressed")
                assert hook.bad_signatures == 0
                # broker.md's curl, with the API token the install made
                auth = {"Authorization": f"Bearer {box.env('BOOTHWATCH_API_TOKEN')}"}
                async with aiohttp.ClientSession(base_url=service.base, headers=auth) as http:
                    async with http.get("/api/incidents?state=open") as resp:
                        incidents = await resp.json()
                    assert [(i["id"], i["booth"], i["state"]) for i in incidents] == [
                        (page["incident"], "b1", "open")]
                    # broker.md's end of the test: resolved, marked as a test
                    async with http.post(f"/api/incidents/{page['incident']}/resolve", json={
                            "responder": "ana", "outcome": "other",
                            "note": "test press at installation"}) as resp:
                        assert resp.status == 200, await resp.text()
                    async with http.get("/api/incidents?state=open") as resp:
                        assert await resp.json() == []
            finally:
                assert await service.stop() == 0
    logged = [json.loads(line) for line in service.log.read_text().splitlines()
              if line.startswith("{")]
    assert any(e["event"] == "incident_raised" and e["booth"] == "b1" for e in logged)
    assert any(e["event"] == "page delivered" for e in logged)

    before = box.snapshot()
    again = run_install(box.root)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "made" not in again.stdout, again.stdout
    assert box.snapshot() == before
    box.passwd("boothwatch")  # still exactly one


def start_as_the_unit_says(box: Box, http_port: int, log: Path) -> ServiceProcess:
    """What systemd does at `systemctl start boothwatch`, less the user switch: make the
    StateDirectory, read the environment, run ExecStartPre, start ExecStart."""
    unit = box.unit()
    _, _, uid, gid, *_ = box.passwd(unit["Service.User"][0])
    (state,) = unit["Service.StateDirectory"]
    state_dir = box.at(Path("/var/lib") / state)
    state_dir.mkdir(parents=True)
    os.chown(state_dir, int(uid), int(gid))
    state_dir.chmod(int(unit["Service.StateDirectoryMode"][0], 8))

    env = {"PYTHONPATH": own_site_packages()}
    for line in unit["Service.Environment"]:
        key, _, value = line.partition("=")
        env[key] = value
    for path in unit["Service.EnvironmentFile"]:
        variables, problems = envfile.read(box.at(path.removeprefix("-")))
        assert problems == []
        env |= variables

    (cwd,) = map(box.at, unit["Service.WorkingDirectory"])
    (start,) = map(box.command, unit["Service.ExecStart"])
    where = subprocess.run([str(Path(start[0]).parent / "python"), "-c",
                            "import monitor; print(monitor.__file__)"],
                           env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True,
                           check=True)
    assert where.stdout.startswith(str(box.at(VENV))), where.stdout

    for line in unit["Service.ExecStartPre"]:
        done = subprocess.run(box.command(line), env={**os.environ, **env}, cwd=cwd,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"{line}:\n{done.stdout}{done.stderr}"
    service = ServiceProcess(box.at(CONFIG), http_port, log, env=env, command=start, cwd=cwd)
    service.start()
    return service


def test_a_python_the_service_user_cannot_run_is_named() -> None:
    """A Python under a directory closed to other users (pyenv under /root, 0700) would make
    a venv the service cannot start from ("Permission denied" at every restart): the
    install names that directory (and refuses, on the box's own root)."""
    loader = importlib.machinery.SourceFileLoader("deploy_install", str(INSTALL))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    install = importlib.util.module_from_spec(spec)
    loader.exec_module(install)
    base = Path(tempfile.mkdtemp(dir="/tmp"))  # /tmp is open to all; pytest's tmp is not
    try:
        base.chmod(0o755)
        closed = base / "closed"
        closed.mkdir(mode=0o700)
        python = closed / "python3.11"
        python.write_bytes(b"")
        python.chmod(0o755)
        link = base / "python"  # a venv's bin/python is a link to the real one
        link.symlink_to(python)
        assert install.closed_to_others(link) == closed
        closed.chmod(0o755)
        assert install.closed_to_others(link) is None
    finally:
        shutil.rmtree(base)


def test_existing_config_env_and_unit_are_kept(tmp_path: Path) -> None:
    """A technician's config, env file and changed unit survive the install: the env
    file gains only the missing BOOTHWATCH_SECRET and loses its loose mode; with
    --no-systemctl nothing is enabled."""
    require_tools("systemd-sysusers")
    box = Box(tmp_path / "box")
    # a venv made before (its pip and entry point), so this run skips pip
    for name in ("pip", "boothwatch"):
        box.at(VENV / "bin" / name).parent.mkdir(parents=True, exist_ok=True)
        box.at(VENV / "bin" / name).write_text("#!/bin/sh\n")
    box.at(CONFIG).parent.mkdir(parents=True)
    box.at(CONFIG).write_text("# mine\n")
    box.at(CONFIG).chmod(0o644)
    box.at(ENV).write_text("BOOTHWATCH_MQTT_PASSWORD=from-the-broker")  # no newline at the end
    box.at(ENV).chmod(0o644)
    box.at(UNIT).parent.mkdir(parents=True)
    box.at(UNIT).write_text(SHIPPED_UNIT.read_text() + "# a local change\n")

    done = run_install(box.root, "--no-systemctl")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (box.at(CONFIG).read_text(), stat.S_IMODE(box.at(CONFIG).stat().st_mode)) == (
        "# mine\n", 0o644)
    lines = box.at(ENV).read_text().splitlines()
    assert lines[0] == "BOOTHWATCH_MQTT_PASSWORD=from-the-broker"
    assert [line.split("=")[0] for line in lines[1:]] == ["BOOTHWATCH_SECRET"]
    assert stat.S_IMODE(box.at(ENV).stat().st_mode) == 0o600
    assert box.at(UNIT).read_text().endswith("# a local change\n")
    assert f"kept {UNIT}, which differs" in done.stdout
    assert not box.at("/etc/systemd/system/multi-user.target.wants").exists()
    box.passwd("boothwatch")


@pytest.fixture
def site_broker(tmp_path: Path, credentials: Credentials) -> Iterator[SiteBroker]:
    with SiteBroker(tmp_path / "mosquitto", credentials, require_mosquitto()) as broker:
        yield broker


def test_broker_check_runs_beside_the_running_broker(site_broker: SiteBroker,
                                                     tmp_path: Path) -> None:
    """The running broker's own config, checked while it runs: `mosquitto -c` alone
    fails on the taken ports; check-config starts a copy, stops it, and leaves the
    running broker's files alone. A broken config fails it with Mosquitto's words."""
    running = site_broker.mosquitto
    config = running.config_path
    naive = subprocess.run([running.binary, "-c", str(config)], capture_output=True,
                           text=True, timeout=10, check=False)
    assert naive.returncode != 0
    assert "Address already in use" in running.log_text()

    data = sorted(p.name for p in running.workdir.iterdir())
    mtimes = {p.name: p.stat().st_mtime_ns for p in running.workdir.iterdir()}
    done = subprocess.run([str(CHECK_BROKER), str(config)], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "running" in done.stdout
    touched = {p.name for p in running.workdir.iterdir()
               if mtimes.get(p.name) != p.stat().st_mtime_ns}
    assert touched <= {running.log_path.name, running.output_path.name}
    assert sorted(p.name for p in running.workdir.iterdir()) == data

    broken = tmp_path / "broken.conf"
    text = config.read_text()
    password_file = f"password_file {site_broker.credentials.dir / 'passwd'}"
    assert password_file in text
    broken.write_text(text.replace(password_file, f"password_file {tmp_path / 'missing'}"))
    done = subprocess.run([str(CHECK_BROKER), str(broken)], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 1 and "Unable to open pwfile" in done.stdout, done
    assert running.running
