"""A learned ranker over the candidate pool, tried and left out: LightGBM LambdaRank (`pip install lightgbm`)
over features of each candidate, trained on pools of training papers and scored on validation pools
(docs/search.md, Ranking the pool).

    python benchmarks/ranker_experiment.py --train-pools runs/gpu/pools-train.jsonl.xz \
        --eval-pools runs/gpu/pools-eval.jsonl.xz --papers data/fields/pool.jsonl \
        --papers data/recent/val.jsonl --papers data/fields/val.jsonl \
        --held-out data/recent/val.jsonl --held-out data/recent/test.jsonl --held-out data/fields/val.jsonl \
        --out runs/ranker/model.txt

A pool row (benchmarks/gpu/fields_gpu.py, or `chatgentitle label --label-by pool`) is one paper's
candidates: {"id", "model", "beams", "candidates": [[text, score, tokens], ...]}. Each candidate's
features are ranking.pool_features; its target is ROUGE-L against the paper's own title. The model is a
LightGBM LambdaRank over each pool. No training paper may be a held-out (validation or test) paper:
checked by id before anything is trained. Features are cached beside --out (FEATURES.npz) per pool file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import sys
import time
from pathlib import Path

import numpy as np

from chatgentitle.data.prompt import clean_title
from chatgentitle.titling.ranking import (
    Embedder,
    _CachedTokenizer,
    _rouge_l,
    cliches_in,
    copy_rate,
    has_repeated_bigram,
    normalise_title,
    pick_titles,
    words,
)


def pool_titles(candidates: list) -> tuple[list[str], list[float]]:
    """A search's distinct titles as pick_titles chooses and orders them, each with the score of its first
    candidate ([text, score, tokens] rows, best first)."""
    score_of = {}
    for text, score, _ in candidates:
        score_of.setdefault(normalise_title(clean_title(text)), score)
    titles = pick_titles([text for text, _, _ in candidates], len(candidates))
    return titles, [score_of.get(normalise_title(title), float("nan")) for title in titles]




FEATURES = ("position", "pool_size", "score", "score_gap", "words", "words_vs_pool", "agreement",
            "agreement_gap", "faithfulness", "faithfulness_gap", "copy_rate", "repeats", "colon", "cliches",
            "abstract_words")
"""What the learned ranker sees of a candidate: its place and the search's score (NaN where the engine
gives none), its length, its agreement with the rest of the pool (mean ROUGE-L, minimum Bayes risk), its
MiniLM similarity to the abstract, how much of it is copied, and its form."""


def pool_features(abstract: str, titles: list[str], scores: list[float] | None = None,
                  faithfulness: list[float] | None = None) -> list[list[float]]:
    """One row of FEATURES per title (titles distinct and cleaned, in the model's order, best first);
    `faithfulness`: Embedder.faithfulness of the titles (NaN without)."""
    nan = float("nan")
    scores = scores or [nan] * len(titles)
    faithfulness = faithfulness or [nan] * len(titles)
    scorer = _rouge_l(_CachedTokenizer())
    agreement = [sum(scorer.score(title, other)["rougeL"].fmeasure for other in titles if other is not title)
                 / max(1, len(titles) - 1) for title in titles]
    lengths = [len(words(title)) for title in titles]
    mean_length = sum(lengths) / len(lengths)
    abstract_words = len(words(abstract))
    rows = []
    for i, title in enumerate(titles):
        rows.append([i, len(titles), scores[i], scores[i] - max(scores), lengths[i], lengths[i] - mean_length,
                     agreement[i], agreement[i] - max(agreement), faithfulness[i],
                     faithfulness[i] - max(faithfulness), copy_rate(title, abstract),
                     float(has_repeated_bigram(title)), float(":" in title), float(len(cliches_in(title))),
                     abstract_words])
    return rows


def read_rows(path: Path) -> list[dict]:
    opener = lzma.open if path.suffix == ".xz" else open
    with opener(path, "rt") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def featurise(pools: list[dict], papers: dict[str, dict], cache: Path, embed: bool) -> dict:
    """Features, targets and group sizes of every pool (cached in `cache`); MiniLM's only with `embed`."""
    if cache.is_file():
        return dict(np.load(cache, allow_pickle=False))
    embedder, scorer = Embedder.load() if embed else None, _rouge_l(_CachedTokenizer())
    rows, targets, groups, ids, models, beams = [], [], [], [], [], []
    began = time.perf_counter()
    pooled = [(pool, *pool_titles(pool["candidates"])) for pool in pools]
    title_vectors, abstract_vectors = {}, {}
    if embedder:  # MiniLM in batches of like length: every title, every abstract once
        unique_titles = sorted({t for _, titles, _ in pooled for t in titles}, key=len)
        for i in range(0, len(unique_titles), 256):
            chunk = unique_titles[i:i + 256]
            title_vectors.update(zip(chunk, embedder.encode(chunk), strict=True))
        print(f"{len(unique_titles)} titles encoded ({time.perf_counter() - began:.0f} s)", file=sys.stderr)
        abstract_ids = sorted({pool["id"] for pool in pools}, key=lambda k: len(papers[k]["abstract"]))
        for i in range(0, len(abstract_ids), 32):
            chunk = abstract_ids[i:i + 32]
            abstract_vectors.update(zip(chunk, embedder.encode([papers[k]["abstract"] for k in chunk]), strict=True))
        print(f"{len(abstract_ids)} abstracts encoded ({time.perf_counter() - began:.0f} s)", file=sys.stderr)
    for n, (pool, titles, scores) in enumerate(pooled):
        paper = papers[pool["id"]]
        faithfulness = ([float(title_vectors[t] @ abstract_vectors[pool["id"]]) for t in titles]
                        if embedder else None)
        rows += pool_features(paper["abstract"], titles, scores, faithfulness)
        targets += [scorer.score(paper["title"], t)["rougeL"].fmeasure for t in titles]
        groups.append(len(titles))
        ids.append(pool["id"])
        models.append(pool.get("model", ""))
        beams.append(pool.get("beams", 0))
        if n % 1000 == 999:
            print(f"{n + 1} pools featurised ({time.perf_counter() - began:.0f} s)", file=sys.stderr)
    data = {"features": np.asarray(rows, dtype=np.float32), "targets": np.asarray(targets, dtype=np.float32),
            "groups": np.asarray(groups), "ids": np.asarray(ids), "models": np.asarray(models),
            "beams": np.asarray(beams)}
    np.savez_compressed(cache, **data)
    return data


def choose(scores: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Index (within its pool) of the best-scored candidate of each pool."""
    picks, start = [], 0
    for size in groups:
        picks.append(int(np.argmax(scores[start:start + size])))
        start += size
    return np.asarray(picks)


def evaluate(data: dict, scores: np.ndarray) -> dict:
    """Mean ROUGE-L (x100) of the ranker's pick, the search's first title, the agreement's pick, the oracle."""
    starts = np.concatenate([[0], np.cumsum(data["groups"])[:-1]])
    targets = data["targets"]
    agreement = data["features"][:, FEATURES.index("agreement")]
    pick = choose(scores, data["groups"])
    mbr = choose(agreement, data["groups"])
    best = np.asarray([targets[s:s + g].max() for s, g in zip(starts, data["groups"], strict=True)])
    return {"pools": len(starts), "first": 100 * targets[starts], "ranker": 100 * targets[starts + pick],
            "agreement": 100 * targets[starts + mbr], "oracle": 100 * best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-pools", type=Path, nargs="+", required=True)
    parser.add_argument("--eval-pools", type=Path, nargs="*", default=[])
    parser.add_argument("--papers", type=Path, action="append", required=True, help="id, title, abstract rows")
    parser.add_argument("--held-out", type=Path, action="append", default=[])
    parser.add_argument("--out", type=Path, required=True, help="the LightGBM model file")
    parser.add_argument("--trees", type=int, default=300)
    parser.add_argument("--max-train-pools", type=int, help="train on the first N pools only")
    parser.add_argument("--no-embedder", action="store_true", help="without MiniLM's faithfulness (NaN)")
    parser.add_argument("--drop", default="", help="features to leave out (set to NaN), comma-separated")
    args = parser.parse_args()
    import lightgbm

    papers = {}
    for path in args.papers:
        papers.update({row["id"]: row for row in read_rows(path)})
    held_out = {row["id"] for path in args.held_out for row in read_rows(path)}
    train_pools = [row for path in args.train_pools for row in read_rows(path)][:args.max_train_pools]
    leaked = sorted({row["id"] for row in train_pools} & held_out)
    assert not leaked, f"{len(leaked)} held-out papers among the training pools, e.g. {leaked[:3]}"
    print(f"{len(train_pools)} training pools, none of {len(held_out)} held-out papers among them", file=sys.stderr)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    cache_dir = Path("runs/ranker-features")
    cache_dir.mkdir(parents=True, exist_ok=True)

    def cached(path: Path) -> Path:
        key = f"{path.resolve()}:{path.stat().st_size}:{FEATURES}:{args.no_embedder}:{args.max_train_pools}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:12]
        return cache_dir / f"{path.name}.{digest}.npz"

    train = featurise(train_pools, papers, cached(args.train_pools[0]), not args.no_embedder)
    dropped = [FEATURES.index(name) for name in args.drop.split(",") if name]
    train["features"][:, dropped] = np.nan
    began = time.perf_counter()
    labels = np.clip(np.round(train["targets"] * 20), 0, 20).astype(int)  # ROUGE-L in steps of 0.05
    params = {"objective": "lambdarank", "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 50,
              "bagging_fraction": 0.8, "bagging_freq": 1, "feature_fraction": 0.8, "label_gain": list(range(21)),
              "verbose": -1, "seed": 0, "deterministic": True, "num_threads": 2}
    dataset = lightgbm.Dataset(train["features"], labels, group=train["groups"], feature_name=list(FEATURES))
    booster = lightgbm.train(params, dataset, num_boost_round=args.trees)
    print(f"trained on {len(train['groups'])} pools, {len(labels)} candidates in {time.perf_counter() - began:.0f} s",
          file=sys.stderr)
    booster.save_model(str(args.out))
    for path in args.eval_pools:
        pools = read_rows(path)
        assert all(p["id"] in papers for p in pools)
        data = featurise(pools, papers, cached(path), not args.no_embedder)
        data["features"][:, dropped] = np.nan
        scores = booster.predict(data["features"])
        for key in sorted({(m, b) for m, b in zip(data["models"], data["beams"], strict=True)}):
            mask_pools = (data["models"] == key[0]) & (data["beams"] == key[1])
            rows_mask = np.repeat(mask_pools, data["groups"])
            part = {"features": data["features"][rows_mask], "targets": data["targets"][rows_mask],
                    "groups": data["groups"][mask_pools]}
            result = evaluate(part, scores[rows_mask])
            print(key, {k: round(float(np.mean(v)), 2) if k != "pools" else v for k, v in result.items()})


if __name__ == "__main__":
    main()
