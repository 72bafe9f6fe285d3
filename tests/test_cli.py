"""The command line as an operator meets it, run as real processes: check-config checks
what `run` will need (secrets in the unit's env file, the store's directory, files the
service's user must read); `run` ends an operator's mistake with one line naming it and
a status of its own, and keeps retrying a broker that refuses it; options anywhere in the
line; a description per command; a closed pipe ends quietly."""

from __future__ import annotations

import argparse
import contextlib
import grp
import json
import os
import pwd
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.access import User, as_user
from monitor.cli import _parser, main
from monitor.store import SCHEMA_VERSION, Store
from tests.harness.broker import Mosquitto, free_port, require_mosquitto
from tests.harness.postgres import PASSWORD, ROLE, StoreAt
from tests.harness.process import ROOT, ServiceProcess
from tests.harness.service import eventually
from tests.harness.site import Site, booths, webhook

pytestmark = pytest.mark.integration

AS_ROOT = os.geteuid() == 0
PASSWORD_ENV = "BOOTHWATCH_MQTT_PASSWORD"


def boothwatch(*args: str, user: str | None = None, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    """`boothwatch ARGS` in a clean environment (no BOOTHWATCH_ variable but `env`), as
    `user` if given (only root can)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BOOTHWATCH_")}
    python = [sys.executable]
    if user is not None:
        python, more = _python_for(User.named(user))
        clean |= more
    return subprocess.run([*python, "-m", "monitor.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60, env={**clean, **(env or {})},
                          user=user, group=User.named(user).gid if user else None,
                          extra_groups=[] if user else None, check=False)


def _python_for(user: User) -> tuple[list[str], dict[str, str]]:
    """A Python that `user` may run, with this project and its packages importable: ours,
    or (ours lives under root's home) the system's of the same version, pointed at our
    packages; else the test is skipped, saying why."""
    packages = sysconfig.get_path("purelib")
    system = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}",
                          path="/usr/bin:/bin")
    candidates: list[tuple[str, dict[str, str]]] = [(sys.executable, {})] + (
        [(system, {"PYTHONPATH": f"{ROOT}{os.pathsep}{packages}"})] if system else [])
    for python, env in candidates:
        if as_user(user, lambda python=python: [  # type: ignore[misc]
                None if os.access(python, os.X_OK) and os.access(packages, os.R_OK | os.X_OK)
                and os.access(ROOT / "monitor" / "cli.py", os.R_OK) else "no"]) == [None]:
            return [python], env
    pytest.skip(f"no Python that user {user.name} may run with this project's packages "
                f"({sys.executable} and {packages} are closed to {user.name})")


def offline_site(workdir: Path, **kw: object) -> Site:
    """A site whose broker and webhook are nowhere: what `run` does before it connects."""
    site = Site(mqtt_port=free_port(), http_port=free_port(), store=workdir / "bw.db")
    for key, value in kw.items():
        setattr(site, key, value)
    return site


def log_lines(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can read (pytest's own are root's alone): for a test that
    runs a process as another user."""
    with tempfile.TemporaryDirectory(prefix="boothwatch-cli-") as name:
        os.chmod(name, 0o755)
        yield Path(name)


@pytest.fixture
def closed_store(shared_dir: Path) -> tuple[Path, str | None]:
    """A store path in a directory the service's user cannot write, and that user: as
    root, nobody (the directory is root's, 0755); else ourselves (the directory 0555)."""
    directory = shared_dir / "store"
    directory.mkdir(mode=0o755)
    if not AS_ROOT:
        directory.chmod(0o555)
    return directory / "bw.db", "nobody" if AS_ROOT else None


# --------------------------------------------------------------------------- the parser


def test_every_command_has_a_one_line_description(capsys: pytest.CaptureFixture[str]) -> None:
    """`boothwatch CMD --help` opens with one line saying what CMD does; `boothwatch --help`
    lists the same words."""
    commands = next(action.choices for action in _parser()._actions
                    if isinstance(action, argparse._SubParsersAction))
    assert set(commands) == {"run", "check-config", "config-schema", "demo", "sim",
                             "report", "test-page", "test-booth"}
    with pytest.raises(SystemExit):
        main(["--help"])
    overview = " ".join(capsys.readouterr().out.split())
    for name in commands:
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0
        paragraphs = capsys.readouterr().out.split("\n\n")
        description = paragraphs[1]
        assert "\n" not in description and description.endswith("."), (name, description)
        assert f"{description[0].lower()}{description[1:-1]}" in overview, name


@pytest.mark.parametrize("argv", [
    ["--log-format", "console", "run", "--config", "X"],
    ["run", "--config", "X", "--log-format", "console"],
    ["run", "--log-format", "console", "--config", "X"],
    ["check-config", "X", "--log-format", "console"],
    ["report", "--db", "X", "--log-format", "console"],
    ["test-page", "--config", "X", "--responder", "ana", "--log-format", "console"],
    ["sim", "--booths", "1", "--format", "canonical", "--log-format", "console"],
    ["demo", "--log-format", "console"],
    ["config-schema", "--log-format", "console"],
    ["--log-format", "json", "demo", "--log-format", "console"],  # the last one wins
])
def test_log_format_anywhere_in_the_line(argv: list[str]) -> None:
    """--log-format is read before the command and after it, by every command."""
    assert _parser().parse_args(argv).log_format == "console"


def test_no_log_format_leaves_each_command_its_default() -> None:
    assert not hasattr(_parser().parse_args(["run", "--config", "X"]), "log_format")


@pytest.mark.parametrize("argv", [
    ["run", "--config", "X"],
    ["--log-format", "console", "run", "--config", "X"],
    ["check-config", "X"],
])
def test_other_commands_leave_the_simulator_and_the_report_unimported(argv: list[str]) -> None:
    """The parser of `run` (and the other light commands) reads its line as the full one
    does, without importing the simulator or the report: the service starts sooner."""
    code = ("import sys; from monitor.cli import _command_of, _parser; "
            f"args = _parser(_command_of({argv!r})).parse_args({argv!r}); "
            "print(sorted(m for m in ('devices.simulator', 'monitor.report', "
            "'monitor.report_cli') if m in sys.modules)); print(vars(args))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.splitlines()
    assert out[0] == "[]"
    assert out[1] == str(vars(_parser().parse_args(argv)))


# --------------------------------------------------------------------------- run


def test_run_names_a_missing_store_directory_in_the_log_format_asked(tmp_path: Path) -> None:
    """A store in a directory that does not exist: one critical line naming the path,
    exit 73, no traceback; --log-format after the command is obeyed."""
    config = offline_site(tmp_path, store=tmp_path / "nowhere" / "bw.db").write(
        tmp_path / "site.toml")
    done = boothwatch("run", "--config", str(config), "--log-format", "console")
    assert done.returncode == 73, done.stderr
    assert "Traceback" not in done.stderr and not log_lines(done.stderr)
    assert "[critical ] cannot_run" in done.stderr
    assert f"directory {tmp_path / 'nowhere'} does not exist" in done.stderr
    done = boothwatch("--log-format", "json", "run", "--config", str(config))
    (line,) = log_lines(done.stderr)
    assert (done.returncode, line["level"], line["exit_status"]) == (73, "critical", 73)
    assert line["path"] == str(tmp_path / "nowhere" / "bw.db")
    assert line["problem"] == (f"cannot open the store {tmp_path / 'nowhere' / 'bw.db'}: "
                               f"directory {tmp_path / 'nowhere'} does not exist (SQLite: "
                               "unable to open database file)")


def test_run_of_a_directory_names_every_problem_by_its_file(tmp_path: Path) -> None:
    """`run --config DIR`: a file that does not load and two sites sharing a client id are
    each named with their own file, before anything starts (exit 2); an empty directory
    says so."""
    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / "a.toml").write_text("[site]\nid = 'a'\n")  # nearly everything missing
    offline_site(tmp_path, id="b", client_id="shared").write(sites / "b.toml")
    offline_site(tmp_path, id="c", client_id="shared").write(sites / "c.toml")
    done = boothwatch("run", "--config", str(sites))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert any(line.startswith("config: a.toml: ") for line in lines), done.stderr
    assert ("config: c.toml: mqtt.client_id: the same as in b.toml; each site needs its "
            "own") in lines, done.stderr
    assert not any(line.startswith(("config: b.toml", "config: c.toml: site.id"))
                   for line in lines), done.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    done = boothwatch("run", "--config", str(empty))
    assert done.returncode == 2
    assert f"config: {empty}: no *.toml site config in it" in done.stderr


def test_run_names_a_store_directory_its_user_cannot_write(
        shared_dir: Path, closed_store: tuple[Path, str | None]) -> None:
    """The service's user cannot create files in the store's directory: exit 73, the
    line names the user, the directory and its owner and mode."""
    store, user = closed_store
    config = offline_site(shared_dir, store=store).write(shared_dir / "site.toml")
    done = boothwatch("run", "--config", str(config), user=user)
    assert done.returncode == 73, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = log_lines(done.stderr)
    who = user or User.current().name
    assert f"user {who} cannot create files in {store.parent} (owner " in str(line["problem"])


def test_run_names_a_full_disk(tmp_path: Path) -> None:
    """A store on a full file system: exit 73, "no space left" and the directory."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"a full disk needs a small tmpfs, and mount says: {mounted.stderr.strip()}")
    try:
        with contextlib.suppress(OSError), (disk / "filler").open("wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        config = offline_site(tmp_path, store=disk / "bw.db").write(tmp_path / "site.toml")
        done = boothwatch("run", "--config", str(config))
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    assert done.returncode == 73, done.stderr
    (line,) = log_lines(done.stderr)
    assert f"no space left on the file system of {disk} to create the store" in str(
        line["problem"])


def test_run_names_an_http_address_in_use(tmp_path: Path) -> None:
    """Another program on the HTTP port: exit 69, the address and the config key named."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        site = offline_site(tmp_path, http_port=taken.getsockname()[1])
        done = boothwatch("run", "--config", str(site.write(tmp_path / "site.toml")))
    assert done.returncode == 69, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    line = next(line for line in log_lines(done.stderr) if line["event"] == "cannot_run")
    assert line["address"] == f"127.0.0.1:{site.http_port}"
    assert str(line["problem"]).startswith(
        f"cannot listen on 127.0.0.1:{site.http_port} (http.listen): ")


def _locked_broker(password_file: Path) -> object:
    def render(broker: Mosquitto) -> str:
        lines = [f"listener {broker.port} 127.0.0.1", "allow_anonymous false",
                 f"password_file {password_file}", f"log_dest file {broker.log_path}",
                 "log_type error", "log_type warning", "log_type notice",
                 "log_type information"]
        return "\n".join(lines + (["user root"] if AS_ROOT else [])) + "\n"
    return render


def _set_password(password_file: Path, password: str) -> None:
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(password_file), "boothwatch",
                    password], check=True, capture_output=True)


