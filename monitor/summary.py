"""The one-screen summary `boothwatch check-config` prints of a checked configuration.

It never shows a secret: no password, token or webhook secret, and of a URL only
its scheme, host and port, since paths and queries can carry tokens.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

from alerts.channels.pushover import pushover_timing
from monitor.core.durations import format_duration
from monitor.core.settings import PRIORITIES, ChannelConfig, Config, Policy


def _hide_path(url: str | None) -> str:
    """scheme://host[:port] of a URL plus "/..." if it has more: paths can carry tokens."""
    if not url:
        return "?"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    origin = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    more = parts.path not in ("", "/") or parts.query or parts.fragment
    return origin + ("/..." if more else "")


def _push_summary(ch: ChannelConfig, high: Policy | None) -> str:
    """The rest of a summary line for a push channel: no token, topic or URL path."""
    fd = format_duration
    parts = []
    if ch.type == "ntfy":
        where = _hide_path(ch.url)
        # a topic works like a password on a server without access control: not shown
        parts.append("topic from a template" if ch.topic else "topic = responder's address")
        parts.append("access token set" if ch.token else "no access token")
    elif ch.type == "pushover":
        where = _hide_path(ch.url)
        retry, expire = pushover_timing(ch, high)
        parts += ["app token set", f"high: emergency, retry {fd(retry)}, expire {fd(expire)}",
                  f"receipts polled every {fd(ch.poll_interval)}"]
    else:
        where = f"{(ch.url or '?').partition('://')[0]}://..."
        if ch.needs_address:
            parts.append("address from each responder")
    parts.append(f"timeout {fd(ch.timeout)}")
    return f" {where} ({', '.join(parts)})"


def _store(config: Config) -> str:
    store = config.store
    if store.url is None:
        return f"store: {store.path} (SQLite)"
    password = ("password from BOOTHWATCH_DB_PASSWORD" if store.password
                else "password, if any, from libpq's password or service file")
    return f"store: {store.url} (PostgreSQL, {password})"


def _board_hours(config: Config) -> str:
    hours = config.board.expected_hours
    if hours is None:
        return "expected at every hour (alert after 5 minutes without one)"
    if not hours:
        return "never expected (no alert without one)"
    return (f"expected {', '.join(s.text for s in hours)} "
            "(alert after 5 minutes without one then)")


