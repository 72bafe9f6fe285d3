"""Hostile input never crashes the service: every rejection is a counted, known reason.

Property-based fuzzing (strategies and oracles in tests/harness/strategies.py) of the
canonical decoder, every firmware adapter and the config loader, then of the
running service: random requests to every HTTP route the app declares, and
random payloads over MQTT, after which the service still pages. bench/fuzz.py
runs the same targets for longer.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import tomllib
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
import pytest
import tomli_w
import yarl
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from devices import adapters
from devices.adapters.payload import REASONS
from monitor.core.readings import Reading
from monitor.core.settings import DeviceConfig
from monitor.http import make_app
from tests.harness import strategies as fz
from tests.harness.broker import Mosquitto, Publish
from tests.harness.devices import DEVICES, Z2M
from tests.harness.service import Service, event, events_topic, eventually, start_service
from tests.harness.site import SITE, Site

FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
SLOW = settings(FAST, max_examples=60)

_T = TypeVar("_T")

# --- the canonical decoder ----------------------------------------------------------------

CANONICAL_SEEDS = [json.dumps(e).encode() for e in fz.CANONICAL_EXAMPLES]


@FAST
@given(topic=st.sampled_from(fz.CANONICAL_TOPICS), payload=fz.payloads(fz.CANONICAL_EXAMPLES))
def test_canonical_mutated_payloads_decode_or_reject(topic: str, payload: bytes) -> None:
    """Mutated, oversized, deep, non-UTF-8 and NaN payloads give an event or a known reason."""
    fz.canonical_outcome(topic, payload)


@FAST
@given(topic=fz.hostile_topics(fz.CANONICAL_TOPICS), payload=st.sampled_from(CANONICAL_SEEDS))
def test_canonical_topic_injection_names_no_other_booth(topic: str, payload: bytes) -> None:
    """A topic with wildcards, NUL, '..' or extra levels is bad_topic or names one booth only."""
    outcome = fz.canonical_outcome(topic, payload)
    if outcome == fz.ACCEPTED:
        assert topic in fz.CANONICAL_TOPICS[:2]


def test_canonical_hostile_corpus_decodes_or_rejects() -> None:
    """Every classic hostile payload (deep, huge, NaN, bad UTF-8, surrogates) in every field."""
    outcomes = Counter(fz.canonical_outcome(fz.CANONICAL_TOPICS[0], p) for p in fz.HOSTILE_CORPUS)
    assert {"too_large", "bad_utf8", "not_json", "not_object", "bad_field"} <= set(outcomes)


def test_canonical_injected_topic_levels_name_no_other_booth() -> None:
    """Each injected level (wildcards, NUL, '..', '/', lookalikes) at each level of the topic."""
    for topic in fz.CANONICAL_TOPICS:
        levels = topic.split("/")
        for at in range(len(levels)):
            for injected in fz.INJECTED_LEVELS:
                bad = "/".join([*levels[:at], injected, *levels[at + 1 :]])
                outcome = fz.canonical_outcome(bad, CANONICAL_SEEDS[0])
                assert outcome in ("bad_topic", "unknown_booth") or bad in fz.CANONICAL_TOPICS


# --- the firmware adapters ----------------------------------------------------------------


def test_adapters_hostile_corpus_decodes_or_rejects() -> None:
    """Every classic hostile payload on every topic of every adapter: readings or a reason."""
    for dev, topic in fz.DEVICE_TOPICS:
        for payload in fz.HOSTILE_CORPUS:
            for retained in (False, True):
                fz.adapter_outcome(dev, topic, payload, retained)


def test_every_device_topic_has_documented_examples() -> None:
    """The fuzzer seeds every topic of every adapter with documented payloads."""
    assert {topic for _dev, topic in fz.DEVICE_TOPICS} == set(fz.ADAPTER_EXAMPLES)
    for dev, topic in fz.DEVICE_TOPICS:
        for example in fz.ADAPTER_EXAMPLES[topic]:
            assert fz.adapter_outcome(dev, topic, fz.encode(example), False) == fz.ACCEPTED


adapter_cases = st.sampled_from(fz.DEVICE_TOPICS).flatmap(
    lambda case: st.tuples(
        st.just(case[0]), st.just(case[1]), fz.payloads(fz.ADAPTER_EXAMPLES[case[1]])
    )
)


@FAST
@given(case=adapter_cases, retained=st.booleans())
def test_adapters_mutated_payloads_decode_or_reject(
    case: tuple[DeviceConfig, str, bytes], retained: bool
) -> None:
    """Every adapter, on each of its topics, gives readings or a known reason for hostile input."""
    fz.adapter_outcome(*case, retained)


JSON_TOPICS = [
    (dev, topic)
    for dev, topic in fz.DEVICE_TOPICS
    if any(isinstance(e, dict) for e in fz.ADAPTER_EXAMPLES[topic])
]
json_cases = st.sampled_from(JSON_TOPICS).flatmap(
    lambda case: st.tuples(
        st.just(case[0]),
        st.just(case[1]),
        fz.json_mutants([e for e in fz.ADAPTER_EXAMPLES[case[1]] if isinstance(e, dict)]),
    )
)


@settings(FAST, max_examples=300)
@given(case=json_cases, retained=st.booleans())
def test_adapters_json_mutants_decode_or_reject(
    case: tuple[DeviceConfig, str, bytes], retained: bool
) -> None:
    """Documented JSON payloads with fields swapped for hostile values: readings or a reason."""
    fz.adapter_outcome(*case, retained)


@FAST
@given(
    dev=st.sampled_from(DEVICES),
    data=st.data(),
    payload=st.sampled_from([fz.encode(e) for es in fz.ADAPTER_EXAMPLES.values() for e in es]),
)
def test_adapters_topic_injection_is_bad_topic(
    dev: DeviceConfig, data: st.DataObject, payload: bytes
) -> None:
    """A topic that is not exactly one of the device's is bad_topic, whatever it holds."""
    topic = data.draw(fz.hostile_topics(adapters.topics(dev)))
    fz.adapter_outcome(dev, topic, payload, data.draw(st.booleans()))


