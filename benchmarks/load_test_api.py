"""Load test of the REST API: N concurrent requests on loopback, p50/p95 latency, titles/s, answers by kind.

Run as: python benchmarks/load_test_api.py [--requests 200] [--model RUN_DIR] [--dtype fp32] [--fake]
        [--option consensus=0]

Starts the real app (server.create_app around a TitleGenerator; --fake: a stand-in that answers
instantly, to measure the server alone) on 127.0.0.1 with serve's defaults (micro-batches of up to 8,
the 120 s deadline) and fires all requests at once, each one abstract with the default decoding
(GenerationOptions' defaults; --option changes one). Counts answers by kind: 200; 503 refused early
(the queue held more work than the deadline allows, answered at once with Retry-After); 503 at the
deadline (work accepted and not finished: what the server must avoid); 4xx, other 5xx, transport
errors. Latencies are those of the 200s.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import recent_papers  # noqa: E402


async def fire(url: str, abstracts: list[str], options: dict) -> list[tuple[str, float]]:
    import httpx

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=len(abstracts))) as client:
        async def one(abstract):
            began = time.perf_counter()
            try:
                response = await client.post(url, json={"abstract": abstract, "options": options})
            except httpx.HTTPError:
                return "transport", time.perf_counter() - began
            code = response.status_code
            kind = ("200" if code == 200 else "4xx" if code < 500 else "other 5xx" if code != 503
                    else "503 at the deadline" if "no answer within" in response.json()["detail"]
                    else "503 refused early")
            return kind, time.perf_counter() - began

        return await asyncio.gather(*(one(a) for a in abstracts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--model", help="run dir (default: the packaged adapter)")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 where the CPU has it) or fp32")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-queue", type=int, default=256)
    parser.add_argument("--request-timeout", type=float, default=120.0)
    parser.add_argument("--option", action="append", default=[], help="a decoding option, e.g. consensus=0")
    parser.add_argument("--fake", action="store_true", help="a stand-in that answers at once")
    args = parser.parse_args()
    import uvicorn

    from chatgentitle.serving.app import WARM_UP_ABSTRACT, create_app

    if args.fake:
        from helpers import FakeGenerator

        generator = FakeGenerator()
    else:
        from chatgentitle.titling.generator import TitleGenerator

        generator = TitleGenerator.load(args.model, dtype=args.dtype)
    options = {k: float(v) if "." in v else int(v) for k, v in (o.split("=") for o in args.option)}
    papers = recent_papers(64)
    abstracts = [papers[i % len(papers)].abstract for i in range(args.requests)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app([generator], max_batch=args.max_batch, max_queue=args.max_queue,
                     request_timeout=args.request_timeout)
    app.state.service.warm_up(WARM_UP_ABSTRACT)  # as serve does before it listens
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    began = time.perf_counter()
    results = asyncio.run(fire(f"http://127.0.0.1:{port}/v1/titles", abstracts, options))
    seconds = time.perf_counter() - began
    server.should_exit = True
    latencies = sorted(t for kind, t in results if kind == "200")
    counts = dict.fromkeys(["200", "503 refused early", "503 at the deadline", "4xx", "other 5xx", "transport"], 0)
    for kind, _ in results:
        counts[kind] += 1
    refused = sorted(t for kind, t in results if kind == "503 refused early")
    p50 = statistics.median(latencies) if latencies else float("nan")
    p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan")
    print(f"{args.requests} concurrent requests ({'fake' if args.fake else 'real'} model, dtype {args.dtype}, "
          f"options {options or 'default'}, max batch {args.max_batch}, deadline {args.request_timeout:g} s): "
          f"p50 {p50:.2f} s, p95 {p95:.2f} s, {len(latencies) / seconds:.2f} titles/s, answers {counts}, "
          f"early 503s answered in {statistics.median(refused) if refused else 0:.2f} s (median), "
          f"{refused[-1] if refused else 0:.2f} s (max); wall {seconds:.1f} s")


if __name__ == "__main__":
    main()
