"""Apprise: any Apprise URL (SMS, e-mail, Telegram, Signal, Matrix...) sent with
Apprise's async API. ``{address}`` in the URL is replaced by the responder's
address. Services without buttons get the ack link in the text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from alerts.delivery import Delivery, DeliveryError
from alerts.text import ACK_LABEL, SOURCE_TEXT, Gettext, ack_url, mask, notification_text
from monitor.core.durations import describe
from monitor.core.settings import ADDRESS_PLACEHOLDER, ChannelConfig

# Apprise itself is imported where it is used: ~30 ms of every start (bench/restart.py),
# for the sites that have an apprise channel only
if TYPE_CHECKING:
    import apprise


def url_problem(url: str) -> str | None:
    """Why Apprise cannot use `url`, or None; the problem never shows the URL, which may
    carry credentials."""
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        return "expected an Apprise URL such as tgram://..., mailto://..., json://..."
    import apprise
    from apprise.manager_plugins import NotificationManager

    schemes = NotificationManager()  # type: ignore[no-untyped-call]  # apprise leaves it untyped
    if scheme.lower() not in schemes:
        return f"Apprise does not know the scheme {describe(scheme)}"
    if ADDRESS_PLACEHOLDER in url:
        return None  # the full form is known once a responder's address is in it
    # Apprise logs why it rejects a URL, with the URL: keep that out of our output.
    apprise_log = logging.getLogger("apprise")
    was_disabled, apprise_log.disabled = apprise_log.disabled, True
    try:
        usable = apprise.Apprise.instantiate(url) is not None
    finally:
        apprise_log.disabled = was_disabled
    return None if usable else f"Apprise cannot use this {scheme} URL (check its form)"


class AppriseChannel:
    """Sends through any Apprise URL with Apprise's async API.

    ``{address}`` in the URL is replaced by the responder's address (URL-quoted,
    keeping ``+`` and ``@``). Apprise is told the timeout; a call that still runs
    past it is abandoned (its worker thread ends with the service's own timeout).
    """

    type = "apprise"
    reaches_a_person = True

    # A high page is a failure the nurse must act on; Apprise services colour or
    # sound by these types.
    NOTIFY_TYPES: Mapping[str, str] = {  # apprise.NotifyType's names
        "high": "FAILURE",
        "medium": "WARNING",
        "low": "INFO",
    }

    def __init__(self, config: ChannelConfig, gettext: Gettext = SOURCE_TEXT) -> None:
        if not config.url:
            raise ValueError(f"apprise channel {config.name!r} needs a url")
        self.name = config.name
        self._gettext = gettext
        self._url = config.url
        self._timeout = config.timeout

    def url(self, address: str | None) -> str:
        if ADDRESS_PLACEHOLDER not in self._url:
            return self._url
        if not address:
            raise DeliveryError("apprise: no address for this responder")
        return self._url.replace(ADDRESS_PLACEHOLDER, quote(address, safe="+@"))

    def notify_type(self, delivery: Delivery) -> apprise.NotifyType:
        import apprise

        if delivery.kind not in ("page", "system"):
            return apprise.NotifyType.INFO
        priority = str(delivery.payload.get("priority", ""))
        return apprise.NotifyType[self.NOTIFY_TYPES.get(priority, "FAILURE")]

    async def send(self, delivery: Delivery, address: str | None) -> str | None:
        import apprise

        service = apprise.Apprise()
        if not service.add(self.url(address)):
            raise DeliveryError("apprise: the URL is not usable (check its form)")
        title, body = notification_text(delivery, self._gettext)
        link = ack_url(delivery, via="apprise")
        if link is not None:
            # most of these services have no buttons
            body += f"\n{self._gettext(ACK_LABEL)}: {link}"
        try:
            # a margin over Apprise's own limit, in case one service ignores it
            async with asyncio.timeout(self._timeout + 1):
                result = await service.async_notify(
                    body=body,
                    title=title,
                    notify_type=self.notify_type(delivery),
                    body_format=apprise.NotifyFormat.TEXT,
                    timeout=self._timeout,
                )
        except TimeoutError:
            raise DeliveryError.timeout(self._timeout) from None
        if result:
            return None
        if result.status == apprise.AppriseResultStatus.TIMEOUT:
            raise DeliveryError.timeout(self._timeout)
        problems = [entry.message for entry in result.logs() if entry.message]
        reason = problems[-1] if problems else result.status.name.lower()
        url = urlsplit(self._url)
        raise DeliveryError(mask(f"apprise: {reason}", address, url.username, url.password))