@FAST
@given(
    source=st.sampled_from(adapters.SOURCES),
    topic=fz.hostile_topics(["zigbee2mqtt/b1", "n/binary_sensor/s/state", "t", "shellies/x"]),
)
def test_a_device_topic_never_subscribes_to_a_wildcard(source: Any, topic: str) -> None:
    """A configured device topic with a wildcard or NUL is refused, never subscribed."""
    dev = DeviceConfig(id="d", source=source, topic=topic, booth="b1", role="call_button")
    try:
        subscribed = adapters.topics(dev)
    except ValueError:
        return
    assert subscribed and all(t and not any(w in t for w in "+#\x00") for t in subscribed)


def test_zigbee2mqtt_huge_integer_battery_is_dropped_alone() -> None:
    """A battery integer too big for a float is dropped and the rest of the message is read."""
    payload = b'{"action":"single","battery":' + b"9" * 400 + b"}"
    assert adapters.decode(Z2M, Z2M.topic, payload, False) == [Reading(press="single")]


# --- the config loader --------------------------------------------------------------------


def test_the_base_config_loads() -> None:
    """The document the config fuzzer mutates loads, also after a round trip through tomli-w."""
    assert fz.config_outcome(fz.BASE_CONFIG_TOML) == fz.ACCEPTED
    assert fz.config_outcome(tomli_w.dumps(tomllib.loads(fz.BASE_CONFIG_TOML))) == fz.ACCEPTED


@SLOW
@given(doc=fz.config_documents())
def test_config_mutants_load_or_list_problems_by_key_path(doc: dict[str, Any]) -> None:
    """Wrong types, missing and unknown keys, odd strings and numbers: a Config or key paths."""
    fz.config_outcome(tomli_w.dumps(doc))


@SLOW
@given(text=fz.byte_mutants([fz.BASE_CONFIG_TOML.encode()]))
def test_config_byte_mutants_load_or_list_problems(text: bytes) -> None:
    """A config file with bytes flipped, inserted or cut is a Config or a ConfigError."""
    fz.config_outcome(text)


DEEP_TOML = [b"a = " + b"[" * 100_000, b"a = " + b"[" * 500 + b"]" * 500, b"a = " + b"{b=" * 5000]
HUGE_INT_TOML = b"[site]\nid = " + b"9" * 5000


@pytest.mark.parametrize("text", DEEP_TOML, ids=["100000-arrays", "500-arrays", "5000-tables"])
def test_deeply_nested_toml_is_a_config_error(text: bytes) -> None:
    """A config file nesting arrays or tables deep is a ConfigError naming the file."""
    assert fz.config_outcome(text) == fz.CONFIG_ERROR


