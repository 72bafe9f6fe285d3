"""The words the push channels (ntfy, Pushover, Apprise) share: a notification's title
and body, the ack link, and failure reasons with the personal data masked out.

The text comes from the payload the caller built (interface section 8 for pages,
plus the notice, test and system forms), so every service shows the same words; the
few words added here are in the site's language: `gettext` is its catalog's
(`monitor.i18n`), English where none is given.
Addresses are personal data (phone numbers, topics that work as passwords): they
are never logged and are masked out of failure reasons.
"""

from __future__ import annotations

import gettext as _gettext
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from alerts.delivery import Delivery
from monitor.core.words import N_

Gettext = Callable[[str], str]  # a message id in the site's language
SOURCE_TEXT: Gettext = _gettext.NullTranslations().gettext  # no catalog: the English
MAX_REASON = 160  # characters of a service's own error text kept in a reason
#: the button or link that acknowledges from the notification
ACK_LABEL = N_("Acknowledge")
#: how loud a page is, first in its title
PRIORITY_LABELS = {"high": N_("HIGH"), "medium": N_("MEDIUM"), "low": N_("LOW")}


def notification_text(delivery: Delivery, _: Gettext) -> tuple[str, str]:
    """``(title, body)`` of a delivery, for services that show a notification."""
    payload = delivery.payload
    place = str(payload.get("booth_name") or payload.get("booth") or "boothwatch")
    message = str(payload.get("message") or f"incident {delivery.incident}")
    match delivery.kind:
        case "page":
            priority = PRIORITY_LABELS.get(str(payload.get("priority")))
            title = f"{_(priority) if priority else '?'} · {place}"
            if payload.get("urgent"):
                title += " · " + _("URGENT (repeated calls)")
        case "notice":
            title = place
        case "test":
            title = _("boothwatch TEST")
        case "system":
            title = str(payload.get("title") or "boothwatch")
    return title, message


def ack_url(delivery: Delivery, via: str | None = None) -> str | None:
    """The responder's signed ack link of a page or a self-test (None for notices, and for
    `boothwatch test-page`, whose tests carry none).

    ``via`` adds ``?via=<channel type>`` so the acknowledgement records where it came from.
    """
    url = delivery.payload.get("ack_url")
    if delivery.kind not in ("page", "test") or not isinstance(url, str) or not url:
        return None
    if via is None:
        return url
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query), ("via", via)])
    return urlunsplit(parts._replace(query=query))


def mask(text: str, address: str | None, *secrets: str | None) -> str:
    """`text` without the responder's address or the channel's `secrets` (a token, the
    credentials of a URL: a service may echo them back), at most MAX_REASON characters."""
    if address:
        text = text.replace(address, "<address>")
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<secret>")
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."
