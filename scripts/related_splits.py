"""Training and validation papers with the titles of their closest published papers (`related`), for the
compact-related prompt (configs/smollm2-135m-related.yaml).

    python scripts/field_splits.py                 # data/fields/{val,mix}.jsonl (see its docstring)
    python scripts/related_splits.py --out data/related  # index.db, {mix,val,val1000,pick}.jsonl

The neighbours come from an index of training papers only: every paper of data/all/train.jsonl (the
shared 300k) except the held-out ones (data/recent/val, data/recent/test, data/fields/val). For each paper:
never the paper itself (id, abstract or title), never a paper updated after it, never a held-out id;
each is asserted as the rows are written. A share NO_RELATED of the training rows (by a hash of the id)
go without neighbours, so that the model also titles where there is no index. The validation rows keep
all their neighbours, found the same way: what a new paper would find in an index of what came before it.
pick.jsonl (PICK papers of data/fields/pool.jsonl, in no training row) chooses the kept checkpoint, so
neither evaluation set does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from chatgentitle.data.index import PaperIndex
from chatgentitle.data.prompt import normalise_title
from chatgentitle.data.records import read_papers
from chatgentitle.progress import Progress

K = 3  # the template's `related`
NO_RELATED = 0.25  # share of training rows shown without neighbours
PICK = 128  # validation papers that choose the kept checkpoint (train's keep_best)
HELD_OUT = ("recent/val.jsonl", "recent/test.jsonl", "fields/val.jsonl")


def read(path: Path) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def without_neighbours(paper: dict) -> bool:
    return int(hashlib.sha1(f"related:{paper['id']}".encode()).hexdigest(), 16) % 1000 < NO_RELATED * 1000


def attach(papers: list[dict], index: PaperIndex, held_out: set[str], name: str, training: bool) -> list[dict]:
    rows = []
    with Progress(len(papers), "papers", name) as shown:
        for paper in papers:
            found = [] if training and without_neighbours(paper) else index.nearest(
                paper["abstract"], K, exclude=(paper["id"],), title=paper["title"], before=paper["update_date"])
            for n in found:  # what the recipe promises, checked on every row
                assert n.id != paper["id"] and n.id not in held_out, (paper["id"], n.id)
                assert n.update_date <= paper["update_date"], (paper["id"], n.id)
                assert normalise_title(n.title) != normalise_title(paper["title"]), (paper["id"], n.id)
            rows.append(paper | {"related": [n.to_dict() for n in found]})
            shown.update(1)
    return rows


def write(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("data"))
    parser.add_argument("--out", type=Path, default=Path("data/related"))
    parser.add_argument("--train", type=int, default=12_000, help="training rows: the first N of fields/mix.jsonl")
    args = parser.parse_args()
    root, out = args.root, args.out
    out.mkdir(parents=True, exist_ok=True)
    held_out = {p["id"] for name in HELD_OUT for p in read(root / name)}
    with PaperIndex(out / "index.db", create=True) as index:  # a rerun reuses it
        if len(index) == 0:
            list(index.add(p for p in read_papers([root / "all/train.jsonl"]) if p.id not in held_out))
        indexed = {i for (i,) in index.db.execute("SELECT id FROM papers")}
        assert not indexed & held_out, "a held-out paper is in the training index"
        print(f"training index: {len(index)} papers, none held out", file=sys.stderr)
        write(out / "val.jsonl", attach(read(root / "fields/val.jsonl"), index, held_out, "val", False))
        write(out / "val1000.jsonl", attach(read(root / "recent/val.jsonl"), index, held_out, "val1000", False))
        pick = read(root / "fields/pool.jsonl")[:PICK]  # keep-best's papers: in no training row, not evaluated
        write(out / "pick.jsonl", attach(pick, index, held_out, "pick", False))
        mix = read(root / "fields/mix.jsonl")[: args.train]
        assert not {p["id"] for p in mix} & held_out
        write(out / "mix.jsonl", attach(mix, index, held_out, "mix", True))


if __name__ == "__main__":
    main()
