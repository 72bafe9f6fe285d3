"""What both benchmarks share: the deploy broker, the real service as a subprocess, figures.

The broker is the production config ``deploy/mosquitto/mosquitto.conf`` with only
what cannot be shared changed: the port, the persistence directory, the password
file (a fresh one with a bench account) and the user when run as root. Every
queue and in-flight limit is the deploy value, so a benchmark measures what a
site would get. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from monitor.store import open_reader
from monitor.store_base import DB_PASSWORD_ENV, Reader
from tests.harness.broker import Mosquitto
from tests.harness.postgres import PASSWORD as PG_PASSWORD
from tests.harness.postgres import Postgres, require_postgres
from tests.harness.site import Site, Table, policy, responder, step
from tests.harness.site import booths as site_booths

REPO = Path(__file__).resolve().parent.parent
DEPLOY_CONF = REPO / "deploy" / "mosquitto" / "mosquitto.conf"
SITE = "bench"
MQTT_USER = "boothwatch"
MQTT_PASSWORD = "bench-password"  # a throwaway account in a throwaway password file
LIMIT_KEYS = (
    "max_inflight_messages",
    "max_queued_messages",
    "max_queued_bytes",
    "message_size_limit",
    "set_tcp_nodelay",
    "persistence",
    "autosave_interval",
)
_TLS_KEYS = ("cafile", "certfile", "keyfile", "tls_version", "require_certificate",
             "use_identity_as_username")  # the TLS listener's settings


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def find_binary(name: str, *fallbacks: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for path in fallbacks:
        if os.access(path, os.X_OK):
            return path
    return None


# --------------------------------------------------------------------------- broker


def settings(text: str) -> dict[str, str]:
    """The active (uncommented) ``key value`` lines of a mosquitto config; last one wins."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            found[key] = value.strip()
    return found