def summary(config: Config) -> str:
    """A one-screen description of a checked configuration; it never shows a secret."""
    site, mqtt, http = config.site, config.mqtt, config.http
    fd = format_duration
    listen_host = f"[{http.host}]" if ":" in http.host else http.host
    mqtt_extra = [f"MQTT {mqtt.protocol}", f"keepalive {mqtt.keepalive}s",
                  f"outage paged after {format_duration(mqtt.outage_page_after)}"]
    if mqtt.username:
        mqtt_extra.append(f"user {mqtt.username}")
    mqtt_extra.append("password set" if mqtt.password else "no password")
    if mqtt.ca_file:
        mqtt_extra.append(f"CA {mqtt.ca_file}")
    if mqtt.cert_file:
        mqtt_extra.append(f"client cert {mqtt.cert_file}")
    lines = [
        f"config {config.source}",
        f"site: {site.id} ({site.name}), time zone {site.timezone}, language {site.language}"
        + (f" (catalogs in {site.catalogs} first)" if site.catalogs else "") + "; " + (
            "open at every hour" if site.hours is None else
            f"open {', '.join(s.text for s in site.hours)} (outside: long sessions and device "
            "trouble page role:technician at low priority)"),
        f"mqtt: {mqtt.url} as client {mqtt.client_id} ({', '.join(mqtt_extra)})",
        _store(config),
        f"http: listening on {listen_host}:{http.port}; ack links {http.public_url}/ack/... "
        f"valid {fd(http.ack_link_ttl)}",
        f"board: {http.public_url}/board, {_board_hours(config)}",
        f"booths ({len(config.booths)}):",
    ]
    for b in config.booths:
        high = b.thresholds("high")
        text = (
            f"  {b.id} {b.name}: long session {fd(b.long_session)}, stillness "
            f"{fd(b.stillness)}, device timeout {fd(b.device_timeout)}"
        )
        if b.occupancy_from == "door":
            text += f", occupancy from door (window {fd(b.door_window)})"
        text += f"; high risk: long session {fd(high.long_session)}, stillness {fd(high.stillness)}"
        lines.append(text)
    lines.append(f"devices ({len(config.devices)}):")
    for d in config.devices:
        text = f"  {d.id}: {d.source} {d.topic} → booth {d.booth}, {d.role}"
        if d.actions:
            text += "; actions " + ", ".join(f"{k}={v}" for k, v in d.actions.items())
        if d.inverted:
            text += "; inverted"
        lines.append(text)
    lines.append(f"responders ({len(config.responders)}):")
    for r in config.responders:
        duty = ("shifts " + ", ".join(s.text for s in r.shifts)) if r.shifts else "always on duty"
        route = " → ".join(c if config.channels[c].reaches_a_person else f"{c} (reaches nobody)"
                           for c in r.channels)
        lines.append(f"  {r.id} {r.name}: roles {', '.join(r.roles)}; channels {route}; {duty}")
    lines.append(f"channels ({len(config.channels)}):")
    for ch in config.channels.values():
        text = f"  {ch.name}: {ch.type}"
        if ch.type == "webhook":
            signed = "signed" if ch.secret else "unsigned"
            text += f" {_hide_path(ch.url)} ({signed}, timeout {fd(ch.timeout)})"
        elif ch.type == "mqtt":
            text += f" topic {ch.topic or f'boothwatch/{site.id}/pages/<responder>'}"
        elif ch.type in ("ntfy", "pushover", "apprise"):
            text += _push_summary(ch, config.escalation.get("high"))
        elif ch.watched:
            text += (", watched: what it prints counts as delivered; only for a terminal a "
                     "person watches (the demo), never a service whose output is its journal")
        else:
            text += (" (reaches nobody: it prints on the service's output; no fallback, a page it "
                     "prints is not delivered)")
        lines.append(text)
    rl = config.rate_limit
    repeats = (f"a repeated call jumps escalation at most once per {fd(rl.repeat_call_interval)}"
               if rl.repeat_call_interval > 0 else "every repeated call jumps escalation")
    lines.append(f"rate limit: {rl.rate:g} messages/s per sender, burst {rl.burst}; {repeats}")
    lines.append("escalation:")
    for priority in PRIORITIES:
        policy = config.escalation.get(priority)
        if policy is None:
            continue
        parts = [f"{fd(s.after)} → {', '.join(s.notify)}" for s in policy.steps]
        if policy.repeat is not None:
            parts.append(f"repeat {fd(policy.repeat)}")
        if policy.ack_timeout is not None:
            parts.append(f"ack timeout {fd(policy.ack_timeout)}")
        if policy.max_repeats is not None:
            parts.append(f"cycle {policy.max_repeats} more times")
        if policy.skip_busy:
            parts.append("busy responders skipped")
        lines.append(f"  {priority}: {'; '.join(parts)}")
    test = config.self_test
    lines.append("self-tests: " + ("none scheduled" if test is None else (
        f"{test.schedule} ({site.timezone}), a test page to every channel that reaches a "
        f"person; unanswered after {fd(test.answer_within)} → {', '.join(test.notify)}")))
    return "\n".join(lines)


#: channels whose pages reach a phone, where an ack link must open
PHONE_CHANNELS = frozenset({"ntfy", "pushover", "apprise", "webhook"})


def warnings(config: Config, env: Mapping[str, str]) -> list[str]:
    """What check-config warns of: the config works, but not as its site will expect."""
    found = []
    host = urlsplit(config.http.public_url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    used = {c for r in config.responders for c in r.channels}
    phones = sorted(c.name for c in config.channels.values()
                    if c.type in PHONE_CHANNELS and c.name in used)
    if loopback and phones:
        found.append(
            f"http.public_url is {config.http.public_url}, this box's loopback address, but "
            f"channel(s) {', '.join(phones)} page phones: the ack links in those pages will "
            "not open there. Set it to the address phones reach (a TLS reverse proxy: "
            "docs/install/proxy.md)")
    if not env.get("BOOTHWATCH_API_TOKEN") and not env.get("BOOTHWATCH_BOARD_PASSWORD"):
        found.append(
            "neither BOOTHWATCH_API_TOKEN nor BOOTHWATCH_BOARD_PASSWORD is set: anyone who "
            "reaches the HTTP port can read incidents and act through /api, and the station "
            "board cannot log in")
    elif not env.get("BOOTHWATCH_BOARD_PASSWORD"):
        found.append("BOOTHWATCH_BOARD_PASSWORD is not set: the station board cannot log in")
    return found
