"""Fault soak for the crawler: a multi-page OAI-PMH harvest through >= 100 injected faults.

Run as: python benchmarks/soak_crawl.py [--records 2000] [--faults 150] [--seed 1]

Loopback only: a local replay server (tests/oai_server.py) answers with 503 + Retry-After,
503 with an HTML page and no Retry-After, 200 with an HTML maintenance page, an empty body,
an OAI-PMH envelope without a list, a list that ends short of its completeListSize,
500, stalls past the client timeout, dropped connections, truncated and malformed XML and
expired resumption tokens, mixed at random between good pages. Halfway through, the
harvester is also stopped (as if killed) and restarted from the store. Prints faults
injected, records expected, stored, lost and duplicated.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from oai_server import FAULTS, OAIServer, make_records  # noqa: E402

from chatgentitle.crawl import harvest as arxiv  # noqa: E402
from chatgentitle.data.records import category_matches  # noqa: E402
from chatgentitle.data.store import PaperStore  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--page-size", type=int, default=25)
    parser.add_argument("--faults", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    # faults are spread among good answers so every page is eventually served
    script = [rng.choice(FAULTS) for _ in range(args.faults)]
    for _ in range(args.records // args.page_size):
        script.insert(rng.randrange(len(script) + 1), None)
    records = make_records(args.records)
    wanted = ("cs.AI", "cs.CV", "cs.LG")
    expected = {r["id"] for r in records if category_matches(r["categories"], wanted)}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, OAIServer(records, args.page_size, script, retry_after=0,
                                                          stall_seconds=0.4) as server:
        fetcher = arxiv.Fetcher(delay_seconds=0.0, timeout_seconds=0.2, backoff_seconds=0.01, max_retries=30)
        pages = []
        with PaperStore(Path(tmp) / "soak.db") as store:  # first run: "killed" after half the pages
            half = args.records // args.page_size // 2
            arxiv.harvest(store, fetcher, server.url, wanted, should_stop=lambda: len(pages) >= half,
                          progress=lambda *a: pages.append(1))
        with PaperStore(Path(tmp) / "soak.db") as store:  # restart: continues from the stored token
            arxiv.harvest(store, fetcher, server.url, wanted)
            stored = [r["id"] for r in store.records()]
        injected = sum(server.injected.values())
    lost = len(expected - set(stored))
    duplicated = len(stored) - len(set(stored))
    print(f"faults injected: {injected} ({', '.join(f'{k} {v}' for k, v in sorted(server.injected.items()))})")
    print(f"requests: {len(server.requests)}, retries: {fetcher.retries}, seconds: {time.perf_counter() - began:.1f}")
    print(f"records expected: {len(expected)}, stored: {len(stored)}, lost: {lost}, duplicated: {duplicated}")
    sys.exit(1 if lost or duplicated or len(stored) != len(expected) else 0)


if __name__ == "__main__":
    main()
