"""The site's channels, built from the config: one per configured entry."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TextIO, assert_never

import aiohttp

from alerts.channels.apprise import AppriseChannel
from alerts.channels.console import ConsoleChannel
from alerts.channels.mqtt import MqttChannel, Publish
from alerts.channels.ntfy import NtfyChannel
from alerts.channels.pushover import PushoverChannel
from alerts.channels.webhook import WebhookChannel
from alerts.delivery import Channel
from alerts.receipts import ReceiptWatcher
from alerts.text import Gettext
from monitor.core.settings import ChannelConfig, Policy, Priority


def build_channels(
    configs: Mapping[str, ChannelConfig],
    session: aiohttp.ClientSession,
    publish: Publish,
    site: str,
    stream: TextIO = sys.stdout,
    *,
    gettext: Gettext,
    policies: Mapping[Priority, Policy] | None = None,
    receipts: ReceiptWatcher | None = None,
) -> dict[str, Channel]:
    """One channel per configured entry, keyed like `configs` (`Delivery.channels`).

    `gettext` says what a channel adds to a page (a title, the Acknowledge button) in
    the site's language;
    `policies` (the config's escalation) set Pushover's emergency retry; `receipts`
    is told about every Pushover emergency receipt (see alerts/receipts.py).
    """
    channels: dict[str, Channel] = {}
    for key, config in configs.items():
        match config.type:
            case "webhook":
                channels[key] = WebhookChannel(config, session)
            case "mqtt":
                channels[key] = MqttChannel(config, publish, site)
            case "console":
                channels[key] = ConsoleChannel(config, stream)
            case "ntfy":
                channels[key] = NtfyChannel(config, session, gettext)
            case "pushover":
                high = policies.get("high") if policies is not None else None
                channels[key] = PushoverChannel(config, session, high, receipts, gettext)
            case "apprise":
                channels[key] = AppriseChannel(config, gettext)
            case _:
                assert_never(config.type)
    return channels
