"""One key for every door: with an API key, nothing that reaches the model answers without it."""

import re
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient
from helpers import SERVER_KEY, FakeGenerator
from starlette.routing import Mount

from chatgentitle.serving.jobs import MAX_ABSTRACT_CHARS

ABSTRACT = "we propose a novel method for learning graph neural networks"
BEARER = {"Authorization": f"Bearer {SERVER_KEY}"}
# routes that answer without the key and never reach a model: the login page and its assets, who is
# signed in, the API's own documents, health
OPEN = {"/", "/logout", "/favicon.ico", "/theme.css", "/robots.txt", "/manifest.json", "/gradio_api/user",
        "/gradio_api/token", "/gradio_api/app_id", "/gradio_api/runs", "/openapi.json", "/docs",
        "/docs/oauth2-redirect", "/redoc", "/health"}
API = [("GET", "/v1/models", None), ("POST", "/v1/titles", {"abstract": ABSTRACT}),
       ("POST", "/v1/completions", {"model": "fake", "prompt": "Abstract: " + ABSTRACT}),
       ("POST", "/v1/chat/completions", {"model": "fake", "messages": [{"role": "user", "content": ABSTRACT}]})]


@pytest.fixture
def app():
    from chatgentitle.serving.app import create_app, with_ui

    return with_ui(create_app([FakeGenerator()], api_key=SERVER_KEY), api_key=SERVER_KEY)


def ui_values(abstract: str) -> list:
    """The web UI's inputs in order: instruction, abstract, include, words, your title, then every other
    option at its default."""
    from chatgentitle.serving.web import OPTION_FIELDS

    return ["Write a title.", abstract, "", 0, "", *(f.default for f in OPTION_FIELDS)]


def call_ui(client: TestClient, abstract: str) -> str:
    """Gradio's call API, as gradio_client uses it: the event stream's last event."""
    started = client.post("/gradio_api/call/write_titles", json={"data": ui_values(abstract)})
    assert started.status_code == 200, started.text
    with client.stream("GET", f"/gradio_api/call/write_titles/{started.json()['event_id']}") as events:
        return "".join(events.iter_text())


@pytest.mark.parametrize(("method", "path", "body"), API)
def test_api_routes_need_the_key(app, method, path, body):
    with TestClient(app) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": SERVER_KEY}):
            refused = client.request(method, path, json=body, headers=headers)
            assert refused.status_code == 401 and "Candidate 0" not in refused.text
        assert client.request(method, path, json=body, headers=BEARER).status_code == 200


def test_every_other_route_of_the_app_needs_the_key_or_never_reaches_the_model(app):
    """Every route of the app and of the mounted Gradio app (its call, queue, upload, file, MCP routes
    included), with placeholder path parameters: no 2xx without the key but the open list."""
    mount = next(r for r in app.routes if isinstance(r, Mount))
    routes = [(r.path, r.methods) for r in [*app.routes, *mount.app.routes] if getattr(r, "path", None)]
    for included in (r for r in mount.app.routes if not getattr(r, "path", None)):
        prefix = included.original_router.prefix
        routes += [(prefix + r.path, r.methods) for r in included.original_router.routes]
    assert any("/gradio_api/queue/join" in path for path, _ in routes)  # the walk sees Gradio's API
    with TestClient(app) as client:
        for path, methods in routes:
            url = re.sub(r"\{[^}]+\}", "x", path)
            for method in (methods or {"GET"}) - {"HEAD"}:
                answer = client.request(method, url, json={"data": ui_values(ABSTRACT), "fn_index": 0})
                if path.rstrip("/") not in OPEN and path not in OPEN:
                    assert not 200 <= answer.status_code < 300, (method, path, answer.status_code)
                assert "Candidate 0" not in answer.text, (method, path)


def test_the_ui_lets_in_with_the_key_and_keeps_the_api_limit(app):
    with TestClient(app) as client:
        assert client.post("/gradio_api/call/write_titles", json={"data": ui_values(ABSTRACT)}).status_code == 401
        assert client.get("/config").status_code == 401
        assert client.post("/login", data={"username": "me", "password": "wrong"}).status_code == 400
        assert client.post("/login", data={"username": "me", "password": SERVER_KEY}).status_code == 200
        assert "We Propose A Candidate 0" in call_ui(client, ABSTRACT)
        too_long = call_ui(client, "x" * (MAX_ABSTRACT_CHARS + 1))
        assert "event: error" in too_long and str(MAX_ABSTRACT_CHARS) in too_long


def test_a_non_loopback_host_without_a_key_warns(run_dir):
    from chatgentitle.serving.app import ServeConfig

    assert ServeConfig(host="0.0.0.0").exposed_without_key()
    assert not ServeConfig(host="0.0.0.0", api_key="k").exposed_without_key()
    assert not ServeConfig(host="127.0.0.1").exposed_without_key() and not ServeConfig(host="::1").exposed_without_key()
    command = [sys.executable, "-m", "chatgentitle", "serve", "--host", "0.0.0.0", "--port", "0", "--no-ui",
               "--model", str(run_dir), "--dtype", "fp32"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline and not any("serving on" in line for line in lines):
            lines.append(server.stdout.readline())
        assert any("WITHOUT an API key" in line for line in lines), lines
    finally:
        server.kill()
        server.wait()


def test_wrong_keys_are_throttled_per_address_under_a_loopback_attack():
    """1,000 wrong keys from 127.0.0.1 as fast as it can send them: 401 for the first 10, then 429 for that
    address, the right key too, until its window passes; 127.0.0.2 with the right key still gets titles."""
    import httpx
    from helpers import serving

    from chatgentitle.serving.app import create_app

    app = create_app([FakeGenerator()], api_key=SERVER_KEY)
    now = [1000.0]
    app.state.key_guard.clock = lambda: now[0]  # the window passes when the test says so
    body = {"abstract": ABSTRACT}
    with serving(app) as url:
        attacker = httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address="127.0.0.1"))
        other = httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
        codes = [attacker.post("/v1/titles", json=body, headers={"Authorization": "Bearer wrong"}).status_code
                 for _ in range(1000)]
        assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}
        refused = attacker.post("/v1/titles", json=body, headers=BEARER)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert attacker.get("/v1/models", headers=BEARER).status_code == 429
        served = other.post("/v1/titles", json=body, headers=BEARER)
        assert served.status_code == 200 and served.json()["results"][0]["title"]
        now[0] += 61  # the window has passed
        assert attacker.post("/v1/titles", json=body, headers=BEARER).status_code == 200


def test_wrong_web_logins_count_as_wrong_keys(app):
    with TestClient(app) as client:
        for _ in range(10):
            assert client.post("/login", data={"username": "u", "password": "wrong"}).status_code >= 400
        assert client.post("/login", data={"username": "u", "password": SERVER_KEY}).status_code == 429
        assert client.post("/v1/titles", json={"abstract": ABSTRACT}, headers=BEARER).status_code == 429


def test_no_stream_stays_open_without_signing_in():
    """Gradio's heartbeat holds a connection open; with a key, only for a signed-in page."""
    import httpx
    from helpers import serving

    from chatgentitle.serving.app import create_app, with_ui

    with serving(with_ui(create_app([FakeGenerator()], api_key=SERVER_KEY), api_key=SERVER_KEY)) as url:
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/gradio_api/heartbeat/x").status_code == 401  # answered at once, closed
            assert client.post("/login", data={"username": "me", "password": SERVER_KEY}).status_code == 200
            with client.stream("GET", "/gradio_api/heartbeat/x") as stream:
                assert stream.status_code == 200 and next(stream.iter_text()).startswith("data: ALIVE")
