"""Helpers shared by the benchmarks: real papers from ../shared, markdown tables."""

from __future__ import annotations

import sys
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "arxiv-metadata-300k.jsonl.gz"


def recent_papers(n: int, since: str = "2026-04-01", path: Path = SHARED_DATA):
    """The first n papers updated on or after `since` (held out from the default model's training)."""
    from chatgentitle.data.records import read_papers

    if not path.is_file():
        sys.exit(f"skipped: {path} not present")
    papers = []
    for paper in read_papers([path]):
        if paper.update_date >= since and 200 <= len(paper.abstract) <= 2000:
            papers.append(paper)
            if len(papers) == n:
                break
    return papers


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(f"{c:,.1f}" if isinstance(c, float) else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