class Broker(Mosquitto):
    """Mosquitto with the deploy config on a free port; ``overrides`` replace deploy settings.

    ``plain``: Mosquitto's own defaults instead (a listener and the bench account, nothing
    else), as a site's existing broker or a new user's Debian package would run.
    """

    def __init__(self, workdir: Path, overrides: dict[str, str] | None = None, *,
                 plain: bool = False) -> None:
        super().__init__(workdir, config=self._plain_config if plain else self._deploy_config)
        self.overrides = dict(overrides or {})
        self.auth = False
        self.plain = plain

    def _password_file(self) -> None:
        """A fresh password file with the bench account, if mosquitto_passwd is installed."""
        passwd = find_binary("mosquitto_passwd", "/usr/bin/mosquitto_passwd")
        if passwd is not None:
            subprocess.run(
                [passwd, "-c", "-b", str(self.workdir / "passwd"), MQTT_USER, MQTT_PASSWORD],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            self.auth = True

    def _plain_config(self, _broker: Mosquitto) -> str:
        self._password_file()
        out = [f"listener {self.port} {self.host}",
               f"password_file {self.workdir / 'passwd'}" if self.auth
               else "allow_anonymous true  # bench: mosquitto_passwd is not installed",
               f"log_dest file {self.log_path}",
               # what the harness needs to see the broker up ("running"), and its warnings
               "log_type error", "log_type warning", "log_type notice", "log_type information"]
        if os.geteuid() == 0:
            out.append("user root")  # the packaged user could not write our directory
        out += [f"{k} {v}" for k, v in self.overrides.items()]
        return "\n".join(out) + "\n"

    def effective(self) -> dict[str, str]:
        return settings(self.config_text())

    def _deploy_config(self, _broker: Mosquitto) -> str:
        self._password_file()
        out: list[str] = []
        seen: set[str] = set()
        for line in DEPLOY_CONF.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            key = stripped.partition(" ")[0] if stripped and not stripped.startswith("#") else ""
            if key == "listener":
                # the first is the service's own (loopback, plain); the TLS one for the
                # LAN would need a site's certificates and measures nothing else
                listening = not any(item.startswith("listener ") for item in out)
                out.append(f"listener {self.port} {self.host}" if listening else "")
            elif key in _TLS_KEYS:
                out.append("")
            elif key == "persistence_location":
                out.append(f"persistence_location {self.workdir}/")
            elif key == "password_file":
                out.append(f"password_file {self.workdir / 'passwd'}" if self.auth else "")
            elif key == "allow_anonymous" and not self.auth:
                out.append("allow_anonymous true  # bench: mosquitto_passwd is not installed")
            elif key == "log_dest":
                # stdout into a file is block-buffered; a log file is written line by line
                if f"log_dest file {self.log_path}" not in out:
                    out.append(f"log_dest file {self.log_path}")
            elif key == "acl_file":
                out.append("")  # a deploy ACL would name production users
            elif key == "user" and os.geteuid() == 0:
                # the packaged user could not write our temporary directory
                out.append("user root")
            elif key in self.overrides:
                out.append(f"{key} {self.overrides[key]}")
                seen.add(key)
            else:
                out.append(line)
        out += [f"{k} {v}" for k, v in self.overrides.items() if k not in seen]
        return "\n".join(out) + "\n"

    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def dropped_warnings(self) -> int:
        return self.log_text().count("Outgoing messages are being dropped")


# --------------------------------------------------------------------------- service


def bench_site(
    *,
    mqtt_port: int,
    http_port: int,
    db: Path,
    booths: int,
    auth: bool,
    channel: Table,
    long_session: str = "1h",
    stillness: str = "1h",
    device_timeout: str = "1h",
    client_id: str = "boothwatch-bench",
    protocol: str = "5",
    extra_booths: Sequence[Table] = (),
    store_url: str | None = None,
) -> Site:
    """A site config: ``booths`` booths b1..bN (then ``extra_booths``), one responder ana
    (nurse) on ``channel`` (the table of ``[channels.pager]``). A call pages ana once
    (step 0s, repeat every hour), so one press is one page. The store is the SQLite file
    ``db``, or the PostgreSQL database at ``store_url`` (`BenchStore`).
    """
    every_hour = policy(step("0s", "role:nurse"), repeat="1h", ack_timeout="1h")
    site = Site(
        id=SITE, name="Bench site", mqtt_port=mqtt_port, client_id=client_id,
        mqtt={"protocol": protocol, **({"username": MQTT_USER} if auth else {})},
        store=db, store_url=store_url, http_port=http_port,
        defaults={"long_session": long_session, "stillness": stillness,
                  "device_timeout": device_timeout},
        booths=[*site_booths(booths), *extra_booths],
        channels={"pager": channel},
        responders=[responder("ana", ["nurse"], ["pager"])],
        escalation={"high": every_hour, "medium": every_hour,
                    "low": policy(step("0s", "role:nurse"))},
    )
    return site


BACKENDS = ("sqlite", "postgresql")


class BenchStore:
    """The bench service's store: a SQLite file in the run's directory, or a database of a
    PostgreSQL cluster started for the run on a free port (tests/harness/postgres.py) with
    PostgreSQL's durable defaults (fsync, synchronous_commit on), as SQLite's
    synchronous=FULL is durable: the two compared commit to disk alike. `count` reads
    the events stored, on a connection of its own (one per thread)."""

    def __init__(self, backend: str, tmp: Path) -> None:
        self.backend = backend
        self.db = tmp / "boothwatch.db"
        self.url: str | None = None
        self._postgres: Postgres | None = None
        self.env: dict[str, str] = {}
        if backend == "postgresql":
            self._postgres = Postgres(require_postgres(), durable=True).__enter__()
            self.url = self._postgres.database()
            self.env = {DB_PASSWORD_ENV: PG_PASSWORD}

    def site(self) -> dict[str, Any]:
        """`bench_site`'s store arguments."""
        return {"db": self.db, "store_url": self.url}

    def describe(self) -> str:
        if self._postgres is None:
            return f"SQLite {self.db} (WAL, synchronous=FULL)"
        return f"PostgreSQL {self.url} (fsync on, synchronous_commit on)"

    def reader(self) -> Reader:
        """A read-only connection to the store, for counting what the service stored."""
        return open_reader(self.url or str(self.db), PG_PASSWORD if self.url else None)

    def close(self) -> None:
        if self._postgres is not None:
            self._postgres.close()


def stored(reader: Reader) -> int:
    """The events stored. fetchall() runs the statement to its end, which ends SQLite's
    read transaction: a half-read cursor would keep the old snapshot (and block the
    service's checkpoints); closing it lets PostgreSQL's server-side cursor go."""
    with contextlib.closing(reader.execute("SELECT count(*) FROM events")) as cur:
        return int(cur.fetchall()[0][0])


def add_backend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default="sqlite",
                        help="the service's store: a SQLite file ([store] path, the default) "
                             "or a PostgreSQL cluster the bench starts ([store] url)")


