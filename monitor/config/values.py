"""The kinds of value a config key takes, each checked and worded as a problem reads.

A check raises a problem worded to follow its key path (``must be greater than 0``);
pydantic reports it at that key, next to every other problem in the file.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, ClassVar, NoReturn
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from monitor.core.durations import DURATION_PATTERN, describe, parse_duration

Loc = tuple[str | int, ...]
KEY_ERROR = "config_key"  # a problem with a table's key (a name), not with its value
Problem = Callable[[Any], str | None]  # what is wrong with a value, or None


def refuse(problems: Iterable[tuple[Loc, str]]) -> NoReturn:
    """Reject the value being checked; each problem sits at its path below the value."""
    raise ValidationError.from_exception_data("config", [
        InitErrorDetails(type=PydanticCustomError("config", "{text}", {"text": text}), loc=at,
                         input=None)
        for at, text in problems
    ])


def wrong(text: str, *at: str | int) -> NoReturn:
    refuse([(at, text)])


def check(problem: Problem, *, before: bool = False) -> Any:
    """A validator refusing the values `problem` has something to say about; ``before``:
    it sees the value as the file has it, before pydantic checks its type."""
    def run(value: Any) -> Any:
        if (text := problem(value)) is not None:
            wrong(text)
        return value

    return BeforeValidator(run) if before else AfterValidator(run)


def one_of(options: Sequence[str]) -> str:
    """The options as prose: "a, b or c"."""
    return options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"


def did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def not_a(kind: type, expected: str, value: object) -> str | None:
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return None
    return f"expected {expected}, got {describe(value)}"


def expect(kind: type, expected: str, value: object) -> Any:
    if type(value) is kind:  # the usual case, without not_a's checks
        return value
    if (problem := not_a(kind, expected, value)) is not None:
        wrong(problem)
    return value


def not_one_of(options: Sequence[str], value: object) -> str | None:
    if isinstance(value, str) and value in options:
        return None
    hint = did_you_mean(value, options) if isinstance(value, str) else ""
    return f"expected {one_of(options)}, got {describe(value)}{hint}"


def choice(options: Sequence[str]) -> Any:
    return check(partial(not_one_of, options), before=True)


def whole(low: int, high: int, expected: str, out_of_range: str) -> Any:
    def problem(value: object) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
            return f"{out_of_range}, got {describe(value)}"
        return not_a(int, expected, value)

    return check(problem, before=True)


def listing(expected: str, empty: str | None = None) -> Any:
    return check(lambda value: not_a(list, expected, value) or (empty if value == [] else None),
                 before=True)


def text(value: object) -> str:
    checked: str = expect(str, "a string", value)
    if not checked.strip():
        wrong("must not be empty")
    return checked


def http_url(value: object) -> str:
    url = text(value)
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        wrong(f"not a valid URL ({exc})")
    if parts.scheme.lower() not in ("http", "https"):
        wrong(f"scheme must be http or https, got {describe(url)}")
    if not parts.hostname:
        wrong(f"missing host, got {describe(url)}")
    return url


def env(info: ValidationInfo) -> Mapping[str, str]:
    variables: Mapping[str, str] = (info.context or {})["env"]
    return variables


def from_env(instead_of: str | None = None) -> AfterValidator:
    """An environment variable's name; it must be set (and not beside `instead_of`)."""
    def run(var: str, info: ValidationInfo) -> str:
        if instead_of is not None and info.data.get(instead_of) is not None:
            wrong(f"set either {instead_of} or {info.field_name}, not both")
        if not env(info).get(var, "").strip():
            wrong(f"environment variable {var} is not set")
        return var

    return AfterValidator(run)


def _duration(value: object) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        wrong(str(exc))


@dataclass(frozen=True, slots=True)
class Missing:
    """What a problem says after "missing" when this required key is absent."""

    more: str


class Table(BaseModel):
    """A TOML table: no unknown key, and no value read as another type ("5" is no number)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    kind: ClassVar[str] = "a table"  # as "expected ..., got ..." names it
    #: what an unknown key is told instead of "unknown key (did you mean ...)"
    unknown: ClassVar[str | None] = None
    #: keys that must not be in the file, and why: secrets belong in the environment
    refused: ClassVar[Mapping[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _a_table(cls, value: object) -> object:
        return expect(dict, cls.kind, value)


Text = Annotated[str, BeforeValidator(text)]
Strings = Annotated[list[Text], listing("a list of strings", "must not be empty")]
Flag = Annotated[bool, check(partial(not_a, bool, "true or false"), before=True)]
Duration = Annotated[float, BeforeValidator(_duration), WithJsonSchema({"anyOf": [
    {"type": "number", "minimum": 0}, {"type": "string", "pattern": DURATION_PATTERN}]})]
Positive = Annotated[Duration, check(lambda s: None if s > 0 else "must be greater than 0")]
Percent = Annotated[int, whole(1, 99, "a whole percentage from 1 to 99",
                               "must be between 1 and 99")]
HttpUrl = Annotated[str, BeforeValidator(http_url),
                    WithJsonSchema({"type": "string", "pattern": "^https?://"})]
