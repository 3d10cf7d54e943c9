"""One contract for every engine: every decoding option means the same on every text surface, and a
source that cannot honour one refuses it by name, whichever front end asked."""

import dataclasses
import json
import socket
import subprocess
import sys
import time

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from helpers import SERVER_KEY, FakeGenerator

from chatgentitle.cli import cli
from chatgentitle.decoding.options import GenerationOptions
from chatgentitle.serving.app import create_app

ABSTRACT = "we propose a novel method for learning graph neural networks"
# one request per field, each asking a value other than the default (with what that value needs)
ASKED = {
    "max_new_tokens": {"max_new_tokens": 12},
    "num_beams": {"num_beams": 6},
    "do_sample": {"do_sample": True},
    "temperature": {"do_sample": True, "temperature": 1.3},
    "top_p": {"do_sample": True, "top_p": 0.5},
    "top_k": {"do_sample": True, "top_k": 7},
    "repetition_penalty": {"repetition_penalty": 1.4},
    "length_penalty": {"length_penalty": 0.6},
    "consensus": {"consensus": 3},
    "no_repeat_ngram_size": {"no_repeat_ngram_size": 2},
    "num_candidates": {"num_candidates": 3},
    "include": {"include": ("dark matter", "halo")},
    "words": {"words": 8},
}


def test_every_option_is_asked_of_every_surface():
    """A new GenerationOptions field fails here until the table above, and so each surface below, has it."""
    assert set(ASKED) == {f.name for f in dataclasses.fields(GenerationOptions)}


def _cli_flags(fields: dict) -> list[str]:
    flags = []
    for name, value in fields.items():
        flag = "-n" if name == "num_candidates" else "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif isinstance(value, tuple):
            flags += [part for phrase in value for part in (flag, phrase)]
        else:
            flags += [flag, str(value)]
    return flags


def _through_cli(fields: dict, monkeypatch) -> GenerationOptions:
    fake = FakeGenerator()
    monkeypatch.setattr("chatgentitle.cli._source", lambda values, **fixed: fake)
    result = CliRunner().invoke(cli, ["generate", ABSTRACT, *_cli_flags(fields)])
    assert result.exit_code == 0, result.output
    return fake.calls[-1][1]


def _through_eval_pairs(fields: dict, monkeypatch) -> GenerationOptions:
    pairs = [f"{name}={part}" for name, value in fields.items()
             for part in (value if isinstance(value, tuple) else [value])]
    return GenerationOptions(**GenerationOptions.overrides(pairs))


def _through_api(fields: dict, monkeypatch) -> GenerationOptions:
    fake = FakeGenerator()
    body = {"abstract": ABSTRACT, "options": {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}}
    response = TestClient(create_app(fake)).post("/v1/titles", json=body)
    assert response.status_code == 200, response.text
    return fake.calls[-1][1]


def _through_openai(fields: dict, monkeypatch) -> GenerationOptions:
    fake = FakeGenerator()
    named = {"num_candidates": "n", "max_new_tokens": "max_tokens"}
    body = {named.get(k, k): list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
    body |= {"model": "fake", "messages": [{"role": "user", "content": ABSTRACT}]}
    response = TestClient(create_app(fake)).post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return fake.calls[-1][1]


def _through_web_ui(fields: dict, monkeypatch) -> GenerationOptions:
    from chatgentitle.serving.web import OPTION_FIELDS, read_options

    values = [fields.get(f.name, f.default) for f in OPTION_FIELDS]
    return read_options(values, "\n".join(fields.get("include", ())), fields.get("words", 0))


@pytest.mark.parametrize("surface", [_through_cli, _through_eval_pairs, _through_api, _through_openai,
                                     _through_web_ui], ids=["cli", "eval", "api", "openai", "web"])
@pytest.mark.parametrize("name", list(ASKED))
def test_each_option_means_the_same_on_every_surface(name, surface, monkeypatch):
    options = surface(ASKED[name], monkeypatch)
    assert {k: getattr(options, k) for k in ASKED[name]} == ASKED[name]


@pytest.fixture
def endpoint_server(tiny_server):
    """`chatgentitle serve --endpoint` (another process) in front of our own serve of the tiny model."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "chatgentitle", "serve", "--no-ui", "--port", str(port), "--endpoint", tiny_server,
               "--model", "run", "--chat", "--endpoint-key", SERVER_KEY]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines, deadline = [], time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None and not any("serving on" in x for x in lines):
            lines.append(server.stdout.readline())
        assert any("serving on" in line for line in lines), lines
        yield f"http://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()


def test_serve_in_front_of_an_endpoint_answers_and_refuses_what_it_cannot_do(endpoint_server):
    with httpx.Client(base_url=endpoint_server, timeout=60) as client:
        served = client.post("/v1/titles", json={"abstract": ABSTRACT})
        assert served.status_code == 200 and served.json()["results"][0]["title"], served.text
        refused = client.post("/v1/titles", json={"abstract": ABSTRACT, "options": {"num_beams": 4,
                                                                                    "include": ["graph"]}})
        assert refused.status_code == 422 and "num_beams" in refused.text and "include" in refused.text
        judged = client.post("/v1/titles", json={"abstract": ABSTRACT, "title": "A title"})
        assert judged.status_code == 422 and "title" in judged.json()["detail"]
        chat = client.post("/v1/chat/completions", json={"model": "run", "num_beams": 2,
                                                         "messages": [{"role": "user", "content": ABSTRACT}]})
        assert chat.status_code == 422 and "num_beams" in chat.text


def test_eval_refuses_what_an_endpoint_cannot_do(tiny_server, tmp_path):
    papers = tmp_path / "test.jsonl"
    papers.write_text(json.dumps({"id": "1", "title": "A title", "abstract": ABSTRACT}) + "\n")
    result = CliRunner().invoke(cli, ["eval", "--data", str(papers), "--out", str(tmp_path / "report"),
                                      "--endpoint-model", f"ours={tiny_server},run,chat", "--num-beams", "4"],
                                env={"CHATGENTITLE_ENDPOINT_KEY": SERVER_KEY})
    assert result.exit_code == 1 and "num_beams=4" in result.output and "Traceback" not in result.output


def test_a_remote_record_names_its_server(tiny_server):
    from chatgentitle.titling.remote import RemoteTitles

    remote = RemoteTitles(tiny_server, "run", chat=True)
    assert remote.made_by["endpoint"] == tiny_server and remote.made_by["model"] == "run"
