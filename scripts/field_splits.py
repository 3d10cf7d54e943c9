"""The field-stratified validation set, the field-balanced training mix and the ranker's pool papers.

    chatgentitle prepare ../shared/data/arxiv-metadata-300k.jsonl.gz --out data/recent \
        --since 2025-01-01 --test-since 2026-04-01 --val-size 1000
    chatgentitle prepare ../shared/data/arxiv-metadata-300k.jsonl.gz --out data/all --val-size 0 --test-size 0
    python scripts/field_splits.py            # -> data/fields/{val,mix,pool}.jsonl

- val.jsonl: 100 papers per field (metrics.FIELDS), recent ones (updated 2025-01-01 .. 2026-03-31) that
  no packaged adapter was trained on (data/recent/val.jsonl, then data/recent/train.jsonl from line
  UNSEEN_FROM on), filled up with papers of earlier years where a field has too few.
- mix.jsonl: the field-balanced training mix: up to PER_FIELD papers of every other field (recent
  first, then earlier years) and CS_PAPERS recent cs papers the default adapter already saw (they hold
  cs in place), in a hash order.
- pool.jsonl: papers for the ranker's candidate pools: the unseen recent papers and POOL_OLDER papers
  of earlier years, none in val or mix.
No paper of data/recent's val or test split is in mix or pool, and none of val is in either (asserted).
Every choice is by a hash of the id, so the files are the same on every run.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import defaultdict
from pathlib import Path

from chatgentitle.evaluation.metrics import FIELDS, field_of

PER_VAL = 100        # validation papers per field
PER_FIELD = 3000     # training papers per field other than cs
CS_PAPERS = 6000     # recent cs papers in the mix
POOL_OLDER = 4000    # earlier-years papers in the ranker pools
UNSEEN_FROM = 80_000  # data/recent/train.jsonl lines before this were used to train the packaged adapters
RECENT = ("2025-01-01", "2026-04-01")


def order(paper: dict, salt: str = "fields") -> str:
    return hashlib.sha1(f"{salt}:{paper['id']}".encode()).hexdigest()


def read(path: Path) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def write(path: Path, papers: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as handle:
        handle.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in sorted(papers, key=order))
    tmp.replace(path)


def main(root: Path = Path("data")) -> None:
    recent_train, recent_val = read(root / "recent/train.jsonl"), read(root / "recent/val.jsonl")
    held_out = {p["id"] for p in recent_val} | {p["id"] for p in read(root / "recent/test.jsonl")}
    seen = recent_train[:UNSEEN_FROM]
    unseen = recent_val + recent_train[UNSEEN_FROM:]
    recent_ids = {p["id"] for p in recent_train} | held_out
    older = [p for p in read(root / "all/train.jsonl")
             if p["update_date"] < RECENT[0] and p["id"] not in recent_ids]

    def by_field(papers):
        groups = defaultdict(list)
        for paper in sorted(papers, key=order):
            groups[field_of(paper["categories"])].append(paper)
        return groups

    unseen_f, seen_f, older_f = by_field(unseen), by_field(seen), by_field(older)
    val = []
    for name in FIELDS:
        val += (unseen_f[name] + older_f[name])[:PER_VAL]
    val_ids = {p["id"] for p in val}

    mix = seen_f["cs"][:CS_PAPERS]
    for name in sorted(set(seen_f) | set(older_f)):
        if name != "cs":
            mix += [p for p in seen_f[name] + older_f[name] if p["id"] not in val_ids][:PER_FIELD]
    mix_ids = {p["id"] for p in mix}

    pool = [p for p in unseen if p["id"] not in val_ids and p["id"] not in held_out]
    pool += [p for p in sorted(older, key=lambda p: order(p, "pool"))
             if p["id"] not in val_ids and p["id"] not in mix_ids][:POOL_OLDER]
    pool_ids = {p["id"] for p in pool}
    assert not (mix_ids | pool_ids) & (held_out | val_ids), "a held-out paper in the training data"

    out = root / "fields"
    out.mkdir(parents=True, exist_ok=True)
    for name, papers in (("val", val), ("mix", mix), ("pool", pool)):
        write(out / f"{name}.jsonl", papers)
        counts = defaultdict(int)
        for paper in papers:
            counts[field_of(paper["categories"])] += 1
        print(f"{name}: {len(papers)}", dict(sorted(counts.items(), key=lambda kv: -kv[1])), file=sys.stderr)


if __name__ == "__main__":
    main()
