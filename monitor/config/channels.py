"""The [channels] tables: one model per channel type, told apart by ``type``.

Each knows which keys its type takes and makes the core's `ChannelConfig`, with
its secret (webhook HMAC key, access token, Apprise URL) from the environment
variable a key names. The rules of each service (Pushover's limits, ntfy's
topics, Apprise's URLs) come from the alerts module that talks to it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from alerts.channels import apprise, ntfy
from alerts.channels.pushover import PUSHOVER_API, expire_problem, poll_problem, retry_problem
from monitor.config.values import (
    KEY_ERROR,
    Flag,
    HttpUrl,
    Missing,
    Positive,
    Table,
    Text,
    check,
    did_you_mean,
    env,
    expect,
    from_env,
    one_of,
    refuse,
    wrong,
)
from monitor.core.durations import describe
from monitor.core.settings import ChannelConfig

_CHANNEL = ChannelConfig("", "console")  # the defaults
_TOKEN_IN_FILE = {"token": "do not put the token in the file; name an environment variable "
                           "that holds it in token_env"}
#: keys naming an environment variable -> the ChannelConfig field its value fills
_FROM_ENV = {"secret_env": "secret", "token_env": "token", "url_env": "url"}


class Channel(Table):
    def config(self, name: str, variables: Mapping[str, str]) -> ChannelConfig:
        """The core's `ChannelConfig`, with the secrets from the environment."""
        values = self.model_dump(exclude_none=True)
        for key, field in _FROM_ENV.items():
            if key in values:
                value = variables[values.pop(key)]
                # an HMAC key is used byte for byte; tokens and URLs lose stray blanks
                values[field] = value if field == "secret" else value.strip()
        return ChannelConfig(name=name, **values)


def _apprise_url(url: str) -> str:
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None  # not a URL urllib understands; Apprise's check says why
    if password:
        wrong("carries a password: put the URL in an environment variable and name it in "
              "url_env")
    if (problem := apprise.url_problem(url)) is not None:
        wrong(problem)  # the URL itself is not shown: it may carry credentials
    return url


def _apprise_url_from_env(var: str, info: ValidationInfo) -> str:
    if (problem := apprise.url_problem(env(info)[var].strip())) is not None:
        wrong(problem)
    return var


def _expire(expire: float, info: ValidationInfo) -> float:
    if (problem := expire_problem(expire, info.data.get("retry"))) is not None:
        wrong(problem)
    return expire


class Webhook(Channel):
    type: Literal["webhook"]
    url: HttpUrl
    secret: Text | None = None
    secret_env: Annotated[Text, from_env(instead_of="secret")] | None = None
    timeout: Positive = _CHANNEL.timeout


class MqttChannel(Channel):
    type: Literal["mqtt"]
    topic: Annotated[Text, check(lambda topic: "must not contain the wildcards + or #"
                                 if "+" in topic or "#" in topic else None)] | None = None


class Console(Channel):
    type: Literal["console"]
    watched: Flag = False


class Ntfy(Channel):
    refused = _TOKEN_IN_FILE
    type: Literal["ntfy"]
    url: HttpUrl
    topic: Annotated[Text, check(ntfy.topic_problem)] | None = None
    token_env: Annotated[Text, from_env()] | None = None
    timeout: Positive = _CHANNEL.timeout


class Pushover(Channel):
    refused = _TOKEN_IN_FILE
    type: Literal["pushover"]
    url: HttpUrl = PUSHOVER_API
    token_env: Annotated[Text, from_env(), Missing(
        ": the environment variable that holds the application token")]
    retry: Annotated[Positive, check(retry_problem)] | None = None
    expire: Annotated[Positive, AfterValidator(_expire)] | None = None
    poll_interval: Annotated[Positive, check(poll_problem)] = _CHANNEL.poll_interval
    timeout: Positive = _CHANNEL.timeout


class Apprise(Channel):
    type: Literal["apprise"]
    url: Annotated[Text, AfterValidator(_apprise_url)] | None = None
    url_env: Annotated[Text, from_env(instead_of="url"),
                       AfterValidator(_apprise_url_from_env)] | None = None
    timeout: Positive = _CHANNEL.timeout

    @model_validator(mode="after")
    def _a_url(self) -> Self:
        if self.url is None and self.url_env is None:
            wrong("missing (or url_env: an environment variable holding a URL that carries "
                  "credentials)", "url")
        return self


CHANNEL_TYPES: dict[str, type[Channel]] = {
    "webhook": Webhook, "mqtt": MqttChannel, "console": Console, "ntfy": Ntfy,
    "pushover": Pushover, "apprise": Apprise,
}  # fmt: skip
_EVERY_CHANNEL_KEY = dict.fromkeys(k for t in CHANNEL_TYPES.values() for k in t.model_fields)
_CHANNEL_NAME = "[A-Za-z0-9_-]+"


def _channel_type(value: object) -> dict[str, object]:
    """Without a usable ``type`` there is no model to check a channel against: say so, and
    check its keys against those of every type."""
    table: dict[str, object] = expect(dict, "a table", value)
    kind = table.get("type")
    if isinstance(kind, str) and kind in CHANNEL_TYPES:
        return table
    types = one_of(list(CHANNEL_TYPES))
    refuse([(("type",), f"expected {types}, got {describe(kind)}" if "type" in table
             else f"missing ({types})"),
            *(((key,), "unknown key" + did_you_mean(key, _EVERY_CHANNEL_KEY))
              for key in table if key not in _EVERY_CHANNEL_KEY)])


def _channel_name(name: str) -> str:
    if not re.fullmatch(_CHANNEL_NAME, name):
        # its own error type: pydantic puts "[key]" after the name, and only this check
        # may have it taken off (a table may have a key called "[key]")
        raise PydanticCustomError(KEY_ERROR, "{text}", {
            "text": f"channel name must match ^{_CHANNEL_NAME}$"})
    return name


AnyChannel = Annotated[
    Annotated[Webhook | MqttChannel | Console | Ntfy | Pushover | Apprise,
              Field(discriminator="type")],
    BeforeValidator(_channel_type),
]
#: one channel checked alone (the loader asks whether a channel needs addresses)
CHANNEL: TypeAdapter[Channel] = TypeAdapter(AnyChannel)
ChannelName = Annotated[str, BeforeValidator(_channel_name),
                        WithJsonSchema({"type": "string", "pattern": f"^{_CHANNEL_NAME}$"})]
