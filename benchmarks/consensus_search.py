"""Consensus (minimum Bayes risk) choices measured offline: which candidates, how many samples, which models.

Run as:
    python benchmarks/consensus_search.py dump RUN_DIR OUT.jsonl [--data data/recent/val200.jsonl]
    python benchmarks/consensus_search.py grid OUT_A.jsonl [OUT_B.jsonl ...] [--beams 4 --samples 16,32]

`dump` writes, per paper, a run's 8 beams and 32 epsilon samples (the decoding of GenerationOptions.
consensus, one prefill per abstract); `grid` scores, against the real titles, the title that
`consensus_titles` picks from the first k beams and first n samples of each file's run (one run, or
several runs' pools together: an ensemble), next to the most likely beam. Decoding once and choosing many
ways keeps the comparison paired: every row sees the same candidates.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from functools import partial
from itertools import combinations
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import table  # noqa: E402

BEAMS, SAMPLES = 8, 32


def dump(run_dir: str, data: str, out: str) -> None:
    from chatgentitle.decoding.options import GenerationOptions
    from chatgentitle.decoding.search import beam_search, sample
    from chatgentitle.titling.generator import TitleGenerator

    generator = TitleGenerator.load(run_dir)
    papers = [json.loads(line) for line in Path(data).read_text().splitlines() if line]
    options, eos = GenerationOptions(), generator.tokenizer.eos_token_id
    decode = generator.tokenizer.decode
    with open(out, "w") as handle:
        for i in range(0, len(papers), 8):
            batch = papers[i:i + 8]
            ids, mask, _ = generator._batch([p["abstract"] for p in batch], None, options)
            beams = beam_search(generator.model, ids, mask, num_beams=BEAMS, max_new_tokens=40, eos_token_id=eos,
                                repetition_penalty=options.repetition_penalty)
            drawn = sample(generator.model, ids, mask, num_samples=SAMPLES, max_new_tokens=40, eos_token_id=eos)
            for paper, found, more in zip(batch, beams, drawn, strict=True):
                handle.write(json.dumps({"id": paper["id"], "title": paper["title"],
                                         "beams": [decode(s, skip_special_tokens=True) for s in found],
                                         "samples": [decode(s, skip_special_tokens=True) for s in more]}) + "\n")
            print(f"{i + len(batch)} papers", flush=True)


def grid(files: list[str], beams: list[int], samples: list[int], min_models: int = 1) -> None:
    from rouge_score import rouge_scorer

    from chatgentitle.titling.ranking import consensus_titles, pick_titles

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    runs = [[json.loads(line) for line in Path(f).read_text().splitlines() if line] for f in files]

    def rouge_l(choose) -> float:
        return statistics.fmean(100 * scorer.score(papers[0]["title"], choose(papers))["rougeL"].fmeasure
                                for papers in zip(*runs, strict=True))

    def best_beam(ps, members):
        return pick_titles(ps[members[0]]["beams"], 1)[0]

    def consensus(ps, members, k, n):
        return consensus_titles([t for m in members for t in ps[m]["beams"][:k] + ps[m]["samples"][:n]], 1)[0]

    rows = []
    for size in range(min_models, len(files) + 1):
        for members in combinations(range(len(files)), size):
            name = " + ".join(Path(files[m]).stem for m in members)
            if size == 1:
                rows.append([name, "most likely of 8 beams", "-", rouge_l(partial(best_beam, members=members))])
            for k in beams:
                for n in samples:
                    choose = partial(consensus, members=members, k=k, n=n)
                    rows.append([name, f"consensus of {k} beams", n, rouge_l(choose)])
    print(table(["models", "candidates", "samples per model", "ROUGE-L"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("run_dir")
    d.add_argument("out")
    d.add_argument("--data", default="data/recent/val200.jsonl")
    g = sub.add_parser("grid")
    g.add_argument("files", nargs="+")
    g.add_argument("--beams", default="4,8", help="beams per model in the pool, comma-separated choices")
    g.add_argument("--samples", default="0,8,16,32", help="samples per model in the pool, choices")
    g.add_argument("--min-models", type=int, default=1, help="score only ensembles of at least this many runs")
    args = parser.parse_args()
    if args.command == "dump":
        dump(args.run_dir, args.data, args.out)
    else:
        grid(args.files, [int(k) for k in args.beams.split(",")], [int(n) for n in args.samples.split(",")],
             args.min_models)


if __name__ == "__main__":
    main()
