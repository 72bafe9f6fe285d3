"""What a standby answers over HTTP while another process owns its site (`monitor.lease`).

A standby is hot: its config is loaded and checked, its store open, and it tries to take
the site's lease every few tenths of a second. Meanwhile its HTTP address says so, on the
same address the owner's full service will answer once it takes over:

* ``GET /healthz`` 200: the process is alive (systemd and the proxy keep it);
* ``GET /readyz`` 503 with the reason ``standby`` and the current owner: a proxy in front
  of the pair (``deploy/caddy/Caddyfile``) sends stations, ack links and the API to the
  box that answers 200;
* ``GET /metrics``: ``boothwatch_site_owner`` 0 and the process's own metrics;
* anything else 503 with ``Retry-After``: no booth is watched here, ask the owner.

It also keeps a connection of its own to the site's broker (its client id with
``-standby`` and the process's holder appended, no subscription, nothing kept by the
broker; MQTT 5 only, as 3.1.1 has no session expiry) so that a standby that could not
reach the broker says so long before it matters: ``/readyz`` adds the reason ``broker not
connected``. It is closed before the owner's connection, with the site's own client id
and session, opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from devices.mqtt import MqttLink
from monitor.core.settings import HttpConfig, MqttConfig
from monitor.lease import SiteLease

log = structlog.get_logger(__name__)

Render = Callable[[], Awaitable[bytes]]
LEASE: web.AppKey[SiteLease] = web.AppKey("lease", SiteLease)
RENDER: web.AppKey[Render] = web.AppKey("render")
LINK: web.AppKey[MqttLink | None] = web.AppKey("link")


def _owner(lease: SiteLease) -> dict[str, object]:
    holder, epoch = lease.owner or (None, None)
    return {"site": lease.site, "owner": holder, "epoch": epoch}


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "role": "standby"})


async def _readyz(request: web.Request) -> web.Response:
    link = request.app[LINK]
    reasons = ["standby"] + (["broker not connected"]
                             if link is not None and not link.connected else [])
    return web.json_response({"ready": False, "reasons": reasons,
                              **_owner(request.app[LEASE])}, status=503)


async def _metrics(request: web.Request) -> web.Response:
    body = await request.app[RENDER]()
    return web.Response(body=body, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def _elsewhere(request: web.Request) -> web.Response:
    lease = request.app[LEASE]
    holder = (lease.owner or ("another process", 0))[0]
    return web.json_response(
        {"error": f"standby: site {lease.site} is watched by {holder}; ask it (or the "
                  "proxy in front of both)", **_owner(lease)},
        status=503, headers={"Retry-After": "1"})


def app(lease: SiteLease, render: Render, link: MqttLink | None = None) -> web.Application:
    application = web.Application(client_max_size=64 * 1024)
    application[LEASE] = lease
    application[RENDER] = render
    application[LINK] = link
    application.add_routes([
        web.get("/healthz", _healthz),
        web.get("/readyz", _readyz),
        web.get("/metrics", _metrics),
        web.route("*", "/{tail:.*}", _elsewhere),
    ])
    return application


async def stand_by(lease: SiteLease, http: HttpConfig | None, render: Render,
                   mqtt: MqttConfig | None = None) -> int:
    """Answer as a standby on `http` (None: no HTTP), with a broker connection of its own
    on `mqtt` (None: none), until the lease is ours; its epoch."""
    from monitor.http import listen  # the full service's HTTP: not needed to stand by

    log.info("standby", site=lease.site, holder=lease.holder)
    link = linking = None
    # MQTT 5 only: a 3.1.1 broker would keep a session for every standby's client id
    if mqtt is not None and mqtt.protocol == "5":
        link = MqttLink(dataclasses.replace(
            mqtt, client_id=f"{mqtt.client_id}-standby-{lease.holder}"[:128],
            session_expiry=0))
        linking = asyncio.create_task(link.run(), name="mqtt-standby")
    runner = None
    try:
        if http is not None:
            runner = web.AppRunner(app(lease, render, link), access_log=None)
            await runner.setup()
            await listen(runner, http)
        return await lease.acquire()
    finally:
        if linking is not None and link is not None:
            linking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await linking
            await link.close()
        if runner is not None:
            # the owner's service listens on the same address next
            await asyncio.shield(runner.cleanup())