async def test_run_keeps_retrying_a_broker_that_refuses_it_and_names_the_variable(
        tmp_path: Path) -> None:
    """The broker refuses the service's account: one critical line names the user and
    BOOTHWATCH_MQTT_PASSWORD (not one per attempt), the service keeps running, and once the
    broker's password file is fixed it connects by itself. `report` without a config then
    shows the site's time zone, which the service recorded in the store."""
    password_file = tmp_path / "passwords"
    _set_password(password_file, "the-brokers-idea")
    broker = Mosquitto(tmp_path / "mosquitto", binary=require_mosquitto(),
                       config=_locked_broker(password_file))  # type: ignore[arg-type]
    with broker:
        site = offline_site(tmp_path, mqtt_port=broker.port, mqtt={"username": "boothwatch"})
        service = ServiceProcess.of(site, tmp_path, env={PASSWORD_ENV: "the-services-idea"})
        service.start()
        try:
            def refused() -> list[dict[str, object]]:
                return [line for line in log_lines(service.log.read_text())
                        if line["event"] == "mqtt_not_authorized"]

            (line,) = await eventually(refused, timeout=15)
            assert (line["level"], line["user"], line["broker"]) == (
                "critical", "boothwatch", f"127.0.0.1:{broker.port}")
            assert PASSWORD_ENV in str(line["fix"]) and line["retrying"] is True
            assert "the-services-idea" not in service.log.read_text()
            _set_password(password_file, "the-services-idea")  # the operator's fix
            broker.reload()
            await service.ready(timeout=20)
            assert len(refused()) == 1  # at most one line a minute while it lasted
        finally:
            assert await service.stop() == 0
    done = boothwatch("report", "--db", str(tmp_path / "bw.db"))
    assert done.returncode == 0, done.stderr
    assert "Europe/Lisbon time (UTC" in done.stdout.splitlines()[0]


