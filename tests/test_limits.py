"""One set of limits: a bound changed on the option dataclass, and nowhere else, is the bound of the CLI,
both APIs, the OpenAPI document and the web UI."""

from __future__ import annotations

import importlib
import types

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from helpers import FakeGenerator

from chatgentitle.decoding.options import GenerationOptions

MODULES = ("chatgentitle.serving.api", "chatgentitle.serving.openai_routes", "chatgentitle.serving.web",
           "chatgentitle.serving.app", "chatgentitle.cli")


@pytest.fixture
def five_candidates_at_most():
    """num_candidates bounded to 1..5 on GenerationOptions alone; the front ends rebuilt from it."""
    field = GenerationOptions.__dataclass_fields__["num_candidates"]
    before = field.metadata
    field.metadata = types.MappingProxyType({**before, "range": (1, 5)})
    modules = [importlib.reload(importlib.import_module(name)) for name in MODULES]
    yield dict(zip(MODULES, modules, strict=True))
    field.metadata = before
    for name in MODULES:
        importlib.reload(importlib.import_module(name))


def test_one_bound_in_one_place(five_candidates_at_most):
    cli, server, web = (five_candidates_at_most[f"chatgentitle.{m}"] for m in ("cli", "serving.app", "serving.web"))
    with pytest.raises(ValueError, match="between 1 and 5"):
        GenerationOptions(num_candidates=6)

    refused = CliRunner().invoke(cli.cli, ["generate", "x", "-n", "6", "--endpoint", "http://127.0.0.1:9/v1",
                                           "--model", "m"])
    assert refused.exit_code == 2 and "1<=x<=5" in refused.output

    app = server.create_app([FakeGenerator()])
    with TestClient(app) as client:
        schema = client.get("/openapi.json").json()["components"]["schemas"]
        assert schema["Options"]["properties"]["num_candidates"]["maximum"] == 5
        chat = next(s for name, s in schema.items() if name.startswith("Chat"))
        assert chat["properties"]["n"]["maximum"] == 5
        over = {"abstract": "we propose a method", "options": {"num_candidates": 6}}
        assert client.post("/v1/titles", json=over).status_code == 422
        assert client.post("/v1/titles", json={**over, "options": {"num_candidates": 5}}).status_code == 200
        chat_body = {"model": "fake", "messages": [{"role": "user", "content": "we propose a method"}]}
        assert client.post("/v1/chat/completions", json={**chat_body, "n": 6}).status_code == 422
        assert client.post("/v1/completions", json={"model": "fake", "prompt": "x", "n": 6}).status_code == 422

    demo = web.build_demo(app.state.service)
    slider = next(c for c in demo.config["components"] if c.get("props", {}).get("label") == "num_candidates")
    assert slider["props"]["maximum"] == 5
