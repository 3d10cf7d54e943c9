"""Noisy-channel reranking of a beam pool, measured offline: each candidate title t scored by how well the
base model predicts the start of the abstract after it, log p(abstract[:N] | "Title: t\\nAbstract:"), added
to the search's own score with a weight chosen on one half of the papers and reported on the other.

    python benchmarks/channel_rerank.py --pools runs/gpu/pools-eval.jsonl.xz --papers data/recent/val.jsonl \
        --limit 300 --abstract-tokens 96

Pools come from benchmarks/gpu/fields_gpu.py (every finished title of an 8-beam search with its score).
"""

from __future__ import annotations

import argparse
import json
import lzma
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pools", type=Path, required=True)
    parser.add_argument("--papers", type=Path, required=True)
    parser.add_argument("--beams", type=int, default=8)
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--abstract-tokens", type=int, default=96)
    args = parser.parse_args()
    import torch

    from chatgentitle.model.loading import load_base
    from chatgentitle.titling.ranking import _CachedTokenizer, _rouge_l, pick_titles

    papers = {row["id"]: row for row in map(json.loads, args.papers.read_text().splitlines())}
    seen, pools = set(), []
    with lzma.open(args.pools, "rt") as handle:
        for line in handle:
            pool = json.loads(line)
            if pool["beams"] == args.beams and pool["id"] in papers and pool["id"] not in seen:
                seen.add(pool["id"])
                pools.append(pool)
    pools = sorted(pools, key=lambda p: p["id"])[: args.limit]
    model, tokenizer = load_base("smollm2-135m", dtype=torch.float32)
    model.eval()
    scorer = _rouge_l(_CachedTokenizer())
    rows, began = [], time.perf_counter()
    for pool in pools:
        paper = papers[pool["id"]]
        score_of = {}
        for text, score, _ in pool["candidates"]:
            score_of.setdefault(pick_titles([text], 1)[0], score)
        titles = [t for t in pick_titles([c[0] for c in pool["candidates"]], 8) if t]
        target = tokenizer(" " + paper["abstract"], add_special_tokens=False)["input_ids"][: args.abstract_tokens]
        heads = [tokenizer(f"Title: {t}\nAbstract:", add_special_tokens=False)["input_ids"] for t in titles]
        width = max(map(len, heads)) + len(target)
        pad = tokenizer.pad_token_id or tokenizer.eos_token_id
        ids = torch.tensor([[pad] * (width - len(h) - len(target)) + h + target for h in heads])
        mask = torch.tensor([[0] * (width - len(h) - len(target)) + [1] * (len(h) + len(target)) for h in heads])
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, -len(target) - 1:-1].float()
        channel = logits.log_softmax(-1).gather(-1, torch.tensor(target)[None, :, None].expand(len(titles), -1, 1))
        channel = (channel.squeeze(-1).sum(-1) / len(target)).tolist()
        rouge = [scorer.score(paper["title"], t)["rougeL"].fmeasure for t in titles]
        rows.append({"search": [score_of.get(t, 0.0) for t in titles], "channel": channel, "rouge": rouge})
    print(f"{len(rows)} pools in {time.perf_counter() - began:.0f} s", file=sys.stderr)

    def pick(row, weight):
        totals = [s + weight * c for s, c in zip(row["search"], row["channel"], strict=True)]
        return row["rouge"][totals.index(max(totals))]

    half = len(rows) // 2
    weights = [0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0]
    tune = {w: statistics.fmean(pick(r, w) for r in rows[:half]) for w in weights}
    best = max(tune, key=tune.get)
    held = rows[half:]
    print("weight: mean ROUGE-L on the first half", {w: round(100 * v, 2) for w, v in tune.items()})
    print(f"held-out half ({len(held)}): first {100 * statistics.fmean(r['rouge'][0] for r in held):.2f}, "
          f"weight {best}: {100 * statistics.fmean(pick(r, best) for r in held):.2f}, "
          f"channel alone: {100 * statistics.fmean(pick(r, 1e6) for r in held):.2f}, "
          f"oracle {100 * statistics.fmean(max(r['rouge']) for r in held):.2f}")


if __name__ == "__main__":
    main()
