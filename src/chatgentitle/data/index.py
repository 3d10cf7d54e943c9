"""The paper index: published papers searchable by what they are about ("papers like yours").

    with PaperIndex(path) as index:                 # default path: beside the paper store
        index.add(read_papers(["snapshot.jsonl.gz"]))   # incremental: ids already there are skipped
        index.nearest(abstract, k=5)                # -> [Neighbour(id, title, similarity, ...)], closest first

One SQLite file: the papers (id, title, categories, date, abstract) and an FTS5 index over title and
abstract (words as written, lower case). A query is the abstract's RARE_TERMS rarest words (by document
frequency), matched with BM25; the candidates are then scored by the cosine of their TF-IDF vectors with
the query's, the `similarity` every answer shows (0: nothing in common, 1: the same words in the same
proportions). Lexical on purpose: it indexes 300,000 papers in minutes on 2 cores, where a sentence
encoder embeds ~20 abstracts/s (docs/benchmarks.md, the paper index). Papers are added in transactions
of BATCH, so a killed build keeps every batch it committed and a rerun adds the rest.
"""

from __future__ import annotations

import math
import re
import sqlite3
import warnings
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from chatgentitle.data.prompt import normalise_title
from chatgentitle.data.records import Paper
from chatgentitle.data.store import default_db_path
from chatgentitle.errors import ChatGenTitleError