# --------------------------------------------------------------------------- check-config


def _secret_site(workdir: Path) -> Path:
    """A site with a broker account and a signed webhook whose secret is in PAGER_SECRET."""
    site = offline_site(workdir, mqtt={"username": "boothwatch"})
    site.channels = {"pager": webhook("http://127.0.0.1:9/page", secret=None,
                                      secret_env="PAGER_SECRET")}
    return site.write(workdir / "site.toml")


async def test_check_config_connects_to_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """[store] url: check-config connects with the service's environment (the env file's
    BOOTHWATCH_DB_PASSWORD, or libpq's PGPASSFILE named there) and names store.url when the
    database refuses us, or when a newer boothwatch migrated it (store.path for SQLite)."""
    config = offline_site(tmp_path, store_url=postgres_url).write(tmp_path / "site.toml")
    env = tmp_path / "env"
    env.write_text(f"BOOTHWATCH_DB_PASSWORD={PASSWORD}\n")
    done = boothwatch("check-config", str(config), "--env-file", str(env))
    assert done.returncode == 0, done.stderr
    assert (f"store: {postgres_url} (PostgreSQL, password from BOOTHWATCH_DB_PASSWORD)"
            in done.stdout) and PASSWORD not in done.stdout
    pgpass = tmp_path / "pgpass"  # libpq's password file, as the service's env names it
    pgpass.write_text(f"*:*:*:{ROLE}:{PASSWORD}\n")
    pgpass.chmod(0o600)
    env.write_text(f"PGPASSFILE={pgpass}\n")
    done = boothwatch("check-config", str(config), "--env-file", str(env))
    assert done.returncode == 0, done.stderr
    env.write_text("")
    done = boothwatch("check-config", str(config), "--env-file", str(env))
    assert done.returncode == 2 and ("no password supplied (set BOOTHWATCH_DB_PASSWORD in "
                                     "the service's environment") in done.stderr
    env.write_text("BOOTHWATCH_DB_PASSWORD=wrong\n")
    done = boothwatch("check-config", str(config), "--env-file", str(env))
    assert done.returncode == 2
    problem = done.stderr.splitlines()[1]
    assert problem.startswith(f"  store.url: cannot connect to {postgres_url}: ")
    assert "password authentication failed" in problem
    # a store that a newer boothwatch migrated, on either backend
    sqlite_config = offline_site(tmp_path).write(tmp_path / "sqlite.toml")
    for at in (StoreAt("postgresql", postgres_url, PASSWORD),
               StoreAt("sqlite", str(tmp_path / "bw.db"))):
        await (await at.open()).close()
        at.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                   (str(SCHEMA_VERSION + 1),))
        done = boothwatch("check-config", str(sqlite_config if at.backend == "sqlite"
                                              else config),
                          env={"BOOTHWATCH_DB_PASSWORD": PASSWORD})
        key = "store.path" if at.backend == "sqlite" else "store.url"
        assert done.returncode == 2, done.stdout
        assert done.stderr.splitlines()[1:] == [
            f"  {key}: the store {at.where} has schema version {SCHEMA_VERSION + 1}, newer "
            f"than this boothwatch knows ({SCHEMA_VERSION}): a newer boothwatch wrote it; "
            "run that version again (or restore the backup taken before the upgrade)"]


