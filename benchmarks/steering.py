"""What steering does on validation papers (data/recent/val.jsonl, from `prepare ... --out data/recent`), with
the packaged default model:

- include: one phrase per paper taken from its real title (its acronym when it has one: a word with two
  capitals or more; else its rarest word, by frequency over the training titles). Share of titles that
  hold it, ROUGE-L with and without it, seconds per title against plain 4 beams (both one paper at a
  time: an author asks for one abstract).
- words: the mean length in words for --words N.
- verdict: how often the model finds the real title more likely than another paper's (shuffled).
- spread: with -n 5, near-copies among the shown titles, their mean pairwise ROUGE-L and the first
  title's ROUGE-L, before (the ranked first five of the pool) and after (maximal marginal relevance).

    python benchmarks/steering.py include words verdict spread --out reports/steering
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from collections import Counter
from itertools import combinations
from pathlib import Path
from statistics import mean

from common import table

from chatgentitle.decoding.options import GenerationOptions
from chatgentitle.titling.generator import TitleGenerator, candidates
from chatgentitle.titling.ranking import contains, make_ranker, normalise_title, spread, words


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F1 (0-1), stemmed, as `eval` scores it."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rougeL"], use_stemmer=True)
    return mean(scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True))


def load(path: Path, n: int) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for _, line in zip(range(n), handle, strict=False)]


def phrase_of(title: str, counts: Counter) -> str:
    """The title's acronym (a word with two capitals or more), else its rarest word of 4+ letters."""
    for word in re.findall(r"[\w-]+", title):
        if sum(c.isupper() for c in word) >= 2 and len(word) >= 2:
            return word
    candidates_ = [w for w in re.findall(r"[A-Za-z]{4,}", title)]
    return min(candidates_, key=lambda w: (counts[w.lower()], w)) if candidates_ else title.split()[0]


def bench_include(g, papers, counts) -> dict:
    plain_s = steered_s = 0.0
    rows = []
    for paper in papers:
        phrase = phrase_of(paper["title"], counts)
        began = time.perf_counter()
        plain = g([paper["abstract"]])[0]
        plain_s += time.perf_counter() - began
        began = time.perf_counter()
        steered = g([paper["abstract"]], GenerationOptions(include=(phrase,)))[0]
        steered_s += time.perf_counter() - began
        rows.append({"id": paper["id"], "phrase": phrase, "plain": plain, "steered": steered,
                     "holds": contains(steered, phrase), "plain_holds": contains(plain, phrase)})
    refs = [p["title"] for p in papers]
    return {"papers": len(papers), "holds": mean(r["holds"] for r in rows), "plain_holds": mean(r["plain_holds"]
                                                                                            for r in rows),
            "rouge_plain": 100 * rouge_l([r["plain"] for r in rows], refs),
            "rouge_steered": 100 * rouge_l([r["steered"] for r in rows], refs),
            "seconds_plain": plain_s / len(papers), "seconds_steered": steered_s / len(papers), "rows": rows}


def bench_words(g, papers, targets=(6, 8, 10, 12, 16)) -> dict:
    abstracts = [p["abstract"] for p in papers]
    out = {}
    for target in (None, *targets):
        found = [t for i in range(0, len(abstracts), 8) for t in g(abstracts[i:i + 8], GenerationOptions(words=target))]
        lengths = [len(t.split()) for t in found]
        out[str(target)] = {"mean_words": mean(lengths), "within_1": mean(abs(n - (target or 0)) <= 1 for n in lengths),
                            "rouge": 100 * rouge_l(found, [p["title"] for p in papers])}
    return out


def bench_verdict(g, papers) -> dict:
    wins, ranks = [], []
    for i, paper in enumerate(papers):
        other = papers[(i + 1) % len(papers)]["title"]
        real, shuffled = g.log_probs(paper["abstract"], [paper["title"], other])
        wins.append(real > shuffled)
    return {"papers": len(papers), "real_above_shuffled": mean(wins), "ranks": ranks}


def pairwise(shown: list[str]) -> float:
    pairs = list(combinations(shown, 2))
    return mean(rouge_l([a], [b]) for a, b in pairs) if pairs else 0.0


