"""Papers like yours as the model's guide, trained: a compact-related run dir against the packaged default,
paired on the same papers, by field, by how close the nearest paper is, and without any index.

Run as: python benchmarks/related_eval.py --model runs/related [--sets val,val1000] [--dtype auto]
        [--no-index 300] [--index PATH] [--out reports/related] [--limit N]

Papers: data/related/{val,val1000}.jsonl (scripts/related_splits.py): the field-stratified validation set
and the 1,000 recent validation papers, each with the 3 nearest papers of a training-papers-only index
updated on or before it (what a new paper finds in an index of what came before it). Systems, each with
the default options (4 beams), in batches of 8:
- default: the packaged model (no neighbours);
- related: the run dir with each paper's neighbours in its prompt;
- related, no index: the same run dir without neighbours, on the first --no-index papers of each set.
Titles are kept in OUT/SET-SYSTEM.jsonl as they are made (a rerun goes on from there). Prints ROUGE-L per
field and the paired difference [95% bootstrap], near / far (the nearest paper's similarity at or above the
set's median, or below), the seconds per title of each system, the index look-up (p50 on --index, the
user's index of all 300k papers), and how much titles copy their neighbours: the share equal to a
neighbour's title and the mean ROUGE-L with the nearest neighbour's title, beside the authors' titles'.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import table  # noqa: E402

from chatgentitle.data.index import KnownNeighbours, Neighbour, PaperIndex  # noqa: E402
from chatgentitle.data.prompt import normalise_title  # noqa: E402
from chatgentitle.evaluation.metrics import bootstrap_ci, field_of, score_pairs  # noqa: E402
from chatgentitle.progress import Progress  # noqa: E402
from chatgentitle.titling.generator import TitleGenerator, titles  # noqa: E402

BATCH = 8


def read(path: Path) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def decode(generator, papers: list[dict], out: Path, name: str) -> tuple[list[str], float]:
    """Titles for the papers (resumed from `out`), and the seconds per title of those decoded now."""
    done = {r["id"]: r["title"] for r in read(out)} if out.is_file() else {}
    todo = [p for p in papers if p["id"] not in done]
    seconds = 0.0
    with open(out, "a") as handle, Progress(len(todo), "titles", name) as shown:
        for i in range(0, len(todo), BATCH):
            batch = todo[i: i + BATCH]
            began = time.perf_counter()
            found = titles(generator, [p["abstract"] for p in batch])
            seconds += time.perf_counter() - began
            for paper, result in zip(batch, found, strict=True):
                done[paper["id"]] = result.title
                handle.write(json.dumps({"id": paper["id"], "title": result.title}) + "\n")
            handle.flush()
            shown.update(len(batch))
    return [done[p["id"]] for p in papers], seconds / max(1, len(todo))


def compare(papers, a: list[str], b: list[str], groups) -> list[list]:
    references, abstracts = [p["title"] for p in papers], [p["abstract"] for p in papers]
    ra = [s.rougeL for s in score_pairs(a, references, abstracts)]
    rb = [s.rougeL for s in score_pairs(b, references, abstracts)]
    rows = []
    for name, keep in groups:
        idx = [i for i in range(len(a)) if keep(i)]
        if not idx:
            continue
        differences = [rb[i] - ra[i] for i in idx]
        low, high = bootstrap_ci(differences)
        rows.append([name, len(idx), statistics.fmean(ra[i] for i in idx), statistics.fmean(rb[i] for i in idx),
                     f"{statistics.fmean(differences):+.2f} [{low:+.2f}, {high:+.2f}]"])
    return rows


def copying(papers, found: list[str]) -> tuple[float, float, float]:
    """(% equal to a neighbour's title, mean ROUGE-L with the nearest neighbour's title for these titles and
    for the authors' titles), over the papers that have neighbours."""
    have = [(p, t) for p, t in zip(papers, found, strict=True) if p["related"]]
    equal = sum(normalise_title(t) in {normalise_title(n["title"]) for n in p["related"]} for p, t in have)
    nearest = [p["related"][0]["title"] for p, _ in have]
    ours = score_pairs([t for _, t in have], nearest, nearest)
    authors = score_pairs([p["title"] for p, _ in have], nearest, nearest)
    return (100 * equal / max(1, len(have)), statistics.fmean(s.rougeL for s in ours),
            statistics.fmean(s.rougeL for s in authors))


def refound(papers: list[dict], path: Path) -> list[dict]:
    """The papers with their neighbours found again in another index (never the paper, never a later one)."""
    with PaperIndex(path) as index:
        return [p | {"related": [n.to_dict() for n in index.nearest(p["abstract"], 3, exclude=(p["id"],),
                                                                     title=p["title"], before=p["update_date"])]}
                for p in papers]


def report(name: str, papers: list[dict], default, guided, args, neighbours: str = "") -> None:
    """One set's titles from each system, compared (`neighbours`: which index found them, for file names)."""
    guided.guide = KnownNeighbours({p["abstract"]: [Neighbour(**n) for n in p["related"]] for p in papers})
    a, a_time = decode(default, papers, args.out / f"{name}-default.jsonl", f"{name} default")
    b, b_time = decode(guided, papers, args.out / f"{name}{neighbours}-related.jsonl", f"{name}{neighbours} related")
    guided.guide = None
    head = papers[: args.no_index]
    c, c_time = decode(guided, head, args.out / f"{name}-related-no-index.jsonl", f"{name} no index")
    near = [p["related"][0]["similarity"] if p["related"] else 0.0 for p in papers]
    median = statistics.median(near)
    fields = sorted({field_of(p["categories"]) for p in papers})
    groups = ([(f, lambda i, f=f: field_of(papers[i]["categories"]) == f) for f in fields] if len(fields) > 1
              else []) + [(f"near (nearest ≥ {median:.2f})", lambda i: near[i] >= median),
                          (f"far (nearest < {median:.2f})", lambda i: near[i] < median),
                          ("no neighbour", lambda i: not papers[i]["related"]), ("all", lambda i: True)]
    headers = ["papers", "n", "ROUGE-L default", "ROUGE-L related", "paired difference [95%]"]
    print(f"\n## {name}{neighbours}: related (neighbours in the prompt) against the default\n")
    print(table(headers, compare(papers, a, b, groups)))
    print(f"\n## {name}: related without an index against the default (first {len(head)})\n")
    print(table(headers, compare(head, a[: len(head)], c, [("all", lambda i: True)])))
    equal, ours, authors = copying(papers, b)
    print(f"\ntitles equal to a neighbour's title: {equal:.1f}% (default {copying(papers, a)[0]:.1f}%); mean ROUGE-L "
          f"with the nearest neighbour's title: related {ours:.1f}, default {copying(papers, a)[1]:.1f}, "
          f"authors {authors:.1f}")
    print(f"seconds per title (decoded now, batches of {BATCH}): default {a_time:.3f}, related {b_time:.3f}, "
          f"no index {c_time:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--sets", default="val,val1000")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--no-index", type=int, default=300, help="papers per set titled without neighbours")
    parser.add_argument("--index", type=Path, help="the index whose look-up time is reported [default path]")
    parser.add_argument("--out", type=Path, default=Path("reports/related"))
    parser.add_argument("--limit", type=int, help="only the first N papers of each set")
    parser.add_argument("--neighbours", type=Path, help="find each paper's neighbours in this index instead (e.g. a "
                        "small one a package could ship), updated on or before it; titles go to OUT/SET-INDEX-*.jsonl")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    default = TitleGenerator.load(dtype=args.dtype)
    guided = TitleGenerator.load(args.model, dtype=args.dtype)
    for name in args.sets.split(","):
        papers = read(Path("data/related") / f"{name}.jsonl")[: args.limit]
        if args.neighbours:
            papers = refound(papers, args.neighbours)
        report(name, papers, default, guided, args, f"-{args.neighbours.stem}" if args.neighbours else "")
    with PaperIndex(args.index) as index:
        seconds = []
        for paper in papers[:200]:
            began = time.perf_counter()
            index.nearest(paper["abstract"], 3)
            seconds.append(time.perf_counter() - began)
        size = len(index)
    print(f"index look-up ({size:,} papers, 3 nearest, 200 abstracts): p50 {1000 * statistics.median(seconds):.0f} ms")


if __name__ == "__main__":
    main()