def test_check_config_reads_the_secrets_from_the_env_file(tmp_path: Path) -> None:
    """Secrets the config names must be in --env-file (without it, in the environment):
    each missing one is a problem naming its variable; a line systemd would ignore is
    named too."""
    config, env = _secret_site(tmp_path), tmp_path / "env"
    env.write_text("BOOTHWATCH_SECRET=abc\nexport BOOTHWATCH_MQTT_PASSWORD=pw\n")
    done = boothwatch("check-config", str(config), "--env-file", str(env))
    assert done.returncode == 2
    assert done.stderr.splitlines()[1:] == [
        f'  {env} line 2: "export BOOTHWATCH_MQTT_PASSWORD": systemd ignores the line (it '
        'reads no "export"): write it as BOOTHWATCH_MQTT_PASSWORD=...',
        '  mqtt.username: "boothwatch" needs a password: environment variable '
        "BOOTHWATCH_MQTT_PASSWORD is not set",
        "  channels.pager.secret_env: environment variable PAGER_SECRET is not set",
    ]
    env.write_text("BOOTHWATCH_MQTT_PASSWORD='pw with # and spaces'\nPAGER_SECRET=s3\n")
    done = boothwatch("check-config", str(config), "--env-file", str(env))
    assert done.returncode == 0, done.stderr
    assert "user boothwatch, password set" in done.stdout and "(signed," in done.stdout
    assert "pw with" not in done.stdout
    # without the file, the process environment is what is checked
    done = boothwatch("check-config", str(config),
                      env={PASSWORD_ENV: "pw", "PAGER_SECRET": "s3"})
    assert done.returncode == 0, done.stderr
    # with the file, only the file: this shell's variables are not the service's
    env.write_text("BOOTHWATCH_SECRET=abc\n")
    done = boothwatch("check-config", str(config), "--env-file", str(env),
                      env={PASSWORD_ENV: "pw", "PAGER_SECRET": "s3"})
    assert done.returncode == 2
    assert done.stderr.splitlines()[1:] == [
        '  mqtt.username: "boothwatch" needs a password: environment variable '
        "BOOTHWATCH_MQTT_PASSWORD is not set",
        "  channels.pager.secret_env: environment variable PAGER_SECRET is not set",
    ]
    done = boothwatch("check-config", str(config), "--env-file", str(tmp_path / "none"))
    assert f"  {tmp_path / 'none'}: cannot read: No such file or directory" in done.stderr


