"""The paper store: an embedded SQLite database of harvested papers and harvest state.

Papers are upserted by arXiv id (a newer version wins), titles are searchable with FTS5, and
the harvest state (resumption token, last datestamp) is committed in the same transaction as
the page of papers it belongs to: a harvest killed at any moment resumes with nothing lost
and nothing duplicated.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import platformdirs

from chatgentitle.data.records import ArxivRecord, Paper, clean_text

COLUMNS = ("id", "version", "submitter", "authors", "title", "comments", "journal_ref", "doi",
           "report_no", "categories", "license", "abstract", "versions", "update_date", "datestamp",
           "source")

SCHEMA = """
CREATE TABLE IF NOT EXISTS papers (
    id TEXT PRIMARY KEY,          -- arXiv id without version
    version INTEGER NOT NULL DEFAULT 1,
    submitter TEXT, authors TEXT, title TEXT NOT NULL, comments TEXT, journal_ref TEXT,
    doi TEXT, report_no TEXT, categories TEXT, license TEXT, abstract TEXT NOT NULL,
    versions TEXT,                -- JSON list as in the snapshot
    update_date TEXT,             -- YYYY-MM-DD
    datestamp TEXT,               -- OAI-PMH datestamp of the record
    source TEXT                   -- oai, api or rss
);
CREATE VIRTUAL TABLE IF NOT EXISTS papers_fts USING fts5(title, content='papers', content_rowid='rowid');
CREATE TRIGGER IF NOT EXISTS papers_ai AFTER INSERT ON papers BEGIN
    INSERT INTO papers_fts(rowid, title) VALUES (new.rowid, new.title);
END;
CREATE TRIGGER IF NOT EXISTS papers_ad AFTER DELETE ON papers BEGIN
    INSERT INTO papers_fts(papers_fts, rowid, title) VALUES ('delete', old.rowid, old.title);
END;
CREATE TRIGGER IF NOT EXISTS papers_au AFTER UPDATE ON papers BEGIN
    INSERT INTO papers_fts(papers_fts, rowid, title) VALUES ('delete', old.rowid, old.title);
    INSERT INTO papers_fts(rowid, title) VALUES (new.rowid, new.title);
