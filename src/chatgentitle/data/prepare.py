"""arXiv metadata -> clean, deduplicated, leakage-free train/val/test data.

Run as: chatgentitle prepare arxiv-metadata-oai-snapshot.json --out data/ --preset cs

One streaming pass: read -> clean -> filter -> deduplicate -> (sample) -> split -> write.
Memory holds only hashes of what was kept (for deduplication) and, when sizes are given as
counts or --sample is used, the selected papers themselves.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from chatgentitle.data.prompt import SEED_INSTRUCTION
from chatgentitle.data.records import BadLines, Paper, atomic_path, category_matches, write_atomic
from chatgentitle.errors import OptionError

SPLITS = ("train", "val", "test")
RESERVOIR = 20_000  # papers whose lengths give the percentiles in stats.json

# The seed project's subsets (ChatGenTitle's LLaMa-Lora-7B-3 / -cs adapters), by name.
PRESETS: dict[str, dict] = {
    "all-50k": {"sample": 50_000},
    "all-100k": {"sample": 100_000},
    "cs": {"categories": ("cs",)},
}

WITHDRAWN = re.compile(
    r"\b(this (paper|article|manuscript|submission|work) (has been|is|was) withdrawn"
    r"|withdrawn by the authors?|paper (has been )?withdrawn)\b",
    re.IGNORECASE,
)


@dataclass
class PrepareConfig:
    """What `prepare` keeps and how it splits it."""

    categories: tuple[str, ...] = ()
    """Categories (cs.AI) or whole archives (cs) to keep, comma-separated; empty keeps everything."""
    any_category: bool = False
    """Match any listed category, not only the primary (first) one."""
    since: str | None = None
    """Keep papers whose update_date is on or after this YYYY-MM-DD."""
    until: str | None = None
    """Keep papers whose update_date is on or before this YYYY-MM-DD."""
    sample: int | None = None
    """Keep this many papers, chosen deterministically by a hash of (seed, id)."""
    seed: int = 42
    """Seed for --sample and for the id-hash split."""
    val_size: float = 0.01
    """Validation share: a fraction (< 1) or a number of papers (>= 1)."""
    test_size: float = 0.01
    """Test share: a fraction (< 1) or a number of papers (>= 1). Ignored with test_since."""
    test_since: str | None = None
    """Temporal split: every paper updated on or after this date goes to test."""
    min_abstract_chars: int = 100
    """Drop abstracts shorter than this (characters, after whitespace is collapsed)."""
    max_abstract_chars: int = 5000
    """Drop abstracts longer than this."""
    min_title_chars: int = 10
    """Drop titles shorter than this."""
    max_title_chars: int = 300
    """Drop titles longer than this."""
    formats: tuple[str, ...] = ("jsonl",)
    """Output formats: jsonl (papers) and/or alpaca (instruction/input/output JSON)."""

    def __post_init__(self):
        for size in (self.val_size, self.test_size):
            if size < 0 or (size >= 1 and size != int(size)):
                raise OptionError(f"split sizes are fractions below 1 or whole counts, got {size}")
        unknown = set(self.formats) - {"jsonl", "alpaca"}
        if unknown:
            raise OptionError(f"unknown output format(s): {', '.join(sorted(unknown))}")


def _unit_hash(*parts: object) -> float:
    """A stable number in [0, 1) for the given parts (same on every machine and run)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


# Content identity ignores case, whitespace and punctuation, except $ and \\ which carry LaTeX.
# Deleting them with str.translate is one pass in C (no split/join on the hot path).
_NOT_CONTENT = str.maketrans(dict.fromkeys("!\"#%&'()*+,-./:;<=>?@[]^_`{|}~ \t\n\r\f\v"))


def _content_key(paper: Paper) -> int:
    normal = f"{paper.title}\x1f{paper.abstract}".lower().translate(_NOT_CONTENT)
    return int.from_bytes(hashlib.blake2b(normal.encode(), digest_size=8).digest(), "big")


