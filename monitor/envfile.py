"""A systemd ``EnvironmentFile=`` read as systemd reads it, for ``check-config --env-file``.

The service gets its secrets from ``/etc/boothwatch/env`` through the unit's
``EnvironmentFile=``; check-config must see what the service will see, so it
reads the file with systemd's grammar (systemd.exec(5), "EnvironmentFile=";
``parse_env_file_internal`` in systemd's src/basic/env-file.c):

- ``KEY=VALUE`` a line; blank lines, lines starting with ``#`` or ``;`` and lines
  without ``=`` are skipped; whitespace around the key and the value is dropped.
- An unquoted value keeps everything else, `` #...`` included (no inline comment),
  and reads ``\\x`` as ``x``; a backslash at the end of a line joins the next one.
- ``'...'`` keeps every character; ``"..."`` unescapes only ``\\" \\\\ \\` \\$`` and
  a backslash-newline; quoted and unquoted parts run together (``A="x"y`` is ``xy``).
- A comment ends at its line, even after a backslash (systemd 254 on; 252, Debian 12's,
  carried such a comment onto the next line).
- A name that is not a shell variable name (``export KEY`` is one) makes systemd
  ignore the line, with a warning in its journal: here it is a problem, named.

python-dotenv reads another dialect: it takes ``export KEY=...`` as KEY (systemd
ignores that line, so check-config would pass a password the service never gets),
cuts unquoted values at `` #``, keeps their backslashes, does not join continued
lines and turns ``\\n`` in double quotes into a newline. No maintained Python package
reads systemd's; the grammar is the small state machine below, tested against the
cases of systemd's own tests (tests/test_envfile.py).
"""

from __future__ import annotations

import enum
import re
from pathlib import Path

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # systemd's env_name_is_valid
_WHITESPACE = " \t\n\r"
_NEWLINE = "\n\r"
_UNESCAPED_IN_DOUBLE_QUOTES = '"\\`$'


class _State(enum.Enum):
    PRE_KEY = enum.auto()
    KEY = enum.auto()
    PRE_VALUE = enum.auto()
    VALUE = enum.auto()
    VALUE_ESCAPE = enum.auto()
    SINGLE_QUOTED = enum.auto()
    DOUBLE_QUOTED = enum.auto()
    DOUBLE_QUOTED_ESCAPE = enum.auto()
    COMMENT = enum.auto()
    COMMENT_ESCAPE = enum.auto()


def parse(text: str) -> list[tuple[int, str, str]]:
    """Every assignment as ``(line, key, value)``, in file order, names not checked yet."""
    s = _State
    state = s.PRE_KEY
    out: list[tuple[int, str, str]] = []
    key: list[str] = []
    value: list[str] = []
    key_end: int | None = None  # where the key's trailing whitespace starts
    value_end: int | None = None  # where an unquoted value's trailing whitespace starts
    line = start = 1

    def push(chomp: bool) -> None:
        name = "".join(key[:key_end])
        out.append((start, name, "".join(value[:value_end] if chomp else value)))
        key.clear()
        value.clear()

    for c in text:
        match state:
            case s.PRE_KEY:
                if c in "#;":
                    state = s.COMMENT
                elif c not in _WHITESPACE:
                    state, key_end, start = s.KEY, None, line
                    key.append(c)
            case s.KEY:
                if c in _NEWLINE:  # no "=": skipped
                    state = s.PRE_KEY
                    key.clear()
                elif c == "=":
                    state, value_end = s.PRE_VALUE, None
                else:
                    if c not in _WHITESPACE:
                        key_end = None
                    elif key_end is None:
                        key_end = len(key)
                    key.append(c)
            case s.PRE_VALUE:
                if c in _NEWLINE:
                    state = s.PRE_KEY
                    push(chomp=False)
                elif c == "'":
                    state = s.SINGLE_QUOTED
                elif c == '"':
                    state = s.DOUBLE_QUOTED
                elif c == "\\":
                    state = s.VALUE_ESCAPE
                elif c not in _WHITESPACE:
                    state = s.VALUE
                    value.append(c)
            case s.VALUE:
                if c in _NEWLINE:
                    state = s.PRE_KEY
                    push(chomp=True)
                elif c == "\\":
                    state, value_end = s.VALUE_ESCAPE, None
                else:
                    if c not in _WHITESPACE:
                        value_end = None
                    elif value_end is None:
                        value_end = len(value)
                    value.append(c)
            case s.VALUE_ESCAPE:
                state = s.VALUE
                if c not in _NEWLINE:  # an escaped newline joins the lines
                    value.append(c)
            case s.SINGLE_QUOTED:
                if c == "'":
                    state = s.PRE_VALUE
                else:
                    value.append(c)
            case s.DOUBLE_QUOTED:
                if c == '"':
                    state = s.PRE_VALUE
                elif c == "\\":
                    state = s.DOUBLE_QUOTED_ESCAPE
                else:
                    value.append(c)
            case s.DOUBLE_QUOTED_ESCAPE:
                state = s.DOUBLE_QUOTED
                if c in _UNESCAPED_IN_DOUBLE_QUOTES:
                    value.append(c)
                elif c != "\n":
                    value += ("\\", c)
            case s.COMMENT:
                if c == "\\":
                    state = s.COMMENT_ESCAPE
                elif c in _NEWLINE:
                    state = s.PRE_KEY
            case s.COMMENT_ESCAPE:
                state = s.PRE_KEY if c in _NEWLINE else s.COMMENT
        if c == "\n":
            line += 1
    if state in (s.PRE_VALUE, s.VALUE, s.VALUE_ESCAPE, s.SINGLE_QUOTED, s.DOUBLE_QUOTED,
                 s.DOUBLE_QUOTED_ESCAPE):
        push(chomp=state is s.VALUE)
    return out


def read(path: str | Path) -> tuple[dict[str, str], list[str]]:
    """The variables the service would get from the file, and what is wrong with it
    (each problem names the file, and the line)."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        return {}, [f"{where}: cannot read: {exc.strerror or exc}"]
    except UnicodeDecodeError as exc:
        return {}, [f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start}): "
                    "systemd ignores such lines"]
    variables: dict[str, str] = {}
    problems = []
    for line, key, value in parse(text):
        if _NAME.fullmatch(key):
            variables[key] = value  # the last one wins, as in systemd
        elif _NAME.fullmatch(key.removeprefix("export").strip()):
            problems.append(f'{where} line {line}: "{key}": systemd ignores the line (it reads '
                            'no "export"): write it as ' f"{key.split()[-1]}=...")
        else:
            problems.append(f"{where} line {line}: {key!r} is not a variable name: systemd "
                            "ignores the line")
    return variables, problems
