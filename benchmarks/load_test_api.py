"""Load test of the REST API: N concurrent requests on loopback, p50/p95 latency, titles/s, errors.

Run as: python benchmarks/load_test_api.py [--requests 200] [--model RUN_DIR] [--fake]

Starts the real app (create_app around a TitleGenerator; --fake: a generator that answers
instantly, to measure the server alone) on 127.0.0.1 and fires all requests at once, with the
server's default decoding (GenerationOptions: 4 beams) and its request deadline. Counts answers
by kind: 200, 4xx, 503 (a full queue or a passed deadline, with Retry-After), other 5xx and
transport errors; latencies are those of the 200s.
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


async def fire(url: str, abstracts: list[str]) -> list[tuple[int, float]]:
    import httpx

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=len(abstracts))) as client:
        async def one(abstract):
            began = time.perf_counter()
            try:
                response = await client.post(url, json={"abstract": abstract})
                return response.status_code, time.perf_counter() - began
            except httpx.HTTPError:
                return 0, time.perf_counter() - began

        return await asyncio.gather(*(one(a) for a in abstracts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--model", help="run dir (default: the packaged adapter)")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-queue", type=int, default=256)
    parser.add_argument("--request-timeout", type=float, default=60.0)
    parser.add_argument("--fake", action="store_true", help="a generator that answers at once")
    args = parser.parse_args()
    import uvicorn

    from chatgentitle.api import create_app

    if args.fake:
        from conftest import FakeGenerator

        generator = FakeGenerator()
    else:
        from chatgentitle.generate import TitleGenerator

        generator = TitleGenerator.load(args.model)
    papers = recent_papers(64)
    abstracts = [papers[i % len(papers)].abstract for i in range(args.requests)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(generator, max_batch=args.max_batch, max_queue=args.max_queue,
                     request_timeout=args.request_timeout)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    began = time.perf_counter()
    results = asyncio.run(fire(f"http://127.0.0.1:{port}/v1/titles", abstracts))
    seconds = time.perf_counter() - began
    server.should_exit = True
    latencies = sorted(t for code, t in results if code == 200)
    counts = {"200": 0, "4xx": 0, "503": 0, "other 5xx": 0, "transport": 0}
    for code, _ in results:
        kind = ("transport" if code == 0 else "200" if code == 200 else "503" if code == 503
                else "4xx" if code < 500 else "other 5xx")
        counts[kind] += 1
    p50 = statistics.median(latencies) if latencies else float("nan")
    p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan")
    print(f"{args.requests} concurrent requests ({'fake' if args.fake else 'real'} model, max batch {args.max_batch},"
          f" deadline {args.request_timeout:g} s): p50 {p50:.2f} s, p95 {p95:.2f} s, "
          f"{len(latencies) / seconds:.2f} titles/s, answers {counts}, wall {seconds:.1f} s")


if __name__ == "__main__":
    main()