@pytest.mark.skipif(not AS_ROOT, reason="a directory closed to another user needs root")
def test_check_config_names_a_store_directory_the_user_cannot_enter(shared_dir: Path) -> None:
    """A store directory closed to the service's user (root's, 0700) is a problem naming
    it, not a traceback from the check run as that user."""
    directory = shared_dir / "closed"
    directory.mkdir(mode=0o700)
    store = directory / "bw.db"
    store.write_bytes(b"")  # the file check then needs to enter the directory
    config = offline_site(shared_dir, store=store).write(shared_dir / "site.toml")
    done = boothwatch("check-config", str(config), "--user", "nobody")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[1:] == [
        f"  store.path: user nobody cannot enter {directory} (owner root, group root, "
        "mode 0700)"]


def test_check_config_names_a_store_directory_the_user_cannot_write(
        shared_dir: Path, closed_store: tuple[Path, str | None]) -> None:
    """The store's directory must be writable by the service's user (--user, else us)."""
    store, user = closed_store
    config = offline_site(shared_dir, store=store).write(shared_dir / "site.toml")
    done = boothwatch("check-config", str(config), *(["--user", user] if user else []))
    assert done.returncode == 2
    who = user or User.current().name
    info = store.parent.stat()
    assert done.stderr.splitlines()[1:] == [
        f"  store.path: user {who} cannot create files in {store.parent} (owner "
        f"{pwd.getpwuid(info.st_uid).pw_name}, group {grp.getgrgid(info.st_gid).gr_name}, "
        f"mode {info.st_mode & 0o777:04o}); SQLite makes the store's -wal and -shm files "
        "there"]
    if AS_ROOT:  # root itself can write there
        assert boothwatch("check-config", str(config)).returncode == 0


def test_check_config_names_a_store_file_left_by_another_user(
        shared_dir: Path) -> None:
    """A store (or its -wal) made by root, e.g. by a first `run` as root, is a problem for
    the service's user."""
    if not AS_ROOT:
        pytest.skip("a file of another user takes root to make")
    directory = shared_dir / "store"
    directory.mkdir(mode=0o777)
    directory.chmod(0o777)
    (directory / "bw.db-wal").write_bytes(b"")
    config = offline_site(shared_dir, store=directory / "bw.db").write(shared_dir / "site.toml")
    done = boothwatch("check-config", str(config), "--user", "nobody")
    assert done.returncode == 2
    assert (f"store.path: user nobody cannot read and write {directory / 'bw.db-wal'} (owner "
            "root, group root, mode 0644)") in done.stderr