def test_huge_integer_in_toml_is_a_config_error() -> None:
    """A config value of 5000 digits is a ConfigError naming the file."""
    assert fz.config_outcome(HUGE_INT_TOML) == fz.CONFIG_ERROR


def test_other_hostile_config_files_are_config_errors() -> None:
    """Bad encodings, a BOM, NUL, 1e400, repeated tables: each a ConfigError, not a crash."""
    for text in fz.HOSTILE_CONFIGS:
        assert fz.config_outcome(text) == fz.CONFIG_ERROR, text[:60]


# --- the running service: HTTP ------------------------------------------------------------

API_TOKEN = "fuzz-api-token"
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")
RESPONDERS = ("ana", "rui", "nobody", "", "a" * 65, "../ana", "ana\n")
PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
HOSTILE_SEGMENTS = (
    "", ".", "..", "%00", "%2F", "%2e%2e", "a%2Fb", "%FF", "%", "%zz", "+", "#", "x" * 1500,
    "1 OR 1=1", "'; DROP TABLE incidents;--", "<script>", "null", "0", "-1",
)  # fmt: skip


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # "/api/incidents/{id}/ack"


def app_routes(service: Service) -> list[Route]:
    """Every route the app declares, so endpoints added later are fuzzed too."""
    app = make_app(service.runtime.api)
    routes = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        template = info.get("formatter") or info.get("path")
        if template and route.method != "HEAD":  # aiohttp adds HEAD for each GET
            routes.append(Route(route.method, template))
    return routes


@dataclass(frozen=True)
class Request:
    method: str
    route: Route
    path: str  # percent-encoded
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def routed(self) -> bool:
        """Whether the request is for a declared route with its own method."""
        return self.method == self.route.method


@st.composite
def http_requests(draw: Any, routes: list[Route], ids: list[str], tokens: list[str]) -> Request:
    route = draw(st.sampled_from(routes))
    method = draw(st.sampled_from((route.method,) * 4 + METHODS))

    def fill(match: re.Match[str]) -> str:
        pool = tokens if match.group(1) == "token" else ids
        mutated = st.sampled_from(pool).map(lambda t: t[:-1] if len(t) > 1 else t + "A")
        segment = draw(
            st.sampled_from(pool)
            | mutated
            | st.sampled_from(HOSTILE_SEGMENTS).map(lambda s: quote(s, safe="%"))
            | st.text(max_size=30).map(lambda s: quote(s, safe=""))
        )
        return str(segment)

    path = PARAM.sub(fill, route.template)
    if draw(st.integers(0, 9)) == 0:
        path += draw(st.sampled_from(("/", "/extra", "/..", "//", "?", "%00")))
    query_params = draw(
        st.lists(
            st.tuples(
                st.sampled_from(("state", "limit", "x", "")) | st.text(max_size=8),
                st.sampled_from(
                    (
                        "open",
                        "all",
                        "1",
                        "0",
                        "-1",
                        "10000",
                        "10001",
                        "1e3",
                        "9" * 1000,
                        "",
                        "OPEN",
                        "0x10",
                        " 5",
                        "½",
                    )
                )
                | st.text(max_size=12),
            ),
            max_size=3,
        )
    )
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query_params)
    headers: dict[str, str] = {}
    auth = draw(st.sampled_from(("good", "good", "good", "none", "wrong", "odd")))
    if auth == "good":
        headers["Authorization"] = f"Bearer {API_TOKEN}"
    elif auth == "wrong":
        headers["Authorization"] = f"Bearer {API_TOKEN}x"
    elif auth == "odd":
        headers["Authorization"] = draw(
            st.sampled_from(("Bearer", "Bearer ", "Basic YWxhZGRpbjpvcGVuc2VzYW1l", "é"))
            | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
        )
    headers["Content-Type"] = draw(
        st.sampled_from(
            (
                "application/json",
                "application/json; charset=latin-1",
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data",
                "application/json; charset=utf-16",
                "*/*",
            )
        )
    )
    body = draw(
        st.builds(
            lambda r, o, extra: json.dumps(
                {"responder": r, **({"outcome": o} if o else {}), **extra}
            ).encode(),
            st.sampled_from(RESPONDERS) | fz.json_values,
            st.none() | st.sampled_from(("ok", "false_alarm", "OK", "x" * 41)) | fz.json_values,
            st.dictionaries(
                st.sampled_from(("on_duty", "reason", "until", "duration")) | st.text(max_size=8),
                fz.json_values,
                max_size=3,
            ),
        )
        | fz.payloads([{"responder": "ana", "outcome": "ok"}])
        | st.just(b"x" * (70 * 1024))
    )
    request = Request(method, route, path, query, headers, body)
    # Longer request lines get aiohttp's own 400; test_http_malformed_requests sends those.
    assume(len(path) + len(query) < 8000)
    return request