class Service:
    """``boothwatch run --config FILE`` as a subprocess; stderr (JSON logs) to a file."""

    def __init__(self, workdir: Path, config: str, http_port: int, *,
                 profile: Path | None = None, src: Path = REPO,
                 env: Mapping[str, str] | None = None) -> None:
        self.workdir = workdir
        self.config_path = workdir / "boothwatch.toml"
        self.config_path.write_text(config, encoding="utf-8")
        self.http_port = http_port
        self.stderr_path = workdir / "service.stderr"
        self.stdout_path = workdir / "service.stdout"
        self.profile = profile
        self.src = src  # where monitor/, devices/, alerts/ are imported from
        self.env = dict(env or {})  # BOOTHWATCH_... the bench gives the service
        self.process: subprocess.Popen[bytes] | None = None
        self._files: list[IO[bytes]] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        python = REPO / ".venv" / "bin" / "python"
        exe = str(python) if python.exists() else sys.executable
        if self.profile is not None:
            return [exe, "-m", "cProfile", "-o", str(self.profile),
                    "-m", "monitor.cli", "run", "--config", str(self.config_path)]
        script = REPO / ".venv" / "bin" / "boothwatch"
        if script.exists():
            return [str(script), "run", "--config", str(self.config_path)]
        return [exe, "-m", "monitor.cli", "run", "--config", str(self.config_path)]

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BOOTHWATCH_")}
        if "\nusername = " in self.config_path.read_text(encoding="utf-8"):
            env["BOOTHWATCH_MQTT_PASSWORD"] = MQTT_PASSWORD  # with no username it is an error
        env["BOOTHWATCH_SECRET"] = "bench-secret"
        env.update(self.env)
        # The packages from `src` (this checkout unless told), whatever state the venv's
        # editable install is in (one made before monitor/__init__.py existed maps
        # `monitor` to a namespace package).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.src), env.get("PYTHONPATH")]))
        out = self.stdout_path.open("ab")
        err = self.stderr_path.open("ab")
        self._files = [out, err]
        self.process = subprocess.Popen(
            self.command(), cwd=self.src, env=env,
            stdin=subprocess.DEVNULL, stdout=out, stderr=err,
        )

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Poll GET /readyz until 200; returns the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(self.base + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return time.monotonic() - started
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read().decode(errors='replace')[:200]}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise RuntimeError(f"service not ready within {timeout} s ({last}):\n{self.stderr_tail()}")

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"service exited with {self.process.returncode}:\n{self.stderr_tail()}"
            )

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.base + path, timeout=10) as resp:
            body: bytes = resp.read()
        return body.decode()

    def metrics(self) -> dict[str, float]:
        """Samples of the Prometheus text as ``name{labels}`` -> value."""
        samples: dict[str, float] = {}
        for line in self.get("/metrics").splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def peak_rss_mb(self) -> float | None:
        """VmHWM (peak resident set) of the service process, in MiB."""
        return self.memory_mb("VmHWM")

    def memory_mb(self, field: str) -> float | None:
        """A memory figure of the service from /proc (VmRSS, VmHWM...), in MiB."""
        if self.process is None:
            return None
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
        return int(match.group(1)) / 1024 if match else None

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the service so far (from /proc), in seconds."""
        return None if self.process is None else cpu_seconds(self.process.pid)

    def stderr_tail(self, lines: int = 20) -> str:
        if not self.stderr_path.exists():
            return ""
        text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def log_count(self, word: str) -> int:
        if not self.stderr_path.exists():
            return 0
        return self.stderr_path.read_text(encoding="utf-8", errors="replace").count(word)

    def kill(self) -> float:
        """SIGKILL now and reap the process; ``time.time()`` just after the signal went.
        `start` runs it again (its log goes on in the same file)."""
        process, self.process = self.process, None
        assert process is not None and process.poll() is None, "not running"
        process.send_signal(signal.SIGKILL)
        killed = time.time()
        process.wait()
        for f in self._files:
            f.close()
        self._files = []
        return killed

    def readyz(self, timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
        """GET /readyz: its status and JSON body (0 and {} when nothing answers)."""
        try:
            with urllib.request.urlopen(self.base + "/readyz", timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"{}")
            except ValueError:
                return exc.code, {}
        except (urllib.error.URLError, OSError, ValueError):
            return 0, {}

    def wait_standby(self, timeout: float = 60.0) -> float:
        """Poll GET /readyz until it answers 503 ``standby`` naming an owner (another
        process holds the site's lease, `monitor.standby`); the seconds it took."""
        started = time.monotonic()
        while time.monotonic() < started + timeout:
            self.check_alive()
            status, body = self.readyz()
            if status == 503 and "standby" in body.get("reasons", ()) and body.get("owner"):
                return time.monotonic() - started
            time.sleep(0.05)
        raise RuntimeError(f"service not standing by within {timeout} s:\n"
                           f"{self.stderr_tail()}")

    def log_lines(self) -> list[dict[str, Any]]:
        """The service's JSON log lines so far (every run of it), parsed."""
        if not self.stderr_path.exists():
            return []
        lines = []
        for line in self.stderr_path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if isinstance(parsed, dict):
                    lines.append(parsed)
        return lines

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); the exit code, None if never started."""
        process, self.process = self.process, None
        code = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                    print(f"  service did not stop within {timeout} s of SIGTERM: killed")
            code = process.returncode
        for f in self._files:
            f.close()
        self._files = []
        return code


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far (from /proc), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def workdir(name: str, args: argparse.Namespace) -> Iterator[Path]:
    """A bench's temporary directory (configs, logs, stores): removed at the end unless
    ``args.keep`` is set then (``--keep``, or the run itself when it failed), in which case
    its path is printed."""
    tmp = Path(tempfile.mkdtemp(prefix=f"boothwatch-{name}-"))
    try:
        yield tmp
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def add_src_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--src", type=Path, default=REPO, metavar="DIR",
        help="import the service (monitor/, devices/, alerts/) from DIR, e.g. an unpacked "
             "`git archive` of a commit, instead of this checkout",
    )


def summarise(values: Sequence[float]) -> str:
    """count, p50, p90, p99, max of seconds, shown in ms."""
    if not values:
        return "count 0"
    ms = [v * 1000 for v in values]
    return (f"count {len(ms)}  p50 {percentile(ms, 50):.2f}  p90 {percentile(ms, 90):.2f}  "
            f"p99 {percentile(ms, 99):.2f}  max {max(ms):.2f} ms")


def broker_line(broker: Broker) -> str:
    eff = broker.effective()
    shown = "  ".join(f"{k}={eff.get(k, '(default)')}" for k in LIMIT_KEYS)
    note = "" if not broker.overrides else f"  [overridden: {broker.overrides}]"
    config = "Mosquitto's defaults" if broker.plain else "deploy config"
    return f"broker: mosquitto {broker.host}:{broker.port} ({config})  {shown}{note}"


# --------------------------------------------------------------------------- backends

_RATE = re.compile(r"^ingest rate:\s+([\d,]+) events/s", re.MULTILINE)
_LATENCY = re.compile(r"^press -> page \(service\):.*?p50 ([\d.]+)\s+p90 ([\d.]+)\s+"
                      r"p99 ([\d.]+)", re.MULTILINE)


@dataclass
class BackendFigures:
    """What bench/ingest.py and bench/latency.py measured on one store backend."""

    backend: str
    rate: float | None = None  # events/s stored and acknowledged
    p50: float | None = None  # press to page, ms
    p99: float | None = None
    failures: list[str] = field(default_factory=list)  # "ingest.py: exit 1", ...


def backend_figures(backend: str, *, events: int, booths: int, presses: int,
                    src: Path = REPO, log: Path | None = None) -> BackendFigures:
    """Run bench/ingest.py (``events`` events over ``booths`` booths) and bench/latency.py
    (``presses`` presses, one per booth) with the store on ``backend``, each as a process
    of its own with its own broker, service and store; their figures. Their whole output
    is appended to ``log`` when given."""
    figures = BackendFigures(backend)
    bench = REPO / "bench"
    python = REPO / ".venv" / "bin" / "python"
    exe = str(python) if python.exists() else sys.executable
    runs = (("ingest.py", "--events", str(events), "--booths", str(booths)),
            ("latency.py", "--booths", str(presses)))
    for script, *args in runs:
        argv = [exe, str(bench / script), "--backend", backend, "--src", str(src), *args]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=900,
                                  check=False)
            out, code = done.stdout, done.returncode
            err = done.stderr
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
            code, err = -1, "timed out after 900 s"
        if log is not None:
            with log.open("a", encoding="utf-8") as f:
                f.write(f"$ {' '.join(argv)}\n{out}{err}\n(exit {code})\n\n")
        if code != 0:
            figures.failures.append(f"{script} --backend {backend}: exit {code}")
        rate, latency = _RATE.search(out), _LATENCY.search(out)
        if rate is not None:
            figures.rate = float(rate.group(1).replace(",", ""))
        if latency is not None:
            figures.p50, figures.p99 = float(latency[1]), float(latency[3])
    return figures
