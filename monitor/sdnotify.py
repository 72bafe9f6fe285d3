"""systemd's service notification protocol (sd_notify(3)): READY, WATCHDOG, STATUS, STOPPING.

The standard library's socket, not a library, and why: the protocol is one
datagram of ``KEY=VALUE`` lines to the unix socket named by ``NOTIFY_SOCKET``.
Of the libraries, ``systemd-python`` is the reference but a C extension that
needs libsystemd's headers and a compiler on the site box; ``sdnotify`` has had
no release since 2017, ships no types and swallows every error;
``systemd-watchdog`` is typed and kept up, but its public API has no
``STOPPING=1`` (nor any other message but through a private method). Each would
wrap the same ``sendto`` we make here.

Without ``NOTIFY_SOCKET`` (not under systemd, or ``Type=simple``) every call is
a no-op. A failed send is logged (once per reason and minute) and never raised:
a broken notification socket must not stop the monitoring; if the watchdog
pings stop reaching systemd, systemd restarts us, which is what it is for.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

from monitor.logs import RateLimit

log = structlog.get_logger(__name__)


class Notifier:
    def __init__(self, env: Mapping[str, str], pid: int | None = None) -> None:
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]  # a socket in the abstract namespace
        self.address = address
        self.watchdog_interval: float | None = None  # seconds between pings: half the limit
        usec, for_pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID")
        mine = for_pid is None or for_pid == str(os.getpid() if pid is None else pid)
        if address is not None and usec.isdigit() and int(usec) > 0 and mine:
            self.watchdog_interval = int(usec) / 1e6 / 2
        self._sock: socket.socket | None = None
        self._rate = RateLimit(60.0)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """One datagram of ``lines``; False when it could not be sent (or no systemd)."""
        if self.address is None:
            return False
        text = "\n".join(line.replace("\n", " ") for line in lines) + "\n"
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)  # never hold up the event loop
            self._sock.sendto(text.encode(), self.address)
        except OSError as exc:
            if self._rate.allow("sd_notify", type(exc).__name__):
                log.warning("sd_notify_failed", error=f"{type(exc).__name__}: {exc}")
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def watchdog(self, status: str) -> bool:
        return self.send("WATCHDOG=1", f"STATUS={status}")

    def stopping(self, status: str) -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