def drop_reason(paper: Paper, cfg: PrepareConfig) -> str | None:
    """Why this paper is not kept, or None to keep it (deduplication aside)."""
    head = paper.abstract[:300]
    if ("withdrawn" in head.lower() and WITHDRAWN.search(head)) or paper.title.lower().startswith("withdrawn"):
        return "withdrawn"
    if not cfg.min_abstract_chars <= len(paper.abstract) <= cfg.max_abstract_chars:
        return "abstract_length"
    if not cfg.min_title_chars <= len(paper.title) <= cfg.max_title_chars:
        return "title_length"
    if cfg.categories and not category_matches(
            paper.categories if cfg.any_category else [paper.primary_category], cfg.categories):
        return "category"
    if cfg.since and paper.update_date < cfg.since:
        return "date"
    if cfg.until and paper.update_date > cfg.until:
        return "date"
    return None


class Stats:
    """Counts for stats.json: read, kept, dropped per reason, categories, length percentiles."""

    def __init__(self):
        self.read = 0
        self.kept = 0
        self.dropped: Counter[str] = Counter()
        self.categories: Counter[str] = Counter()
        self.split_counts: Counter[str] = Counter()
        self.title_chars: list[int] = []
        self.abstract_chars: list[int] = []
        self.rng = random.Random(0)

    def keep(self, split: str, paper: Paper) -> None:
        self.split_counts[split] += 1
        self.categories[paper.primary_category] += 1
        # a fixed-size reservoir of lengths (Algorithm R, seeded) keeps memory flat on any input
        self.kept = kept = self.kept + 1
        slot = kept - 1 if kept <= RESERVOIR else self.rng.randrange(kept)
        if slot < RESERVOIR:
            if kept <= RESERVOIR:
                self.title_chars.append(len(paper.title))
                self.abstract_chars.append(len(paper.abstract))
            else:
                self.title_chars[slot] = len(paper.title)
                self.abstract_chars[slot] = len(paper.abstract)

    def to_dict(self, bad: BadLines, cfg: PrepareConfig) -> dict:
        return {
            "records_read": self.read,
            "kept": self.kept,
            "splits": dict(self.split_counts),
            "dropped": dict(self.dropped),
            "bad_lines": bad.count,
            "bad_line_examples": bad.messages,
            "categories": dict(self.categories.most_common()),
            "title_chars": _percentiles(self.title_chars),
            "abstract_chars": _percentiles(self.abstract_chars),
            "config": asdict(cfg),
        }


