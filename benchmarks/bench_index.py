"""The paper index over the shared 300,000 papers: build time, memory, size, query latency, neighbours.

Run as: python benchmarks/bench_index.py [--out /tmp/papers-index.db] [--val data/fields/val.jsonl]

1. Builds the index from ../shared/data/arxiv-metadata-300k.jsonl.gz (what `chatgentitle index` does):
   wall time, this process's peak RSS, the file's size.
2. Adds 1,000 papers it does not have (shared papers under new ids): the incremental add.
3. Queries the abstracts of the field-stratified validation set (scripts/field_splits.py), 5 neighbours
   each, never the paper itself: latency p50/p99, and how often the 5 nearest share the query's field
   (metrics.field_of: the arXiv archive), per field.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import sys
import time
from collections import defaultdict
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SHARED_DATA, table  # noqa: E402

from chatgentitle.data.index import PaperIndex, build  # noqa: E402
from chatgentitle.data.records import read_papers  # noqa: E402
from chatgentitle.evaluation.metrics import field_of  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/papers-index.db"))
    parser.add_argument("--val", type=Path, default=Path("data/fields/val.jsonl"))
    args = parser.parse_args()
    if not SHARED_DATA.is_file() or not args.val.is_file():
        sys.exit(f"skipped: {SHARED_DATA} or {args.val} not present (scripts/field_splits.py makes the latter)")
    args.out.unlink(missing_ok=True)
    with PaperIndex(args.out, create=True) as index:
        began = time.perf_counter()
        print(build(index, [SHARED_DATA], progress=True))
        built = time.perf_counter() - began
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        size = args.out.stat().st_size / 1e6

        fresh = [dataclasses.replace(p, id=f"new-{p.id}") for p in islice(read_papers([SHARED_DATA]), 1000)]
        began = time.perf_counter()
        list(index.add(fresh))
        added = time.perf_counter() - began

        shared, seconds = defaultdict(list), []
        for paper in read_papers([args.val]):
            began = time.perf_counter()
            found = index.nearest(paper.abstract, 5, exclude=(paper.id,), title=paper.title)
            seconds.append(time.perf_counter() - began)
            field = field_of(paper.categories)
            shared[field].append(sum(field_of(n.categories) == field for n in found) / max(1, len(found)))
        papers = len(index)
    seconds.sort()
    print(f"\nbuild: {built / 60:.1f} min for {papers:,} papers, peak RSS {peak:,.0f} MB, file {size:,.0f} MB")
    print(f"incremental add of 1,000 new papers: {added:.1f} s")
    print(f"query (5 neighbours, {len(seconds)} abstracts): p50 {1000 * statistics.median(seconds):.0f} ms, "
          f"p99 {1000 * seconds[int(0.99 * (len(seconds) - 1))]:.0f} ms")
    rows = [[field, len(v), 100 * statistics.fmean(v)] for field, v in sorted(shared.items())]
    every = [x for v in shared.values() for x in v]
    print(table(["field", "papers", "5 nearest in the same field, %"], [*rows, ["all", len(every),
                                                                             100 * statistics.fmean(every)]]))


if __name__ == "__main__":
    main()