END;
CREATE TABLE IF NOT EXISTS harvest_state (
    key TEXT PRIMARY KEY,         -- endpoint + set + metadata prefix
    last_datestamp TEXT,          -- newest datestamp fully stored
    window_from TEXT,             -- start of the window being harvested
    window_until TEXT,            -- its end (the first page's responseDate unless --until)
    resumption_token TEXT,        -- where to continue inside that window
    pages INTEGER DEFAULT 0,
    records INTEGER DEFAULT 0,
    updated_at TEXT DEFAULT CURRENT_TIMESTAMP,
    last_run TEXT                 -- how the last run left this window: complete, stop requested, stopped: why
);
"""

UPSERT = f"""
INSERT INTO papers ({", ".join(COLUMNS)}) VALUES ({", ".join("?" * len(COLUMNS))})
ON CONFLICT(id) DO UPDATE SET {", ".join(f"{c}=excluded.{c}" for c in COLUMNS[1:])}
WHERE excluded.version > papers.version
   OR (excluded.version = papers.version AND COALESCE(excluded.update_date, '') >= COALESCE(papers.update_date, ''))
"""


def default_db_path() -> Path:
    home = os.environ.get("CHATGENTITLE_HOME")
    return Path(home) / "papers.db" if home else Path(platformdirs.user_data_dir("chatgentitle")) / "papers.db"


class PaperStore:
    """SQLite paper store; use as a context manager or call close()."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # explicit transactions
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")  # readers (serve, export) never block the harvester
        self.db.execute("PRAGMA synchronous=FULL")  # a committed page survives power loss / kill -9
        self.db.executescript(SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(harvest_state)")}
        if "last_run" not in columns:  # a store made before the column existed
            self.db.execute("ALTER TABLE harvest_state ADD COLUMN last_run TEXT")

    def __enter__(self) -> PaperStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    # ---------------------------------------------------------------- writing
    def save_page(self, records: Iterable[ArxivRecord], state_key: str | None = None, **state) -> int:
        """Upsert a page of records and (optionally) the harvest state, in one transaction."""
        rows = [_row(r) for r in records]
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(UPSERT, rows)
            if state_key is not None:
                self._set_state(state_key, records=len(rows), pages=state.pop("pages", 1), **state)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return len(rows)

    def _set_state(self, key: str, records: int = 0, pages: int = 0, **state) -> None:
        self.db.execute("INSERT OR IGNORE INTO harvest_state(key) VALUES (?)", (key,))
        sets = "".join(f"{name} = ?, " for name in state)
        self.db.execute(
            f"UPDATE harvest_state SET {sets}pages = pages + ?, records = records + ?, "
            "updated_at = CURRENT_TIMESTAMP WHERE key = ?",
            (*state.values(), pages, records, key),
        )

    def set_state(self, key: str, **state) -> None:
        """Update the harvest state alone (no papers), e.g. after an expired resumption token."""
        self.save_page([], key, pages=0, **state)

    # ---------------------------------------------------------------- reading
    def state(self, key: str) -> dict:
        row = self.db.execute("SELECT * FROM harvest_state WHERE key = ?", (key,)).fetchone()
        return dict(row) if row else {}

    def states(self) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM harvest_state ORDER BY key")]

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM papers").fetchone()[0]

    def category_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for (categories,) in self.db.execute("SELECT categories FROM papers"):
            for category in (categories or "").split():
                counts[category] = counts.get(category, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    def get(self, arxiv_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM papers WHERE id = ?", (arxiv_id,)).fetchone()
        return _snapshot(row) if row else None

    def records(self) -> Iterator[dict]:
        """Every paper in the snapshot schema, by id."""
        for row in self.db.execute("SELECT * FROM papers ORDER BY id"):
            yield _snapshot(row)

    def papers(self) -> Iterator[Paper]:
        for row in self.db.execute("SELECT id, title, abstract, categories, update_date FROM papers"):
            yield Paper(row["id"], row["title"], row["abstract"], row["categories"] or "", row["update_date"] or "")

    def titles(self) -> Iterator[str]:
        for (title,) in self.db.execute("SELECT title FROM papers"):
            yield title

    def status(self, top_categories: int = 30) -> list[str]:
        """What `crawl --status` prints: counts per category, then every harvest window's state."""
        lines = [f"{self.count()} papers in {self.path}"]
        lines += [f"  {category:<20} {count}" for category, count in
                  list(self.category_counts().items())[:top_categories]]
        for state in self.states():
            window = "complete" if not state["resumption_token"] else (
                f"incomplete: window {state['window_from'] or 'start'}..{state['window_until']} continues "
                "from its resumption token")
            lines.append(f"harvest {state['key']}: {window}; last datestamp {state['last_datestamp']}, "
                         f"{state['records']} records in {state['pages']} pages, at {state['updated_at']}; "
                         f"last run: {state['last_run'] or 'unknown'}")
        return lines

    def search(self, query: str, limit: int = 10) -> list[dict]:
        """Full-text search over titles (FTS5 query syntax)."""
        rows = self.db.execute(
            "SELECT papers.* FROM papers_fts JOIN papers ON papers.rowid = papers_fts.rowid "
            "WHERE papers_fts MATCH ? ORDER BY rank LIMIT ?", (query, limit))
        return [_snapshot(r) for r in rows]


def _row(record: ArxivRecord) -> tuple:
    versions = record.versions or []
    return (
        record.id, int(record.version or len(versions) or 1), record.submitter, clean_text(record.authors or ""),
        clean_text(record.title), record.comments, record.journal_ref, record.doi, record.report_no,
        clean_text(record.categories or ""), record.license, clean_text(record.abstract), json.dumps(versions),
        record.update_date or None, record.datestamp, record.source or None,
    )


def _snapshot(row: sqlite3.Row) -> dict:
    """A stored row in the Kaggle snapshot schema (what `prepare` reads)."""
    data = dict(row)
    for ours, theirs in (("journal_ref", "journal-ref"), ("report_no", "report-no")):
        data[theirs] = data.pop(ours)
    data["versions"] = json.loads(data["versions"] or "[]")
    return data