def _percentiles(values: list[int]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    return {f"p{p}": ordered[min(len(ordered) - 1, len(ordered) * p // 100)] for p in (5, 25, 50, 75, 95)}


def select(papers: Iterable[Paper], cfg: PrepareConfig, stats: Stats) -> Iterator[Paper]:
    """Filter and deduplicate (first occurrence wins, by id and by normalised title+abstract)."""
    seen_ids: set[str] = set()
    seen_content: set[int] = set()
    for paper in papers:
        stats.read += 1
        reason = drop_reason(paper, cfg)
        if reason is None:
            if paper.id in seen_ids:
                reason = "duplicate_id"
            else:
                key = _content_key(paper)
                reason = "duplicate_content" if key in seen_content else None
                seen_content.add(key)
                seen_ids.add(paper.id)
        if reason:
            stats.dropped[reason] += 1
        else:
            yield paper


def bottom_k(papers: Iterable[Paper], k: int, salt: object) -> list[Paper]:
    """The k papers with the smallest hash of (salt, id): a deterministic sample in O(k) memory."""
    heap: list[tuple[float, str, Paper]] = []  # max-heap via negated hash
    for paper in papers:
        item = (-_unit_hash(salt, paper.id), paper.id, paper)
        if len(heap) < k:
            heapq.heappush(heap, item)
        elif item > heap[0]:
            heapq.heapreplace(heap, item)
    return [paper for _, _, paper in sorted(heap, reverse=True)]


class SplitWriter:
    """Assigns papers to train/val/test without leakage and streams them to files."""

    def __init__(self, out_dir: Path, cfg: PrepareConfig, stats: Stats):
        self.cfg, self.stats = cfg, stats
        self.out_dir = out_dir
        self._files = {}
        self._contexts = []
        self._alpaca_first = dict.fromkeys(SPLITS, True)
        # Counted val/test sizes keep the smallest-hash papers in a heap until the end.
        val_count = int(cfg.val_size) if cfg.val_size >= 1 else 0
        test_count = int(cfg.test_size) if cfg.test_size >= 1 and not cfg.test_since else 0
        self.held_counts = (test_count, val_count)
        self.held: list[tuple[float, str, Paper]] = []

    def __enter__(self):
        for split in SPLITS:
            for fmt in self.cfg.formats:
                name = f"{split}.jsonl" if fmt == "jsonl" else f"{split}.alpaca.json"
                ctx = atomic_path(self.out_dir / name)
                tmp = ctx.__enter__()
                self._contexts.append(ctx)
                handle = open(tmp, "wb")
                if fmt == "alpaca":
                    handle.write(b"[\n")
                self._files[(split, fmt)] = handle
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self._flush_held()
        for (_, fmt), handle in self._files.items():
            if fmt == "alpaca" and exc_type is None:
                handle.write(b"\n]\n")
            handle.close()
        # Files are renamed into place only when everything succeeded: no half outputs.
        for ctx in reversed(self._contexts):
            ctx.__exit__(exc_type, exc, tb)
        return False

    def add(self, paper: Paper) -> None:
        cfg = self.cfg
        if cfg.test_since and paper.update_date >= cfg.test_since:
            return self._write("test", paper)
        u = _unit_hash(cfg.seed, "split", paper.id)
        test_share = cfg.test_size if cfg.test_size < 1 and not cfg.test_since else 0.0
        val_share = cfg.val_size if cfg.val_size < 1 else 0.0
        if u < test_share:
            return self._write("test", paper)
        if u < test_share + val_share:
            return self._write("val", paper)
        if sum(self.held_counts):
            return self._hold(u, paper)
        return self._write("train", paper)

    def _hold(self, u: float, paper: Paper) -> None:
        item = (-u, paper.id, paper)
        if len(self.held) < sum(self.held_counts):
            heapq.heappush(self.held, item)
        elif item > self.held[0]:
            _, _, evicted = heapq.heapreplace(self.held, item)
            self._write("train", evicted)
        else:
            self._write("train", paper)

    def _flush_held(self) -> None:
        test_count, val_count = self.held_counts
        ordered = [paper for _, _, paper in sorted(self.held, reverse=True)]
        for i, paper in enumerate(ordered):
            self._write("test" if i < test_count else "val", paper)
        self.held = []

    def _write(self, split: str, paper: Paper) -> None:
        self.stats.keep(split, paper)
        for fmt in self.cfg.formats:
            handle = self._files[(split, fmt)]
            if fmt == "jsonl":
                handle.write(paper.to_json())
                handle.write(b"\n")
            else:
                if not self._alpaca_first[split]:
                    handle.write(b",\n")
                self._alpaca_first[split] = False
                row = {"instruction": SEED_INSTRUCTION, "input": paper.abstract, "output": paper.title}
                handle.write(orjson.dumps(row))


def prepare(papers: Iterable[Paper], out_dir: Path, cfg: PrepareConfig, bad: BadLines) -> dict:
    """Run the pipeline over `papers`, write the splits and stats.json into out_dir; return stats."""
    out_dir = Path(out_dir)
    stats = Stats()
    kept = select(papers, cfg, stats)
    if cfg.sample:
        kept = bottom_k(kept, cfg.sample, salt=(cfg.seed, "sample"))
    with SplitWriter(out_dir, cfg, stats) as writer:
        for paper in kept:
            writer.add(paper)
    if cfg.sample:
        stats.dropped["not_sampled"] = stats.read - sum(stats.dropped.values()) - sum(
            stats.split_counts.values()
        )
    result = stats.to_dict(bad, cfg)
    write_atomic(out_dir / "stats.json", lambda f: f.write(orjson.dumps(result, option=orjson.OPT_INDENT_2)))
    return result


def read_inputs(inputs: list[Path], db: Path | None, bad: BadLines) -> Iterator[Paper]:
    """Papers from snapshot/JSONL files (bad lines counted in `bad`), then from a crawl store."""
    from chatgentitle.data.records import read_papers

    yield from read_papers(inputs, bad)
    if db:
        from chatgentitle.data.store import PaperStore

        with PaperStore(db) as store:
            yield from store.papers()


def summary(stats: dict, bad: BadLines, out_dir: Path) -> str:
    """What a prepare run did, in one line."""
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(stats["dropped"].items())) or "none"
    splits = ", ".join(f"{k} {stats['splits'].get(k, 0)}" for k in SPLITS)
    return (f"read {stats['records_read']}, kept {stats['kept']} ({splits}); dropped: {dropped}; "
            f"bad lines {bad.count} -> {out_dir}")