def bench_spread(g, papers, pools_file: Path, weights=(1.0, 2.0, 3.0, 5.0, 8.0)) -> dict:
    """The pools (what `-n 5` decodes: 10 beams, then 10 samples) are kept in pools_file: the weights are
    compared on the same ones. "before": the ranked first five beams, as -n 5 showed them before."""
    ranker = make_ranker()
    if pools_file.is_file():
        pools = json.loads(pools_file.read_text())
    else:
        options = GenerationOptions(num_candidates=5)
        pools = [pool for i in range(0, len(papers), 8)
                 for pool in g.generate([p["abstract"] for p in papers[i:i + 8]], options)]
        pools_file.write_text(json.dumps(pools))
    out = {"pool_size": mean(map(len, pools))}
    refs = [p["title"] for p in papers]
    before = [ranker.rank(p["abstract"], pool[:5]) for p, pool in zip(papers, pools, strict=True)]
    out["before"] = summary([[c.title for c in shown] for shown in before], refs)
    for weight in weights:
        after = []
        for paper, pool in zip(papers, pools, strict=True):
            ranked = ranker.rank(paper["abstract"], pool)
            first = next(c for c in ranked if c.title in pool[:5])
            after.append(spread(first, [c for c in ranked if c is not first], 5, weight))
        out[f"weight {weight}"] = summary([[c.title for c in shown] for shown in after], refs)
    after = [candidates(p["abstract"], pool, ranker, 5) for p, pool in zip(papers, pools, strict=True)]
    out["default"] = summary([[c.title for c in shown] for shown in after], refs)
    return out


def summary(shown: list[list[str]], refs: list[str]) -> dict:
    copies = sum(normalise_title(a) == normalise_title(b) for titles_ in shown for a, b in combinations(titles_, 2))
    others = [(title, ref) for titles_, ref in zip(shown, refs, strict=True) for title in titles_[1:]]
    return {"pairwise_rouge": 100 * mean(pairwise(s) for s in shown), "copies": copies,
            "first_rouge": 100 * rouge_l([s[0] for s in shown], refs), "shown": mean(map(len, shown)),
            "others_rouge": 100 * rouge_l(*zip(*others, strict=True)) if others else 0.0}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("parts", nargs="+", choices=["include", "words", "verdict", "spread"])
    parser.add_argument("--data", type=Path, default=Path("data/recent/val.jsonl"))
    parser.add_argument("--train", type=Path, default=Path("data/recent/train.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("reports/steering"))
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    g = TitleGenerator.load(dtype=args.dtype)
    g(["warm up"])
    args.out.mkdir(parents=True, exist_ok=True)
    flags = " ".join(sorted({f for f in open("/proc/cpuinfo").read().split() if f.startswith(("avx", "amx"))}))
    host = {"cpu": platform.processor() or platform.machine(), "flags": flags, "dtype": args.dtype}
    for part in args.parts:
        if part == "include":
            counts = Counter(w for row in load(args.train, 10**9) for w in words(row["title"]))
            result = bench_include(g, load(args.data, 200), counts)
            print(table(["papers", "holds %", "plain holds %", "ROUGE-L plain", "ROUGE-L steered", "s plain",
                         "s steered"], [[result["papers"], 100 * result["holds"], 100 * result["plain_holds"],
                                         result["rouge_plain"], result["rouge_steered"],
                                         round(result["seconds_plain"], 2), round(result["seconds_steered"], 2)]]))
        elif part == "words":
            result = bench_words(g, load(args.data, 100))
            print(table(["words", "mean words", "within ±1 %", "ROUGE-L"],
                        [[k, round(v["mean_words"], 2), 100 * v["within_1"], v["rouge"]] for k, v in result.items()]))
        elif part == "verdict":
            result = bench_verdict(g, load(args.data, 200))
            print(f"real above shuffled: {100 * result['real_above_shuffled']:.1f}% of {result['papers']}")
        else:
            result = bench_spread(g, load(args.data, 100), args.out / "spread-pools.json")
            print(table(["choice", "pairwise ROUGE-L", "near-copies", "first ROUGE-L", "others' ROUGE-L"],
                        [[k, v["pairwise_rouge"], v["copies"], v["first_rouge"], v["others_rouge"]]
                         for k, v in result.items() if isinstance(v, dict)]))
        (args.out / f"{part}.json").write_text(json.dumps(result | {"host": host}, indent=1) + "\n")


if __name__ == "__main__":
    main()
