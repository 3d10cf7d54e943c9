"""The remote backend: titles through an OpenAI-compatible server, with retries, from every front end."""

import hashlib
import json
import threading
import time
from collections import deque

from click.testing import CliRunner
from helpers import SERVER_KEY
from oai_server import LoopbackServer

from chatgentitle.cli import cli
from chatgentitle.data.prompt import PromptTemplate
from chatgentitle.decoding.options import GenerationOptions
from chatgentitle.titling.contract import options_for
from chatgentitle.titling.generator import titles
from chatgentitle.titling.remote import RemoteTitles

ABSTRACTS = ["we propose a novel method for learning graph neural networks", "quantum field theory spectra",
             "deep models for image segmentation results"]
KEY = SERVER_KEY


def test_through_our_serve_the_titles_are_the_in_process_ones(tiny_generator, tiny_server):
    remote = RemoteTitles(tiny_server, tiny_generator.name, api_key=KEY, chat=True, concurrency=2)
    options = GenerationOptions(max_new_tokens=6)  # the server decodes with its own defaults (4 beams)
    asked = options_for(remote, {"max_new_tokens": 6})  # we ask it for no more than an endpoint can do
    assert [r.title for r in titles(remote, ABSTRACTS, asked)] == tiny_generator(ABSTRACTS, options)
    three = GenerationOptions(max_new_tokens=6, num_candidates=3)
    several = remote.generate(ABSTRACTS[:1], three)[0]
    assert several == [c.title for c in titles(tiny_generator, ABSTRACTS[:1], three)[0].candidates]


def test_cli_batch_file_through_an_endpoint(tiny_generator, tiny_server, run_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"p{i}", "abstract": a}) + "\n" for i, a in enumerate(ABSTRACTS)))
    remote_out, local_out = tmp_path / "remote.jsonl", tmp_path / "local.jsonl"
    common = ["generate", "--input", str(src), "--max-new-tokens", "6"]
    result = CliRunner().invoke(cli, [*common, "--output", str(remote_out), "--endpoint", tiny_server, "--model",
                                      tiny_generator.name, "--chat"], env={"CHATGENTITLE_ENDPOINT_KEY": KEY})
    assert result.exit_code == 0, result.output
    local = CliRunner().invoke(cli, [*common, "--output", str(local_out), "--model", str(run_dir), "--dtype", "fp32"])
    assert local.exit_code == 0, local.output
    read = lambda path: [(r["id"], r["title"]) for r in map(json.loads, path.read_text().splitlines())]  # noqa: E731
    assert read(remote_out) == read(local_out)
    wrong_key = CliRunner().invoke(cli, [*common, "--output", str(tmp_path / "x.jsonl"), "--endpoint", tiny_server,
                                         "--model", tiny_generator.name, "--chat", "--endpoint-key", "wrong"])
    assert wrong_key.exit_code == 1 and "HTTP 401" in wrong_key.output