def test_check_config_and_the_state_directory(tmp_path: Path) -> None:
    """A missing store directory is a problem, except under /var/lib when --user is given:
    the unit's StateDirectory= creates it, which a note says."""
    missing = tmp_path / "missing" / "bw.db"
    config = offline_site(tmp_path, store=missing).write(tmp_path / "a.toml")
    for extra in ([], ["--user", User.current().name]):
        done = boothwatch("check-config", str(config), *extra)
        assert done.returncode == 2
        assert f"  store.path: directory {missing.parent} does not exist" in done.stderr
    name = f"boothwatch-test-{uuid.uuid4().hex[:8]}"
    state = Path("/var/lib") / name
    config = offline_site(tmp_path, store=state / "bw.db").write(tmp_path / "b.toml")
    done = boothwatch("check-config", str(config), "--user", User.current().name)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        f"note: store.path: {state} does not exist yet: accepted, as the unit's "
        f"StateDirectory={name} creates it, owned by {User.current().name}, when the "
        "service starts")
    assert not state.exists()
    done = boothwatch("check-config", str(config))
    assert done.returncode == 2 and f"directory {state} does not exist" in done.stderr


def test_check_config_names_a_tls_file_the_user_cannot_read(shared_dir: Path) -> None:
    """A TLS file the service's user cannot read is a problem at its key."""
    ca = shared_dir / "ca.crt"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(shared_dir / "ca.key"), "-out", str(ca), "-subj", "/CN=ca",
         "-days", "1"], capture_output=True, text=True, check=False)
    assert made.returncode == 0, made.stderr
    ca.chmod(0o600 if AS_ROOT else 0o000)
    (shared_dir / "store").mkdir()
    (shared_dir / "store").chmod(0o777)  # the store is not what this test is about
    site = offline_site(shared_dir, mqtt_url=f"mqtts://127.0.0.1:{free_port()}",
                        mqtt={"ca_file": str(ca)}, store=shared_dir / "store" / "bw.db")
    config = site.write(shared_dir / "site.toml")
    done = boothwatch("check-config", str(config), *(["--user", "nobody"] if AS_ROOT else []))
    assert done.returncode == 2
    expected = (f"  mqtt.ca_file: user nobody cannot read {ca} (owner root, group root, mode "
                "0600)" if AS_ROOT else
                f'  mqtt.ca_file: cannot read "{ca}": Permission denied')
    assert done.stderr.splitlines()[1:] == [expected]


def test_check_config_names_a_catalog_the_user_cannot_read(shared_dir: Path) -> None:
    """The site's catalog of its language, closed to the service's user, is a problem at
    site.catalogs (the service would not start without it)."""
    po = shared_dir / "locale" / "pt_PT" / "LC_MESSAGES" / "boothwatch.po"
    po.parent.mkdir(parents=True)
    for directory in (po.parent, po.parent.parent, po.parent.parent.parent):
        directory.chmod(0o755)
    po.write_text('msgid "call button pressed"\nmsgstr "chamada"\n')
    po.chmod(0o600 if AS_ROOT else 0o000)
    (shared_dir / "store").mkdir()
    (shared_dir / "store").chmod(0o777)  # the store is not what this test is about
    site = offline_site(shared_dir, store=shared_dir / "store" / "bw.db")
    site.site = {"language": "pt_PT", "catalogs": str(shared_dir / "locale")}
    config = site.write(shared_dir / "site.toml")
    done = boothwatch("check-config", str(config), *(["--user", "nobody"] if AS_ROOT else []))
    assert done.returncode == 2
    expected = (f"  site.catalogs: user nobody cannot read {po} (owner root, group root, mode "
                "0600)" if AS_ROOT else f"  site.catalogs: {po}: cannot read: Permission denied")
    assert done.stderr.splitlines()[1:] == [expected]


