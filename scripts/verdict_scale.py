"""The verdict's scale: how likely an adapter finds published titles, each for its own abstract.

    python scripts/verdict_scale.py [PAPERS] [--adapter DIR] [--dtype fp32]

PAPERS (default data/fields/val.jsonl, the field-stratified validation set of scripts/field_splits.py:
papers no packaged adapter was trained on) are scored one at a time: the mean log-probability per token
of the paper's own title after its abstract's prompt (TitleGenerator.log_probs, the verdict's scale).
The values go into the adapter dir as verdict_scale.json (RunDir.write_verdict_scale, tied to the
adapter's weights), and a `--title` verdict then says which percentile of them a title reaches. Prints
the quartiles overall and per field.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

from chatgentitle.data.records import read_papers
from chatgentitle.evaluation.metrics import field_of
from chatgentitle.model.run_dir import RunDir
from chatgentitle.progress import Progress
from chatgentitle.titling.generator import TitleGenerator, default_adapter_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("papers", nargs="?", default="data/fields/val.jsonl", type=Path)
    parser.add_argument("--adapter", type=Path, help="Run dir or adapter dir [default: the packaged adapter].")
    parser.add_argument("--dtype", default="fp32")
    args = parser.parse_args()
    adapter = args.adapter or default_adapter_dir()
    generator = TitleGenerator.load(adapter, dtype=args.dtype)
    papers = list(read_papers([args.papers]))
    by_field = defaultdict(list)
    with Progress(len(papers), "papers", "scale") as shown:
        for paper in papers:
            by_field[field_of(paper.categories)].append(generator.log_probs(paper.abstract, [paper.title])[0])
            shown.update(1)
    every = [x for values in by_field.values() for x in values]
    path = RunDir(adapter).write_verdict_scale(every, f"{args.papers} ({len(every)} papers)")
    for name, values in [("all", every), *sorted(by_field.items())]:
        q1, median, q3 = statistics.quantiles(values, n=4)
        print(f"{name:<10} {len(values):>5}  quartiles {q1:.3f} {median:.3f} {q3:.3f}")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
