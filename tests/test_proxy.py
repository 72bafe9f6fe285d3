"""The reverse proxy the docs show (deploy/caddy/Caddyfile), run as shipped in front of the
real service: phones' ack links and the station board over TLS."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from monitor.station import COOKIE
from tests.harness.broker import Mosquitto, Publish, free_port
from tests.harness.caddy import Caddy, require_caddy
from tests.harness.service import event, events_topic, start_service
from tests.harness.site import Site

pytestmark = pytest.mark.integration
PASSWORD = "station password"


async def test_ack_links_and_the_station_login_work_through_the_shipped_caddyfile(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """With boothwatch on loopback behind the shipped Caddyfile and public_url its https
    address, a page's ack link opens and acknowledges over TLS (trusting Caddy's CA alone),
    and the station logs in there with a Secure cookie."""
    upstream = free_port()
    async with Caddy(tmp_path / "caddy", require_caddy(), f"127.0.0.1:{upstream}") as caddy:

        def behind_caddy(site: Site) -> None:
            site.http_port = upstream
            site.http = {"public_url": caddy.url}

        env = {"BOOTHWATCH_BOARD_PASSWORD": PASSWORD}
        async with start_service(tmp_path, mosquitto, mqtt_publish, env=env,
                                 edit=behind_caddy, step2="1h") as svc:
            tls = caddy.ssl_context()
            async with aiohttp.ClientSession() as http:
                svc.publish(events_topic("b1"), event("button", press="call"))
                page = (await svc.hook.wait(1))[0]
                assert page["ack_url"].startswith(f"{caddy.url}/ack/")
                async with http.get(page["ack_url"], ssl=tls) as resp:
                    assert resp.status == 200 and "I'm going" in await resp.text()
                async with http.post(page["ack_url"], ssl=tls) as resp:
                    assert resp.status == 200
                view = await svc.runtime.api.find(page["incident"])
                assert view is not None and view.state == "acknowledged"

                async with http.get(f"{caddy.url}/api/incidents", ssl=tls) as resp:
                    assert resp.status == 401
                async with http.post(f"{caddy.url}/board/login", data={"password": PASSWORD},
                                     ssl=tls, allow_redirects=False,
                                     headers={"Origin": caddy.url}) as resp:
                    assert resp.status == 303
                    morsel = resp.cookies[COOKIE]
                    assert morsel["secure"] and morsel["httponly"]
                async with http.get(f"{caddy.url}/api/incidents", ssl=tls,
                                    headers={"Cookie": f"{COOKIE}={morsel.value}"}) as resp:
                    assert resp.status == 200
                    assert [i["state"] for i in await resp.json()] == ["acknowledged"]