def test_check_config_refuses_an_unknown_user(tmp_path: Path) -> None:
    config = offline_site(tmp_path).write(tmp_path / "site.toml")
    done = boothwatch("check-config", str(config), "--user", "no-such-user-here")
    assert (done.returncode, done.stderr) == (
        2, "boothwatch check-config: --user: no user named 'no-such-user-here'\n")


# --------------------------------------------------------------------------- closed pipes


def _pipe(command: list[str], then: str = "head -1", both: bool = False
          ) -> subprocess.CompletedProcess[str]:
    """``COMMAND | head -1`` in bash with pipefail: the status is COMMAND's unless head's
    is not 0."""
    line = shlex.join([sys.executable, "-m", "monitor.cli", *command])
    line += " 2>&1" if both else ""
    return subprocess.run(["bash", "-o", "pipefail", "-c", f"{line} | {then}"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)


def test_check_config_into_head_ends_quietly(tmp_path: Path) -> None:
    """`check-config FILE | head -1` on a summary far longer than a pipe holds: the first
    line, nothing on stderr, exit 0; a config with thousands of problems through
    `2>&1 | head -1`: exit 2 still."""
    site = offline_site(tmp_path, booths=booths(1500))  # some 100 kB: a pipe holds 64
    done = _pipe(["check-config", str(site.write(tmp_path / "big.toml"))])
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"config {tmp_path / 'big.toml'}\n"
    for booth in site.booths:
        booth["long_session"] = "soon"
    done = _pipe(["check-config", str(site.write(tmp_path / "bad.toml"))], both=True)
    assert (done.returncode, done.stdout) == (2, f"{tmp_path / 'bad.toml'}: 1500 problem(s)\n")
    assert done.stderr == ""


async def test_report_into_head_ends_quietly(tmp_path: Path) -> None:
    """`report ... | head -1` on a report far longer than a pipe holds: the first line,
    nothing on stderr, exit 0."""
    path = tmp_path / "bw.db"
    store = await Store.open(str(path))
    await store.close()
    day, start = 86400.0, 1_700_000_000.0
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executemany(
            "INSERT INTO incidents(id, booth, priority, state, triggers, level, max_level,"
            " raised_at, view) VALUES (?, 'b1', 'high', 'open', '[\"call\"]', 1, 1, ?, '{}')",
            [(f"i{n}", start + n * day) for n in range(3000)])
    done = _pipe(["report", "--db", str(path), "--by", "day", "--format", "csv",
                  "--longest", "0", "--to", "2030-01-01"])
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("day,incidents,")


def test_check_config_warns_of_ack_links_phones_cannot_open_and_an_open_api(
        tmp_path: Path) -> None:
    """A loopback public_url while a channel pages phones is a warning naming the key and
    the channels; so is an API and board with neither token nor station password."""
    site = offline_site(tmp_path, channels={
        "phones": {"type": "ntfy", "url": "https://ntfy.example"},
        "desk": {"type": "console", "watched": True}})
    for r in site.responders:
        r["channels"] = ["phones", "desk"]
        r["address"] = {"phones": f"boothwatch-{r['id']}"}
    config = site.write(tmp_path / "a.toml")
    done = boothwatch("check-config", str(config))
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stdout.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 2, done.stdout
    assert warned[0].startswith(f"warning: http.public_url is http://127.0.0.1:{site.http_port}")
    assert "channel(s) phones page phones" in warned[0]
    assert "neither BOOTHWATCH_API_TOKEN nor BOOTHWATCH_BOARD_PASSWORD" in warned[1]
    site.http = {"public_url": "https://booths.example.org"}
    site.write(tmp_path / "a.toml")
    done = boothwatch("check-config", str(config),
                      env={"BOOTHWATCH_BOARD_PASSWORD": "station pw"})
    assert done.returncode == 0, done.stderr
    assert "warning: " not in done.stdout
    site.channels = {"desk": {"type": "console", "watched": True}}
    for r in site.responders:
        r["channels"] = ["desk"]
        del r["address"]
    site.http = {}
    site.write(tmp_path / "a.toml")
    done = boothwatch("check-config", str(config), env={"BOOTHWATCH_API_TOKEN": "tok"})
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if line.startswith("warning: ")] == [
        "warning: BOOTHWATCH_BOARD_PASSWORD is not set: the station board cannot log in"]