async def send(http: aiohttp.ClientSession, base: str, req: Request) -> tuple[int, str, bytes]:
    url = yarl.URL(f"{base}{req.path}" + (f"?{req.query}" if req.query else ""), encoded=True)
    async with http.request(
        req.method, url, headers=req.headers, data=req.body, allow_redirects=False
    ) as resp:
        if resp.content_type == "text/event-stream":  # the board's: it never ends
            return resp.status, resp.content_type, await resp.content.readuntil(b"\n\n")
        return resp.status, resp.content_type, await resp.read()


def check_response(req: Request, status: int, content_type: str, body: bytes) -> None:
    path = urlsplit(req.path).path
    assert status < 500 or (status == 503 and path == "/readyz"), (req, status, body[:300])
    if (
        req.method in ("GET", "POST")
        and path.startswith("/api/")
        and path != "/api/openapi.json"
        and req.routed
        and (req.headers.get("Authorization") != f"Bearer {API_TOKEN}")
    ):
        assert status in (401, 404, 405, 413), (req, status)  # 404/405: no such route
    if not req.routed or req.method == "HEAD" or status in (303, 404, 405, 413):
        return  # aiohttp's own replies for no route, no method or a body over the limit;
        # a redirect (the station login's) has no body
    if path == "/metrics":
        assert content_type == "text/plain"
    elif path == "/board/stream" and status == 200:
        assert content_type == "text/event-stream" and body.startswith(b"event: snapshot\n")
    elif path.startswith("/board/static/") and status == 200:
        assert content_type in ("text/css", "text/javascript"), (req, content_type)
    elif content_type == "application/json":
        json.loads(body)
    else:
        assert content_type == "text/html", (req, status, content_type, body[:300])
        assert body.lstrip().lower().startswith(b"<!doctype html>")


def in_thread(loop: asyncio.AbstractEventLoop) -> Callable[[Coroutine[Any, Any, _T]], _T]:
    """Run a coroutine on the service's loop from the hypothesis thread and wait for it."""

    def run(coro: Coroutine[Any, Any, _T]) -> _T:
        assert threading.current_thread() is not threading.main_thread()
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=30)

    return run


