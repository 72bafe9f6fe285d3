"""What a user can do with the files `boothwatch run` needs: the store, the TLS files.

`boothwatch check-config --user NAME` asks for the user the service will run as;
`boothwatch run`, when its store will not open, asks for itself, to say why. For
another user, a child process forked with that user's ids and groups asks the
kernel with access(2), so owners, modes, groups, ACLs and read-only mounts all
count as they will for the service; only root can become another user.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
from collections.abc import Callable
from dataclasses import dataclass

Checks = Callable[[], list[str | None]]


@dataclass(frozen=True, slots=True)
class User:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def named(cls, name: str) -> User:
        """The user called `name`; KeyError if there is none."""
        entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, entry.pw_gid,
                   tuple(os.getgrouplist(name, entry.pw_gid)))

    @classmethod
    def current(cls) -> User:
        uid = os.geteuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:  # a uid with no passwd entry (a container's)
            name = f"uid {uid}"
        return cls(name, uid, os.getegid(), tuple(os.getgroups()))

    @property
    def me(self) -> bool:
        return self.uid == os.geteuid() and self.gid == os.getegid()


def as_user(user: User, checks: Checks) -> list[str | None]:
    """`checks()` run with `user`'s ids and groups: here if that is who we are, else in
    a child process (which only root can fork as someone else: PermissionError)."""
    if user.me:
        return checks()
    if os.geteuid() != 0:
        raise PermissionError(f"checking what user {user.name} can do needs root "
                              f"(or run check-config as {user.name})")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become the user, check, write the answer, leave at once
        status = 1
        try:
            os.close(read)
            with os.fdopen(write, "w") as out:
                try:
                    os.setgroups(list(user.groups))
                    os.setgid(user.gid)
                    os.setuid(user.uid)
                    answer: dict[str, object] = {"checks": checks()}
                except Exception as exc:  # our bug or the box's: the parent says which
                    answer = {"error": f"{type(exc).__name__}: {exc}"}
                json.dump(answer, out)
            status = 0
        finally:
            os._exit(status)  # no cleanup of the parent's state (its buffers, its atexit)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not text:
        raise RuntimeError(f"the check as user {user.name} failed (status {status})")
    reply = json.loads(text)
    if "error" in reply:
        raise RuntimeError(f"the check as user {user.name} failed: {reply['error']}")
    result: list[str | None] = reply["checks"]
    return result


def store_problem(path: str, who: str) -> str | None:
    """Why the process cannot open or create the SQLite store at `path` (with its -wal and
    -shm files beside it), or None. `who` names the process's user in the answer."""
    file = os.path.abspath(path)
    directory = os.path.dirname(file)
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        return f"directory {directory} does not exist"
    except PermissionError:
        return f"{who} cannot reach {directory} (a directory above it is closed to {who})"
    except OSError as exc:
        return f"{directory}: {exc.strerror or exc}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{directory} is not a directory"
    for name in (file, f"{file}-wal", f"{file}-shm"):
        try:
            found = os.stat(name)
        except FileNotFoundError:
            continue
        except PermissionError:
            return f"{who} cannot enter {directory} ({_owner(info)})"
        except OSError as exc:
            return f"{name}: {exc.strerror or exc}"
        if not stat.S_ISREG(found.st_mode):
            return f"{name} is not a file"
        if not os.access(name, os.R_OK | os.W_OK):
            return f"{who} cannot read and write {name} ({_owner(found)})"
    disk = os.statvfs(directory)
    if not os.access(directory, os.W_OK | os.X_OK):
        why = "a read-only file system" if disk.f_flag & os.ST_RDONLY else _owner(info)
        return (f"{who} cannot create files in {directory} ({why}); SQLite makes the store's "
                "-wal and -shm files there")
    # only a new store (SQLite's empty file is one): an existing one opens on a full disk,
    # and the service pages from memory meanwhile (monitor/store.py), which check-config
    # in the unit's ExecStartPre must not prevent
    new = not os.path.exists(file) or os.stat(file).st_size == 0
    if new and (disk.f_bfree if os.geteuid() == 0 else disk.f_bavail) == 0:
        return f"no space left on the file system of {directory} to create the store"
    return None


def read_problem(path: str, who: str) -> str | None:
    """Why the process cannot read the file at `path`, or None."""
    try:
        info = os.stat(path)
    except PermissionError:
        return f"{who} cannot reach {path} (a directory above it is closed to {who})"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if not os.access(path, os.R_OK):
        return f"{who} cannot read {path} ({_owner(info)})"
    return None


def _owner(info: os.stat_result) -> str:
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = str(info.st_uid)
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    return f"owner {owner}, group {group}, mode {stat.S_IMODE(info.st_mode):04o}"
