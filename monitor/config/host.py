"""What `boothwatch run` will need of the box, checked without connecting (check-config).

- ``store.path``: its directory exists, and the service's user can create and write
  the store and its -wal and -shm files there (a file system with room left);
- ``mqtt.ca_file``, ``cert_file``, ``key_file`` and the language's catalog in
  ``site.catalogs``: the service's user can read them (the schema has read them
  already, as whoever runs check-config).

The service's user is ``--user`` (as root: check-config forks as that user, see
`monitor.access`), else whoever runs check-config, as the unit's ``ExecStartPre``
does.

A store directory under /var/lib that does not exist yet is accepted when ``--user``
is given, with a note: that is where the unit's ``StateDirectory=`` puts it, and
systemd creates it, owned by the unit's ``User=``, before anything of the unit
starts, ``ExecStartPre``'s check-config included. ``--user`` says "check for the
service as systemd runs it"; without it (a developer's box, a site run another way)
nothing creates the directory, so it is a problem. check-config does not read the
unit (it may be edited or overridden where check-config cannot see); if the unit
lacks ``StateDirectory=``, ``run`` names the missing directory and exits 73.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from monitor.access import User, as_user, read_problem, store_problem
from monitor.config.problems import Problem

STATE_ROOT = PurePosixPath("/var/lib")  # systemd's StateDirectory= for system services


@dataclass
class Host:
    user: User
    chosen: bool  # --user was given: the service as systemd runs it
    notes: list[str] = field(default_factory=list)  # what was accepted, and why

    def problems(self, store: str | None, files: Mapping[tuple[str, str], str]
                 ) -> list[Problem]:
        """The problems of the store path and of the files the service reads (key path ->
        file: the [mqtt] TLS files, the site's catalog) that the schema found usable.
        PermissionError if only root could check for the user."""
        todo: list[tuple[tuple[str, str], str, str]] = []  # (where, kind, path)
        if store is not None and not self._state_directory(store):
            todo.append((("store", "path"), "store", store))
        if not self.user.me:  # else the schema has read them as this very user
            todo += [(where, "read", path) for where, path in files.items()]
        who = f"user {self.user.name}"

        def checks() -> list[str | None]:
            return [store_problem(path, who) if kind == "store" else read_problem(path, who)
                    for _, kind, path in todo]

        found = as_user(self.user, checks) if todo else []
        return [Problem(where, text) for (where, _, _), text in zip(todo, found, strict=True)
                if text is not None]

    def _state_directory(self, store: str) -> bool:
        """The store's directory is missing and systemd's StateDirectory= will make it."""
        directory = PurePosixPath(os.path.abspath(store)).parent
        if not self.chosen or os.path.lexists(directory) or STATE_ROOT not in directory.parents:
            return False
        name = directory.relative_to(STATE_ROOT)
        self.notes.append(f"store.path: {directory} does not exist yet: accepted, as the "
                          f"unit's StateDirectory={name} creates it, owned by "
                          f"{self.user.name}, when the service starts")
        return True