@pytest.mark.integration
async def test_http_api_survives_random_requests(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Random methods, paths, queries, headers and bodies on every route: never a 500, and the
    service still pages afterwards."""
    env = {"BOOTHWATCH_API_TOKEN": API_TOKEN}
    async with start_service(tmp_path, mosquitto, mqtt_publish, env=env) as svc:
        svc.publish(events_topic("b1"), event("button", press="call"))
        page = (await svc.hook.wait(1))[0]
        token = page["ack_url"].rsplit("/", 1)[1]
        routes = app_routes(svc)
        assert {"/api/incidents/{id}/ack", "/ack/{token}"} <= {r.template for r in routes}
        ids = [page["incident"], "ana", "rui", "b1", "b2"]
        run = in_thread(asyncio.get_running_loop())
        statuses: Counter[int] = Counter()

        @settings(FAST, max_examples=250, database=None)
        @given(req=http_requests(routes, ids, [token]))
        def fuzz(req: Request) -> None:
            status, content_type, body = run(send(svc.http, svc.base, req))
            statuses[status] += 1
            check_response(req, status, content_type, body)

        await asyncio.to_thread(fuzz)
        assert statuses[200] and statuses[400] and statuses[401], statuses

        async with svc.http.get(f"{svc.base}/readyz") as resp:
            assert resp.status == 200
        start = len(svc.hook.pages)
        svc.publish(events_topic("b2"), event("button", press="call"))
        await eventually(lambda: any(p["booth"] == "b2" for p in svc.hook.pages[start:]))


@pytest.mark.integration
async def test_deeply_nested_json_body_is_a_400(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """A JSON body nested 10 000 deep to each POST /api route is refused with a 400."""
    async with start_service(tmp_path, mosquitto, mqtt_publish) as svc:
        svc.publish(events_topic("b1"), event("button", press="call"))
        incident = (await svc.hook.wait(1))[0]["incident"]
        statuses = {}
        for route in app_routes(svc):
            if route.method == "POST" and route.template.startswith("/api/"):
                path = PARAM.sub(
                    incident if "incidents" in route.template else "b1", route.template
                )
                async with svc.http.post(
                    f"{svc.base}{path}",
                    data=b"[" * 10_000,
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    statuses[path] = resp.status
        assert statuses and all(status == 400 for status in statuses.values()), statuses


RAW_REQUESTS = (
    b"GET /ack/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/incidents?state=\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    b'POST /api/incidents/%00/ack HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n{"re',
    b"POST /ack/x HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
    b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 100_000 + b"\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
    b"\x00\x01\x02\xff\r\n\r\n",
    b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /api/incidents/x/ack HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
)


@pytest.mark.integration
async def test_http_malformed_requests_never_get_a_server_error(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Bytes no client library would send (bad UTF-8, huge lines, bad framing) get no 5xx."""
    async with start_service(tmp_path, mosquitto, mqtt_publish) as svc:
        port = yarl.URL(svc.base).port
        for raw in RAW_REQUESTS:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(raw)
                await writer.drain()
                status_line = await asyncio.wait_for(reader.readline(), 5)
            finally:
                writer.close()
            assert re.match(rb"HTTP/1\.[01] 4\d\d ", status_line), (raw[:80], status_line)
        async with svc.http.get(f"{svc.base}/healthz") as resp:
            assert resp.status == 200


# --- the running service: MQTT ------------------------------------------------------------


async def rejected_counts(svc: Service) -> Counter[str]:
    counts: Counter[str] = Counter()
    for reason in (*sorted(REASONS), "retained"):
        line = f'boothwatch_events_rejected_total{{reason="{reason}"}}'
        counts[reason] = int(await svc.metric(line))
    return counts


@pytest.mark.integration
async def test_mqtt_hostile_payloads_are_each_counted(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """Each hostile event message is counted once under the reason the decoder gives, and the
    service still pages afterwards. The flood limit is not under test: a run that sends
    more than a burst to one booth would drop (not reject) some of them."""
    async with start_service(tmp_path, mosquitto, mqtt_publish,
                             edit=Site.no_rate_limit) as svc:
        before = await rejected_counts(svc)
        expected: Counter[str] = Counter()

        @settings(FAST, max_examples=120, database=None)
        @given(
            topic=st.sampled_from(fz.CANONICAL_TOPICS), payload=fz.payloads(fz.CANONICAL_EXAMPLES)
        )
        def fuzz(topic: str, payload: bytes) -> None:
            outcome = fz.canonical_outcome(topic, payload)
            svc.publish(topic, payload)
            if outcome != fz.ACCEPTED:
                expected[outcome] += 1

        await asyncio.to_thread(fuzz)
        assert len(expected) >= 3, expected

        async def counted() -> bool:
            return await rejected_counts(svc) - before == expected

        try:
            await eventually(counted, timeout=10)
        finally:
            assert await rejected_counts(svc) - before == expected
        start = len(svc.hook.pages)
        svc.publish(events_topic("b2"), event("button", press="call", id="after-fuzz"))
        await eventually(
            lambda: any(
                p["booth"] == "b2" and p["triggers"] == ["call"] for p in svc.hook.pages[start:]
            )
        )


@pytest.mark.integration
async def test_mqtt_deeply_nested_ack_is_counted_as_rejected(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """A pager gateway ack nested 100 000 deep is counted as a rejected ack like any garbage."""
    ack_topic = f"boothwatch/{SITE}/ack"
    line = 'boothwatch_mqtt_acks_total{result="rejected"}'
    async with start_service(tmp_path, mosquitto, mqtt_publish) as svc:
        svc.publish(ack_topic, b"[" * 100_000)
        svc.publish(ack_topic, b"not json")  # processed after it, in order
        await eventually(lambda: svc.metric(line), timeout=5)
        assert await svc.metric(line) == 2
