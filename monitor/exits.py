"""How `boothwatch run` ends, and why: its exit statuses (docs/reference/cli.md).

An operator's mistake (a store in a missing directory, an HTTP address taken by
another program) ends the service with one line naming what to fix and a status
of its own, never a traceback; a traceback is kept for our own bugs. The
statuses beyond 2 are BSD's sysexits, which ``systemctl status`` names
(``status=73/CANTCREAT``). The unit restarts the service whatever the status
(deploy/systemd/boothwatch.service says why), so once the mistake is fixed it
comes back by itself.
"""

from __future__ import annotations

STOPPED = 0  # SIGTERM or SIGINT: a clean stop
BUG = 1  # an unexpected error: a traceback in the log
CONFIG = 2  # the config has a problem (or the command line: argparse's own 2)
UNAVAILABLE = 69  # EX_UNAVAILABLE: the HTTP address cannot be listened on
CANTCREAT = 73  # EX_CANTCREAT: the store cannot be opened or created


class OperatorError(Exception):
    """Something on the box the operator must fix: said in one line, ending with `status`."""

    status: int = BUG

    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message)
        self.context = context  # logged beside the message (the path, the address)