KIND = "fts5-bm25-tfidf/1"  # what an index file holds; another kind is refused, not misread
BATCH = 2000  # papers per transaction
RARE_TERMS = 12  # query words: the abstract's rarest (common words cost the most and say the least)
CANDIDATES = 50  # BM25's best, re-scored by TF-IDF cosine
DATED_CANDIDATES = 4  # with a date limit, BM25 is asked for 4x as many (many of them are later papers)
ANSWERS = 64  # recent answers kept: a model that reads neighbours asks again for its usage count and verdict
MAX_RELATED = 20
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS papers (rowid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, title TEXT NOT NULL,
                                   categories TEXT, update_date TEXT, abstract TEXT NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS papers_fts USING fts5(title, abstract, content='papers', content_rowid='rowid',
                                                         tokenize='unicode61');
CREATE VIRTUAL TABLE IF NOT EXISTS terms USING fts5vocab(papers_fts, 'row');
CREATE TABLE IF NOT EXISTS df (term TEXT PRIMARY KEY, docs INTEGER NOT NULL) WITHOUT ROWID;
"""
_WORD = re.compile(r"[^\W_]+")
_STOP = frozenset("""a an and are as at be by can for from has have in into is it its of on or our that the their
this to we which with these those was were been than then also such via using based show shows paper propose
proposed results method methods approach new two one""".split())


class PaperIndexError(ChatGenTitleError, ValueError):
    """An index that cannot be used as asked (missing, of another kind, empty); the message says what to run."""


@dataclass
class Neighbour:
    """A published paper close to a query: what every answer with related papers lists."""

    id: str
    title: str
    similarity: float
    """TF-IDF cosine with the query (0..1)."""
    categories: str = ""
    update_date: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class KnownNeighbours:
    """Related papers known in advance for each abstract (training rows', a benchmark's look-ups limited by
    date), asked as a PaperIndex is: what a generator's guide needs."""

    def __init__(self, known: dict[str, Sequence[Neighbour]]):
        self.known = known

    def nearest(self, text: str, k: int = 5, **_) -> list[Neighbour]:
        return list(self.known.get(text, ()))[:k]


def default_index_path() -> Path:
    """Beside the paper store (`crawl`'s), in the user's data dir."""
    return default_db_path().with_name("papers-index.db")


class PaperIndex:
    """An index file, opened for reading (`create=False`: it must exist and be of this KIND) or building."""

    def __init__(self, path: str | Path | None = None, create: bool = False):
        self.path = Path(path) if path else default_index_path()
        if not create and not self.path.is_file():
            raise PaperIndexError(f"no paper index at {self.path}: build one with `chatgentitle index PAPERS...` "
                              f"(or --db STORE), or give --index PATH")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False)  # serve's worker thread asks it
        try:
            self.db.executescript(SCHEMA)
            kind = self.db.execute("SELECT value FROM meta WHERE key = 'kind'").fetchone()
        except sqlite3.DatabaseError as err:
            raise PaperIndexError(f"{self.path} is not a paper index ({err}): build one with `chatgentitle index`"
                              ) from None
        if kind is None:
            self.db.execute("INSERT INTO meta VALUES ('kind', ?)", (KIND,))
            self.db.commit()
        elif kind[0] != KIND:
            raise PaperIndexError(f"{self.path} holds a {kind[0]} index, not {KIND}: build it again with "
                              "`chatgentitle index --out NEW_PATH`")
        self._count: int | None = None
        self._answers = lru_cache(maxsize=ANSWERS)(self._nearest)  # emptied whenever papers are added
        counted = self.db.execute("SELECT value FROM meta WHERE key = 'df_papers'").fetchone()
        if counted is None or int(counted[0]) != len(self):  # a build cut short after its last refresh
            self._count_documents()

    def __enter__(self) -> PaperIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM papers").fetchone()[0]

    def add(self, papers: Iterable[Paper]) -> Iterator[int]:
        """Add the papers whose ids are not in the index yet, BATCH per transaction; yields how many
        papers were read after each committed batch (for a progress bar)."""
        batch, read = [], 0
        for paper in papers:
            batch.append(paper)
            read += 1
            if len(batch) == BATCH:
                self._insert(batch)
                batch = []
                yield read
        if batch:
            self._insert(batch)
            yield read
        self._count_documents()

    def _count_documents(self) -> None:
        """Each word's number of papers, copied from FTS5's vocabulary into a plain table (a B-tree lookup
        per word at query time instead of FTS5's vocabulary scan; a few seconds for 300,000 papers)."""
        with self.db:
            self.db.execute("DELETE FROM df")
            self.db.execute("INSERT INTO df SELECT term, doc FROM terms")
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('df_papers', ?)", (str(len(self)),))

    def _insert(self, papers: list[Paper]) -> None:
        with self.db:  # one transaction: all of the batch or none of it
            for paper in papers:
                inserted = self.db.execute(
                    "INSERT OR IGNORE INTO papers (id, title, categories, update_date, abstract) VALUES (?,?,?,?,?)",
                    (paper.id, paper.title, paper.categories, paper.update_date, paper.abstract))
                if inserted.rowcount:
                    self.db.execute("INSERT INTO papers_fts (rowid, title, abstract) VALUES (?,?,?)",
                                    (inserted.lastrowid, paper.title, paper.abstract))
        self._count = None
        self._answers.cache_clear()

    def nearest(self, text: str, k: int = 5, exclude: Collection[str] = (), title: str | None = None,
                before: str | None = None) -> list[Neighbour]:
        """The k indexed papers closest to `text` (an abstract), closest first; never the paper itself: one
        whose id is in `exclude`, whose abstract is `text`, or whose title is `title` up to case, articles
        and punctuation. `before`: only papers updated on or before this date (YYYY-MM-DD), as a paper's
        own index would have held them."""
        if not 1 <= k <= MAX_RELATED:
            raise PaperIndexError(f"related papers: 1 to {MAX_RELATED}, not {k}")
        warn_if_not_english(text)
        return list(self._answers(text, k, tuple(exclude), title, before))

    def _nearest(self, text: str, k: int, exclude: tuple[str, ...], title: str | None, before: str | None
                 ) -> list[Neighbour]:
        words = Counter(self._words(text))
        docs = self._document_counts(set(words))
        query = sorted(docs, key=lambda term: (docs[term], term))[:RARE_TERMS]  # the rarest words
        if not query:  # no indexed word in common: another language, or an empty index
            return []
        wanted = CANDIDATES * (DATED_CANDIDATES if before else 1) + len(exclude) + 1
        best = [r for (r,) in self.db.execute(  # BM25 alone first: joining before the LIMIT costs ~10x
            "SELECT rowid FROM papers_fts WHERE papers_fts MATCH ? ORDER BY rank LIMIT ?",
            (" OR ".join(f'"{term}"' for term in query), wanted))]
        rows = self.db.execute("SELECT id, title, categories, update_date, abstract FROM papers WHERE rowid IN "
                               f"({','.join('?' * len(best))})", best).fetchall()
        same, skip = " ".join(text.split()), normalise_title(title) if title else None
        rows = [row for row in rows if row[0] not in exclude and " ".join(row[4].split()) != same
                and (skip is None or normalise_title(row[1]) != skip) and (before is None or (row[3] or "") <= before)]
        theirs = [Counter(self._words(f"{t} {a}")) for _, t, _, _, a in rows]
        docs |= self._document_counts(set().union(*theirs) - docs.keys())  # one look-up for all candidates
        mine = self._weights(words, docs)
        found = [Neighbour(i, t, round(_cosine(mine, self._weights(counts, docs)), 4), c or "", d or "")
                 for (i, t, c, d, _), counts in zip(rows, theirs, strict=True)]
        return sorted(found, key=lambda n: -n.similarity)[:k]

    # ------------------------------------------------------------------ TF-IDF
    def _words(self, text: str) -> list[str]:
        """The words FTS5 indexes (unicode61: lower case, no accents), stopwords out."""
        return [w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1]

    def _document_counts(self, words: set[str]) -> dict[str, int]:
        """Papers holding each word, for the words the index knows."""
        if not words:
            return {}
        marks = ",".join("?" * len(words))
        return dict(self.db.execute(f"SELECT term, docs FROM df WHERE term IN ({marks})", tuple(words)))

    def _papers(self) -> int:
        if self._count is None:
            self._count = max(1, len(self))
        return self._count

    def _weights(self, counts: Counter, docs: dict[str, int]) -> dict[str, float]:
        """TF-IDF weights of a text's word counts (words the index does not know have none)."""
        n = self._papers()
        return {term: (1 + math.log(tf)) * math.log(1 + n / docs[term]) for term, tf in counts.items() if term in docs}