class FlakyCompletions(LoopbackServer):
    """A stand-in OpenAI completions server: answers 429 / 503 / a stall as scripted, then a title
    made from the prompt (so each abstract has its own, and a repeat would show)."""

    path = "/v1"

    def __init__(self, faults, stall_seconds=1.0):
        self.faults = deque(faults)
        self.stall_seconds = stall_seconds
        self.lock = threading.Lock()
        self.answered: list[str] = []

    def post(self, handler):
        body = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))
        with self.lock:
            fault = self.faults.popleft() if self.faults else None
        if fault == "stall":
            time.sleep(self.stall_seconds)
        if fault in ("429", "503"):
            handler.send_response(int(fault))
            handler.send_header("Retry-After", "0")
            handler.end_headers()
            return
        title = "Title " + hashlib.md5(body["prompt"].encode()).hexdigest()[:8]
        with self.lock:
            self.answered.append(title)
        data = json.dumps({"object": "text_completion", "choices": [{"index": 0, "text": title}]}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


def expected_title(abstract):
    return "Title " + hashlib.md5(PromptTemplate.load("compact").render(abstract).encode()).hexdigest()[:8]


def test_429_503_and_timeouts_are_retried_nothing_lost_or_repeated(tmp_path):
    abstracts = [f"{a} number {i}" for i in range(4) for a in ABSTRACTS]
    with FlakyCompletions(["429", None, "503", "stall", None, "429", "503", "stall"]) as server:
        remote = RemoteTitles(server.url, "title-lora", template=PromptTemplate.load("compact"), concurrency=3,
                              timeout_seconds=0.5, backoff_seconds=0.01)
        got = remote.generate(abstracts)
    assert [t[0] for t in got] == [expected_title(a) for a in abstracts]
    assert remote.retries >= 6


def test_a_persisting_failure_stops_the_batch_and_a_rerun_completes_it(tmp_path):
    src = tmp_path / "in.jsonl"
    rows = [{"id": f"p{i}", "abstract": f"abstract {i} on graph learning"} for i in range(6)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    args = ["generate", "--input", str(src), "--output", str(out), "--endpoint", None, "--model", "title-lora",
            "--batch-size", "2", "--prompt-template", "compact"]
    with FlakyCompletions([None, None] + ["503"] * 50) as server:  # the second batch never gets through
        args[args.index("--endpoint") + 1] = server.url
        failed = CliRunner().invoke(cli, args)
        port = server.httpd.server_address[1]
    assert failed.exit_code == 1 and "giving up" in failed.output and "Traceback" not in failed.output
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["p0", "p1"]
    with FlakyCompletions([]) as server:  # another server: its titles may differ, the file is not continued
        args[args.index("--endpoint") + 1] = server.url
        elsewhere = CliRunner().invoke(cli, args)
    assert elsewhere.exit_code == 1 and "source.endpoint" in elsewhere.output
    restarted = FlakyCompletions([])
    restarted.port = port  # the same server back up
    with restarted as server:
        args[args.index("--endpoint") + 1] = server.url
        resumed = CliRunner().invoke(cli, args)
    assert resumed.exit_code == 0 and "4 titles written" in resumed.output and "(2 already there)" in resumed.output
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in written] == [r["id"] for r in rows]  # each once, in order
    assert [r["title"] for r in written] == [expected_title(r["abstract"]) for r in rows]


def test_eval_scores_a_remote_system_beside_the_local_one(tiny_generator, tiny_server, run_dir, tmp_path):
    from helpers import paper_row

    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps({k: paper_row(i)[k] for k in ("id", "title", "abstract", "categories",
                                                                       "update_date")}) + "\n" for i in range(3)))
    out = tmp_path / "report"
    args = ["eval", "--data", str(data), "--model", f"local={run_dir}", "--endpoint-model",
            f"served={tiny_server},{tiny_generator.name},chat", "--out", str(out), "--max-new-tokens", "5",
            "--dtype", "fp32"]
    result = CliRunner().invoke(cli, args, env={"CHATGENTITLE_ENDPOINT_KEY": KEY})
    assert result.exit_code == 0, result.output
    scores = json.loads((out / "scores.json").read_text())["systems"]
    assert list(scores) == ["local", "served"] and scores["local"]["rougeL"] == scores["served"]["rougeL"]
    bad = CliRunner().invoke(cli, ["eval", "--data", str(data), "--endpoint-model", "x=http://h", "--out", str(out)])
    assert bad.exit_code == 1 and "NAME=URL,MODEL" in bad.output


def test_serve_and_web_ui_can_front_a_remote_backend(tiny_generator, tiny_server):
    from fastapi.testclient import TestClient

    from chatgentitle.serving.app import create_app
    from chatgentitle.serving.web import build_demo

    remote = RemoteTitles(tiny_server, tiny_generator.name, api_key=KEY, chat=True)
    app = create_app([remote])
    proxy = TestClient(app)
    answer = proxy.post("/v1/titles", json={"abstract": ABSTRACTS[0], "options": {"max_new_tokens": 6}})
    assert answer.status_code == 200
    assert answer.json()["results"][0]["title"] == tiny_generator(ABSTRACTS[:1], GenerationOptions(max_new_tokens=6))[0]
    assert build_demo(app.state.service).get_config_file()["components"]  # the UI builds around it
