"""Problems with a config file: each named by its key path, every one at once, in order.

`from_validation` words pydantic's errors as the rest of the problems read
("missing", "unknown key (did you mean ...)"); the schema's own checks are worded
already. `ordered` sorts the schema's problems and the loader's together as the
file reads: tables in the schema's order; in a table, unknown keys first, then
the keys in the schema's order; in a list, items that are not tables before the
problems inside items.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from monitor.config.schema import SiteFile
from monitor.config.values import KEY_ERROR, Loc, Missing, Table, did_you_mean
from monitor.core.durations import describe

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Problem:
    loc: Loc
    text: str
    #: sort after every problem of this top-level table: a check across tables reports
    #: after the tables it reads
    after: str | None = None


class ConfigError(Exception):
    """The configuration is unusable; `problems` lists every problem, each with its key path."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


def from_validation(exc: ValidationError, data: Mapping[str, object]) -> list[Problem]:
    out = []
    for error in exc.errors(include_url=False):
        where = _walk(error["loc"][:-1] if error["type"] == KEY_ERROR else error["loc"], data)
        out.append(Problem(where.loc, _wording(error, where)))
    return out


def ordered(problems: Sequence[Problem], data: Mapping[str, object]) -> list[str]:
    """Each problem as ``key.path: text``, sorted as the file reads."""
    def order(problem: Problem) -> tuple[tuple[float, ...], ...]:
        if problem.after is None:
            return _walk(problem.loc, data).order
        return (*_walk((problem.after,), data).order, (float("inf"),))

    return [f"{key_path(p.loc)}: {p.text}" for p in sorted(problems, key=order)]


def key_path(loc: Loc) -> str:
    """``booths[2].long_session``; a key that TOML must quote is quoted."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            shown = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
            path += f".{shown}" if path else shown
    return path


@dataclass(frozen=True, slots=True)
class _Place:
    loc: Loc  # pydantic's path without its own parts (union tags, "[key]")
    order: tuple[tuple[float, ...], ...]
    table: type[Table] | None  # the table that holds the last key
    field: FieldInfo | None  # the last key's field in it


def _walk(path: Sequence[str | int], data: object) -> _Place:
    """Follow `path` through the schema and the file side by side."""
    kind: Any = SiteFile
    node = data
    loc: list[str | int] = []
    order: list[tuple[float, ...]] = []
    table: type[Table] | None = None
    field: FieldInfo | None = None
    for index, part in enumerate(path):
        kind = _bare(kind)
        if get_origin(kind) in (Union, types.UnionType):  # the channel types, told by `type`
            members = {get_args(m.model_fields["type"].annotation)[0]: m for m in get_args(kind)}
            tag = node.get("type") if isinstance(node, dict) else None
            # without a usable type a channel's problems are at `type` and unknown keys,
            # which rank the same in every member
            kind = members.get(tag) if isinstance(tag, str) else None
            kind = kind or next(iter(members.values()))
            if part == tag:
                continue  # pydantic names the member it chose
        if isinstance(kind, type) and issubclass(kind, Table):
            table, names = kind, list(kind.model_fields)
            field = kind.model_fields.get(str(part))
            order.append((float(names.index(part)) if part in names else -1.0,))
            kind = field.annotation if field else None
        elif get_origin(kind) is list and isinstance(part, int):
            order.append((0.0 if index == len(path) - 1 else 1.0, float(part)))
            kind = get_args(kind)[0]
        else:  # a table of names (channels, address, actions): the file's order
            names = list(node) if isinstance(node, dict) else []
            order.append((float(names.index(part)) if part in names else 0.0,))
            kind = get_args(kind)[1] if get_origin(kind) is dict else None
        loc.append(part)
        node = child(node, part)
    return _Place(tuple(loc), tuple(order), table, field)


def _bare(kind: Any) -> Any:
    """`kind` without Annotated and without a None alternative."""
    while True:
        args = get_args(kind)
        if get_origin(kind) is Annotated:
            kind = args[0]
        elif get_origin(kind) in (Union, types.UnionType) and type(None) in args:
            (kind,) = (arg for arg in args if arg is not type(None))
        else:
            return kind


def child(node: object, part: str | int) -> Any:
    """The value under `part` of a parsed TOML table or array; None if there is none."""
    if type(node) is dict:  # what TOML parses to: no ABC check (10,000 booths ask often)
        return node.get(part)
    if isinstance(node, Mapping):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _wording(error: ErrorDetails, where: _Place) -> str:
    match error["type"]:
        case "missing":
            more = [m.more for m in where.field.metadata if isinstance(m, Missing)] \
                if where.field else []
            return "missing" + "".join(more)
        case "extra_forbidden" if where.table is not None:
            key = str(where.loc[-1])
            return (where.table.refused.get(key) or where.table.unknown
                    or "unknown key" + did_you_mean(key, where.table.model_fields))
        case "string_pattern_mismatch":
            return f"{describe(error['input'])} must match {error.get('ctx', {}).get('pattern')}"
    return error["msg"]  # the schema's own words