ENGLISH_SHARE = 0.08  # of an abstract's words in _STOP: English ones 16-50% (median 34%), French or German ~0%


def warn_if_not_english(abstract: str) -> None:
    """Warn (once per distinct text) when an abstract of 20 words or more has few English function words:
    the index and the models know English papers, so its related papers and titles would be worse."""
    found = _WORD.findall(abstract.lower())
    if len(found) >= 20 and sum(w in _STOP for w in found) < ENGLISH_SHARE * len(found):
        warnings.warn(f"the abstract does not look English ({abstract[:40]!r}...): related papers and titles "
                      "come from English papers and may be poor; give the English abstract", stacklevel=3)


def _cosine(a: dict[str, float], b: dict[str, float]) -> float:
    dot = sum(weight * b[term] for term, weight in a.items() if term in b)
    norm = math.sqrt(sum(w * w for w in a.values()) * sum(w * w for w in b.values()))
    return dot / norm if norm else 0.0


def build(index: PaperIndex, inputs: list[Path], db: Path | None = None, progress: bool = True) -> str:
    """Add the papers of `inputs` (snapshot lines, plain or gz, our JSONL) and of a crawl store to the
    index, skipping ids it has; returns what it did, in one line. Progress with an ETA: the papers are
    counted first (one fast pass), then added BATCH per transaction."""
    from chatgentitle.data.prepare import read_inputs
    from chatgentitle.data.records import BadLines
    from chatgentitle.progress import Progress

    before, bad = len(index), BadLines()
    total = sum(1 for _ in read_inputs(inputs, db, BadLines()))
    if not total:
        raise PaperIndexError("no papers to index: give snapshot or JSONL files, or a --db store that has papers")
    done = 0
    with Progress(total, "papers", index.path.name, show=progress) as shown:
        for read in index.add(read_inputs(inputs, db, bad)):
            shown.update(read - done)
            done = read
    bad_lines = f"; {bad.count} bad lines skipped" if bad.count else ""
    return f"{len(index) - before} papers added ({total} read{bad_lines}); {len(index)} in {index.path}"
