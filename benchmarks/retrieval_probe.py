"""Papers like yours as the model's guide, untrained: today's default with and without the titles of the
nearest indexed papers in its instruction, paired, by field and by how close the nearest paper is.

Run as: python benchmarks/retrieval_probe.py [--per-field 50] [--fields astro-ph,cs,math,physics]
        [--index PATH] [--dtype auto]

Papers: the field-stratified validation set (data/fields/val.jsonl, scripts/field_splits.py). Neighbours:
the paper index (`chatgentitle index`, default beside the store), 3 per paper, never the paper itself and
never a paper updated after it. The guided instruction is the issue's probe: "Titles of similar papers:
- ... Write a title in the same style for this paper." Both systems decode with the default options
(4 beams), one abstract at a time. Prints ROUGE-L per field, the paired difference overall and for the
papers whose nearest neighbour is close (similarity at or above the median) or far, and how often a
guided title copies a neighbour's title (up to case and punctuation).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import table  # noqa: E402

from chatgentitle.data.index import PaperIndex  # noqa: E402
from chatgentitle.data.prompt import normalise_title  # noqa: E402
from chatgentitle.data.records import read_papers  # noqa: E402
from chatgentitle.evaluation.metrics import bootstrap_ci, field_of, score_pairs  # noqa: E402
from chatgentitle.progress import Progress  # noqa: E402
from chatgentitle.titling.generator import TitleGenerator, titles  # noqa: E402


def guided(neighbours) -> str:
    return ("Titles of similar papers:\n" + "".join(f"- {n.title}\n" for n in neighbours)
            + "Write a title in the same style for this paper.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-field", type=int, default=50)
    parser.add_argument("--fields", default="astro-ph,cs,math,physics")
    parser.add_argument("--index", type=Path)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--val", type=Path, default=Path("data/fields/val.jsonl"))
    args = parser.parse_args()
    fields = args.fields.split(",")
    chosen = defaultdict(list)
    for paper in read_papers([args.val]):
        field = field_of(paper.categories)
        if field in fields and len(chosen[field]) < args.per_field:
            chosen[field].append(paper)
    papers = [p for field in fields for p in chosen[field]]
    generator = TitleGenerator.load(dtype=args.dtype)
    plain, steered, nearest, copies = [], [], [], 0
    with PaperIndex(args.index) as index, Progress(len(papers), "papers", "probe") as shown:
        for paper in papers:
            found = [n for n in index.nearest(paper.abstract, 10, exclude=(paper.id,), title=paper.title)
                     if n.update_date <= paper.update_date][:3]
            plain.append(titles(generator, [paper.abstract])[0].title)
            steered.append(titles(generator, [paper.abstract], instruction=guided(found))[0].title if found
                           else plain[-1])
            nearest.append(found[0].similarity if found else 0.0)
            copies += any(normalise_title(steered[-1]) == normalise_title(n.title) for n in found)
            shown.update(1)
    references, abstracts = [p.title for p in papers], [p.abstract for p in papers]
    a = [s.rougeL for s in score_pairs(plain, references, abstracts)]
    b = [s.rougeL for s in score_pairs(steered, references, abstracts)]
    median = statistics.median(nearest)
    rows = []
    for name, keep in ([(f, lambda i, f=f: field_of(papers[i].categories) == f) for f in fields]
                       + [("near (nearest ≥ median)", lambda i: nearest[i] >= median),
                          ("far (nearest < median)", lambda i: nearest[i] < median), ("all", lambda i: True)]):
        idx = [i for i in range(len(papers)) if keep(i)]
        differences = [b[i] - a[i] for i in idx]
        low, high = bootstrap_ci(differences)
        rows.append([name, len(idx), statistics.fmean(a[i] for i in idx), statistics.fmean(b[i] for i in idx),
                     f"{statistics.fmean(differences):+.2f} [{low:+.2f}, {high:+.2f}]"])
    print(table(["papers", "n", "ROUGE-L default", "ROUGE-L guided", "paired difference [95%]"], rows))
    print(f"median similarity of the nearest neighbour: {median:.3f}; guided titles equal to a neighbour's "
          f"title: {copies} of {len(papers)}")


if __name__ == "__main__":
    main()
