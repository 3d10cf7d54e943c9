"""Papers as `prepare` reads and writes them, their cleanup, streaming JSON-lines I/O, atomic writes.

Reads the Kaggle arXiv snapshot (`arxiv-metadata-oai-snapshot.json`, plain or .gz) and the
project's own JSONL (a subset of the same schema) one line at a time, so memory stays flat
on the 4.5 GB snapshot. Bad lines are reported with file and line number and skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import msgspec
import orjson
from isal import igzip, isal_zlib

# arXiv ids carry a version suffix in some sources ("2104.12255v1"); versions are one paper.
_VERSION = re.compile(r"v\d+$")


@dataclass(slots=True)
class Paper:
    """One arXiv paper, reduced to what title generation needs."""

    id: str
    title: str
    abstract: str
    categories: str = ""  # space-separated, primary first, as in the snapshot ("cs.CL cs.LG")
    update_date: str = ""  # YYYY-MM-DD

    @property
    def primary_category(self) -> str:
        return self.categories.split(" ", 1)[0] if self.categories else ""

    def to_json(self) -> bytes:
        return orjson.dumps({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


@dataclass(slots=True)
class ArxivRecord(Paper):
    """A paper as arXiv's OAI-PMH, API and RSS answers give it: what the crawl store keeps."""

    version: int | None = None  # the newest version's number, when the source says
    submitter: str | None = None
    authors: str = ""
    comments: str | None = None
    journal_ref: str | None = None
    doi: str | None = None
    report_no: str | None = None
    license: str | None = None
    versions: list = field(default_factory=list)  # arXivRaw: [{"version": "v1", "created": date}, ...]
    datestamp: str | None = None  # OAI-PMH: when the record last changed there
    source: str = ""  # oai, api, rss:new, rss:replace, ...


def clean_text(text: str) -> str:
    """Collapse the snapshot's line wrapping and indentation; LaTeX stays as written."""
    return " ".join(text.split())


def base_id(arxiv_id: str) -> str:
    """The id without its version: all versions of a paper share it."""
    return _VERSION.sub("", arxiv_id.strip())


class BadRecord(ValueError):
    """A line that is not a usable paper; the message says which field is wrong."""


class _Record(msgspec.Struct):
    """The snapshot fields title generation needs; the decoder skips all others (authors_parsed,
    versions, ...) without building them, which is most of the speed of `prepare`."""

    id: str | None = None
    title: str | None = None
    abstract: str | None = None
    categories: str | list[str] | None = None  # a list is tolerated (some exports)
    update_date: str | None = None


_decode_record = msgspec.json.Decoder(_Record).decode
_WRONG_TYPE = re.compile(r"Expected `[^`]+`, got `(\w+)`(?: - at `\$\.(\w+)`)?")


def paper_from_json(raw: bytes) -> Paper:
    """Decode one JSON line into a Paper; BadRecord says what is wrong with the line."""
    try:
        record = _decode_record(raw)
    except msgspec.ValidationError as err:
        wrong = _WRONG_TYPE.match(str(err))
        if wrong and wrong.group(2):
            raise BadRecord(f"field {wrong.group(2)!r} should be a string, got {wrong.group(1)}") from None
        if wrong:
            raise BadRecord(f"expected a JSON object, got {wrong.group(1)}") from None
        raise BadRecord(str(err)) from None
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec raises either for bad UTF-8
        try:
            raw.decode()
        except UnicodeDecodeError:
            raise BadRecord("undecodable bytes (not UTF-8)") from None
        raise BadRecord("invalid JSON") from None
    for name in ("id", "title", "abstract"):
        if getattr(record, name) is None:
            raise BadRecord(f"missing field {name!r}")
    categories = record.categories or ""
    if isinstance(categories, list):
        categories = " ".join(categories)
    return Paper(
        id=base_id(record.id),
        title=clean_text(record.title),
        abstract=clean_text(record.abstract),
        categories=clean_text(categories),
        update_date=(record.update_date or "").strip()[:10],
    )


class BadLines:
    """Collects bad input lines: keeps the first `keep` messages and counts the rest."""

    def __init__(self, keep: int = 20):
        self.keep = keep
        self.count = 0
        self.messages: list[str] = []

    def add(self, where: str, why: str) -> None:
        self.count += 1
        if len(self.messages) < self.keep:
            self.messages.append(f"{where}: {why}")

    def summary(self) -> list[str]:
        lines = list(self.messages)
        if self.count > len(self.messages):
            lines.append(f"... and {self.count - len(self.messages)} more bad lines")
        return lines


def open_binary(path: Path):
    """Open a plain or gzip file for reading bytes (gzip is detected by its magic number)."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    # ISA-L's gzip reader: the same format, about 3x faster to decompress than the stdlib's
    return igzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def read_papers(paths: Iterable[Path], bad: BadLines | None = None) -> Iterator[Paper]:
    """Stream papers from snapshot or JSONL files; bad lines go to `bad` and are skipped.

    Raises FileNotFoundError / PermissionError for an input that cannot be opened at all;
    a truncated gzip stops that file with a bad-line report, keeping what was read.
    """
    bad = bad if bad is not None else BadLines()
    for path in paths:
        path = Path(path)
        with open_binary(path) as stream:
            line_no = 0
            try:
                for line_no, raw in enumerate(stream, start=1):
                    if not raw.strip():
                        continue
                    try:
                        yield paper_from_json(raw)
                    except BadRecord as err:
                        bad.add(f"{path}:{line_no}", str(err))
            except (EOFError, gzip.BadGzipFile, isal_zlib.error) as err:
                bad.add(f"{path}:{line_no + 1}", f"truncated or corrupt gzip ({err})")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # created 0666 less the umask, as open() makes files (mkstemp's 0600 would need the umask read back,
    # and reading it means setting it: a race with threads creating files)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty folder beside `path` (`<name>.partial`); it becomes `path` only if the block succeeds."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def category_matches(categories, wanted) -> bool:
    """True when any of `categories` (a list, or a space-separated string) is wanted: a category
    like cs.AI, or its whole archive like cs. Nothing wanted matches everything."""
    if not wanted:
        return True
    listed = categories.split() if isinstance(categories, str) else categories
    return any(c in wanted or c.split(".", 1)[0] in wanted for c in listed)


def write_atomic(path: Path, writer: Callable[[object], None], mode: str = "wb") -> None:
    """Call writer(file) on a temporary file, then move it over `path` in one step."""
    with atomic_path(Path(path)) as tmp, open(tmp, mode) as handle:
        writer(handle)


def write_jsonl(path: Path, rows: Iterable[dict | Paper]) -> int:
    """Write rows (dicts or Papers) as JSON lines, atomically; returns the number written."""
    count = 0

    def write(handle) -> None:
        nonlocal count
        for row in rows:
            handle.write(row.to_json() if isinstance(row, Paper) else orjson.dumps(row))
            handle.write(b"\n")
            count += 1

    write_atomic(path, write)
    return count


def sample_papers() -> list[dict]:
    """The packaged sample papers (id, categories, title, abstract): held-out April 2026 arXiv papers."""
    return [json.loads(line) for line in
            (resources.files("chatgentitle") / "samples" / "abstracts.jsonl").read_text().splitlines()]
