"""What `boothwatch run` will need of the box (check-config): files checked without
connecting, a PostgreSQL store connected to.

- ``store.path``: its directory exists, and the service's user can create and write
  the store and its -wal and -shm files there (a file system with room left);
- ``store.url``: the service's user connects to PostgreSQL with the service's
  environment (BOOTHWATCH_DB_PASSWORD, libpq's PGPASSFILE...); the only check that
  connects to anything, since a database that refuses us is the commonest mistake there;
- ``store.path`` or ``store.url``: a store a newer boothwatch migrated is refused;
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
from monitor.store import schema_problem
from monitor.store_base import DB_PASSWORD_ENV

STATE_ROOT = PurePosixPath("/var/lib")  # systemd's StateDirectory= for system services


@dataclass
class Host:
    user: User
    chosen: bool  # --user was given: the service as systemd runs it
    notes: list[str] = field(default_factory=list)  # what was accepted, and why

    def problems(self, store: str | None, files: Mapping[tuple[str, str], str], *,
                 url: str | None = None, env: Mapping[str, str] | None = None
                 ) -> list[Problem]:
        """The problems of the store (its path, or its URL: connected to) and of the files
        the service reads (key path -> file: the [mqtt] TLS files, the site's catalog)
        that the schema found usable, with the service's environment `env`.
        PermissionError if only root could check for the user."""
        env = env or {}
        todo: list[tuple[tuple[str, str], str, str]] = []  # (where, kind, path or URL)
        if store is not None and not self._state_directory(store):
            todo.append((("store", "path"), "store", store))
        if url is not None:
            todo.append((("store", "url"), "database", url))
        if not self.user.me:  # else the schema has read them as this very user
            todo += [(where, "read", path) for where, path in files.items()]
        who = f"user {self.user.name}"

        def check(kind: str, where: str) -> str | None:
            match kind:
                case "store":
                    return store_problem(where, who) or schema_problem(where, None, env)
                case "database":
                    return schema_problem(where, env.get(DB_PASSWORD_ENV) or None, env)
            return read_problem(where, who)

        def checks() -> list[str | None]:
            return [check(kind, where) for _, kind, where in todo]

        # the child that is another user may not read this Python's own library (a pyenv
        # under /root): the modules the checks import are imported here, before it forks
        import monitor.store_sqlite
        if url is not None:
            import monitor.store_postgres  # noqa: F401
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
