"""Bounds that hold against the outside: no request body, no spray of addresses and no stream of
requests can make the server hold more than a fixed amount of memory."""

import asyncio
import socket

import httpx
from fastapi.testclient import TestClient
from helpers import SERVER_KEY, FakeGenerator, serving

from chatgentitle.serving.api import KeyGuard, client_group
from chatgentitle.serving.app import MAX_BODY_BYTES, BodyLimit, ServeConfig, create_app, listening

ABSTRACT = "we propose a novel method for learning graph neural networks"
BEARER = {"Authorization": f"Bearer {SERVER_KEY}"}
CHUNK = 64 * 1024


def test_a_chunked_body_over_the_limit_is_refused_before_it_is_read():
    """8 MB sent without Content-Length: 413 once the limit passes; the rest is never pulled."""
    pulled, answer, app_called = [], [], []

    async def receive():
        pulled.append(CHUNK)
        return {"type": "http.request", "body": b"x" * CHUNK, "more_body": len(pulled) < 128}

    async def send(message):
        answer.append(message)

    async def app(scope, receive, send):
        app_called.append(scope)

    scope = {"type": "http", "method": "POST", "path": "/v1/titles", "headers": [(b"transfer-encoding", b"chunked")]}
    asyncio.run(BodyLimit(app, MAX_BODY_BYTES)(scope, receive, send))
    assert answer[0]["status"] == 413 and not app_called
    assert sum(pulled) <= MAX_BODY_BYTES + CHUNK  # 1 MB and one chunk of the 8 MB


def test_a_chunked_body_over_the_limit_gets_413_from_a_real_server():
    with serving(create_app([FakeGenerator()])) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"POST /v1/titles HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            chunk = b'{"abstract": "' + b"x" * (CHUNK - 14)
            try:
                for _ in range(40):  # 2.6 MB at most: the server answers, and may close, long before
                    conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    chunk = b"x" * CHUNK
            except OSError:
                pass  # the server closed after answering
            assert conn.recv(4096).startswith(b"HTTP/1.1 413")
        with httpx.Client(base_url=url) as client:  # and it serves the next request
            assert client.post("/v1/titles", json={"abstract": ABSTRACT}).status_code == 200


def test_a_body_within_the_limit_reaches_the_route_whole():
    client = TestClient(create_app([FakeGenerator()]))

    def chunks():
        yield b'{"abstract": "'
        yield ABSTRACT.encode()
        yield b'"}'

    response = client.post("/v1/titles", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 200 and response.json()["results"][0]["title"]


def test_the_throttle_remembers_only_wrong_keys_and_forgets_them():
    now = [0.0]
    guard = KeyGuard("k", clock=lambda: now[0], max_addresses=100)
    for i in range(5000):  # requests from 5,000 addresses, none with a wrong key: nothing kept
        assert guard.retry_after(f"127.0.{i // 250}.{i % 250 + 1}") == 0
    assert not guard.failures
    for i in range(5000):  # wrong keys from 5,000 addresses: at most max_addresses kept
        guard.failed(f"127.1.{i // 250}.{i % 250 + 1}")
    assert len(guard.failures) == 100
    now[0] += 61  # past the window: every entry goes at the next look
    guard.retry_after("127.0.0.1")
    assert not guard.failures


def test_the_throttle_keeps_no_more_than_limit_times_per_address():
    guard = KeyGuard("k")
    for _ in range(1000):
        guard.failed("127.0.0.1")
    assert len(guard.failures["127.0.0.1"]) == guard.limit and guard.retry_after("127.0.0.1") > 0


def test_ipv6_clients_are_counted_by_their_64():
    guard = KeyGuard("k")
    for i in range(10):  # one host rotating through its /64
        guard.failed(f"2001:db8:1:2::{i + 1:x}")
    assert guard.retry_after("2001:db8:1:2:ffff::1") > 0
    assert guard.retry_after("2001:db8:1:3::1") == 0  # the next /64 is someone else
    assert client_group("::ffff:127.0.0.1") == "127.0.0.1" and client_group("127.0.0.9") == "127.0.0.9"


def _wrong_keys_from_behind_a_proxy(settings: dict) -> list[int]:
    """Ten wrong keys from client 10.0.0.1 through a proxy at 127.0.0.1, then client 10.0.0.2's right key."""
    app = create_app([FakeGenerator()], api_key=SERVER_KEY)
    with serving(app, **settings) as url, httpx.Client(base_url=url) as client:
        body, wrong = {"abstract": ABSTRACT}, {"Authorization": "Bearer wrong"}
        for _ in range(10):
            client.post("/v1/titles", json=body, headers=wrong | {"X-Forwarded-For": "10.0.0.1"})
        return [client.post("/v1/titles", json=body, headers=BEARER | {"X-Forwarded-For": ip}).status_code
                for ip in ("10.0.0.1", "10.0.0.2")]


def test_a_trusted_proxy_makes_the_throttle_count_its_clients():
    trusted = listening(ServeConfig(trusted_proxy="127.0.0.1"))
    assert _wrong_keys_from_behind_a_proxy({k: trusted[k] for k in ("proxy_headers", "forwarded_allow_ips")}) \
        == [429, 200]


def test_without_a_trusted_proxy_a_forwarded_address_is_not_believed():
    untrusted = listening(ServeConfig())
    assert untrusted["proxy_headers"] is False
    assert _wrong_keys_from_behind_a_proxy({"proxy_headers": False}) == [429, 429]  # all share the proxy's


def test_the_cost_table_holds_no_per_request_keys():
    """Judged titles, streams and free-text instructions are measured, under keys that repeat."""
    app = create_app([FakeGenerator()])
    service = app.state.service
    client = TestClient(app)
    for i in range(30):
        assert client.post("/v1/titles", json={"abstract": f"{ABSTRACT} {i}", "title": f"My title {i}",
                                               "instruction": f"Write a title, please ({i})."}).status_code == 200
        assert client.post("/v1/titles", json={"abstract": ABSTRACT, "instruction": f"Say it {i}."}).status_code == 200
    from chatgentitle.decoding.options import GenerationOptions

    for i in range(30):
        service.stream(f"{ABSTRACT} {i}", GenerationOptions(num_beams=1), f"instruction {i}", lambda t: None
                       ).future.result(10)
    costs = service.batchers["fake"].seconds_per_text
    assert len(costs) == 3  # titles judged, titles, streams: each measured once, whatever the texts
    assert not any(isinstance(part, str) and "instruction" in part for key in costs.seconds for part in key)


def test_the_cost_table_is_bounded():
    from chatgentitle.serving.jobs import CostTable

    table = CostTable(size=10)
    for i in range(1000):
        table.measured(("titles", i), 0.1)
    assert len(table) == 10 and table.get(("titles", 999)) == 0.1 and table.get(("titles", 0)) is None


def test_the_web_ui_keeps_few_sessions():
    """Gradio keeps each session's values for its 10,000 most recent sessions, and each call of its call
    API is a session: the UI keeps WEB_SESSIONS (it holds no state between calls)."""
    from starlette.routing import Mount

    from chatgentitle.serving.app import with_ui
    from chatgentitle.serving.web import WEB_SESSIONS

    app = with_ui(create_app([FakeGenerator()], api_key=SERVER_KEY), api_key=SERVER_KEY)
    ui = next(route.app for route in app.routes if isinstance(route, Mount))
    assert ui.state_holder.capacity == WEB_SESSIONS <= 256
