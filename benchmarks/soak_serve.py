"""Soak test of `serve`'s bounds: 10,000 mixed requests on loopback, the server's memory before and after.

Run as: python benchmarks/soak_serve.py [--requests 10000] [--addresses 5000]

Starts the real app (the API, the OpenAI routes and the web UI, with an API key) in its own process
around a stand-in model that answers at once (tests/helpers.FakeGenerator: the server is measured, not
the model), warms it up, then sends, interleaved:
- titles: /v1/titles with the right key, each with its own instruction, a third with the author's title
  to judge (keys that once grew the cost table for good);
- streams: the web UI's call API (Gradio, signed in), which decodes with the plans that stream;
- wrong keys: one from each of `--addresses` loopback addresses in 127.0.0.0/8 (the throttle's memory);
- chunked bodies over the 1 MB limit, 2 MB each, without Content-Length.
Prints the answers by kind and the server's resident memory (VmRSS, VmHWM) before and after.
SERVER_SRC=path/to/src runs the server from another checkout's code (a before/after comparison).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

KEY = "soak-key"
ABSTRACT = "We propose a method for learning graph neural networks that outperforms the baselines on benchmarks."


def serve(port: int) -> None:
    """The server process: the whole app around the stand-in model."""
    import uvicorn
    from helpers import FakeGenerator

    from chatgentitle.serving.app import create_app, with_ui

    app = with_ui(create_app([FakeGenerator()], api_key=KEY), api_key=KEY)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", proxy_headers=False)


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) / 1024
    return found


def chunked_over_limit(port: int) -> str:
    """2 MB in 64 KB chunks without Content-Length; the status line the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"POST /v1/titles HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + KEY.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        try:
            for _ in range(32):
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.sendall(b"0\r\n\r\n")  # the end of the body, for a server that reads it all
        except OSError:
            pass  # answered and closed before the end: what the limit is for
        return conn.recv(64).split(b"\r\n")[0].decode(errors="replace")


def soak(port: int, requests: int, addresses: int) -> Counter:
    import httpx

    url = f"http://127.0.0.1:{port}"
    answers: Counter = Counter()
    right = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    ui = httpx.Client(base_url=url, timeout=60)
    assert ui.post("/login", data={"username": "soak", "password": KEY}).status_code == 200
    from chatgentitle.serving.web import OPTION_FIELDS

    wrong_left, chunked_left = addresses, max(1, requests // 50)
    rest = requests - wrong_left - chunked_left
    for i in range(requests):
        kind = ("wrong key" if wrong_left and i % 2 == 0 else "chunked" if chunked_left and i % 50 == 1
                else "stream" if i % 10 == 3 else "title")
        if kind == "wrong key":
            wrong_left -= 1
            n = 2 + i // 2  # 127.0.0.2 ... spread over 127.0.0.0/8
            address = f"127.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255 or 1}"
            with httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address=address)) as client:
                code = client.post("/v1/titles", json={"abstract": ABSTRACT},
                                   headers={"Authorization": "Bearer wrong"}).status_code
        elif kind == "chunked":
            chunked_left -= 1
            code = chunked_over_limit(port)
        elif kind == "stream":
            data = ["", f"{ABSTRACT} ({i})", "", 0, "", *(False if f.name == "do_sample" else f.default
                                                          for f in OPTION_FIELDS)]
            data[5 + [f.name for f in OPTION_FIELDS].index("num_beams")] = 1  # greedy: a plan that streams
            started = ui.post("/gradio_api/call/write_titles", json={"data": data})
            with ui.stream("GET", f"/gradio_api/call/write_titles/{started.json()['event_id']}") as events:
                text = "".join(events.iter_text())
            code = "complete" if "event: complete" in text else "error"
        else:
            rest -= 1
            body = {"abstract": f"{ABSTRACT} ({i})", "instruction": f"Write a title for paper {i}."}
            if i % 3 == 0:
                body["title"] = f"An author's title number {i}"
            code = right.post("/v1/titles", json=body).status_code
        answers[f"{kind}: {code}"] += 1
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--addresses", type=int, default=5_000)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the server process's own mode
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | ({"PYTHONPATH": os.environ["SERVER_SRC"]} if os.environ.get("SERVER_SRC") else {})
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], env=env)
    try:
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        soak(port, 300, 0)  # warm-up: imports, Gradio's first page, the first measurements
        before, began = memory(server.pid), time.perf_counter()
        answers = soak(port, args.requests, args.addresses)
        seconds, after = time.perf_counter() - began, memory(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    print(f"{args.requests:,} requests in {seconds:.0f} s ({args.addresses:,} wrong-key addresses)")
    for kind, count in sorted(answers.items()):
        print(f"  {kind:<22} {count:>6,}")
    print(f"server RSS before {before['VmRSS']:.1f} MB, after {after['VmRSS']:.1f} MB "
          f"(+{after['VmRSS'] - before['VmRSS']:.1f}); peak {after['VmHWM']:.1f} MB")


if __name__ == "__main__":
    main()
