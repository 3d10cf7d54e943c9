"""arXiv's answers read into papers: OAI-PMH pages (arXiv and arXivRaw metadata), API (Atom) feeds
and RSS listings each become `ArxivRecord`s, the typed paper the store keeps.

Parsing only: no HTTP here (harvest.py fetches), so tests replay recorded answers straight into it.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass

from lxml import etree

from chatgentitle.crawl.http import Retryable
from chatgentitle.data.records import ArxivRecord, base_id, clean_text
from chatgentitle.errors import ChatGenTitleError


class CrawlError(ChatGenTitleError, RuntimeError):
    """A request that failed for good, or a response that says the request was wrong."""


class OAIError(CrawlError):
    def __init__(self, code: str, message: str):
        super().__init__(f"OAI-PMH error {code}: {message}")
        self.code = code


# --------------------------------------------------------------------------- XML helpers
def _local(element) -> str:
    return etree.QName(element).localname


def _children(element, name: str) -> list:
    return [c for c in element if isinstance(c.tag, str) and _local(c) == name]


def _text(element, name: str) -> str | None:
    found = _children(element, name)
    if not found:
        return None
    # itertext joins nested markup; clean_text puts single spaces where the XML had line breaks
    return clean_text(" ".join(found[0].itertext())) or None


# --------------------------------------------------------------------------- OAI-PMH
@dataclass
class Page:
    records: list[ArxivRecord]
    resumption_token: str | None
    response_date: str | None
    complete_list_size: int | None = None


OAI_NS = "http://www.openarchives.org/OAI/2.0/"


def check_list_answer(root, continuation: bool) -> None:
    """Raise Retryable unless `root` is a complete OAI-PMH ListRecords answer (or an OAI error).

    Gateways answer 200 with HTML maintenance pages, empty bodies or envelopes without a list; a
    list can also end early. Taking any of these for the end of the list would mark the window
    complete and skip its remaining papers for good, so they are retried like a 5xx. The list
    ends only with an empty resumptionToken (or, for a list complete in one answer, none at all).
    """
    if etree.QName(root).namespace != OAI_NS or _local(root) != "OAI-PMH":
        raise Retryable(f"not an OAI-PMH answer (root element <{_local(root)}>)")
    if _children(root, "error"):
        return
    lists = _children(root, "ListRecords")
    if not lists:
        raise Retryable("an OAI-PMH answer with neither ListRecords nor error")
    records = len(_children(lists[0], "record"))
    tokens = _children(lists[0], "resumptionToken")
    if tokens and (tokens[0].text or "").strip():
        return  # more pages follow
    if not tokens and (continuation or not records):
        raise Retryable("ListRecords ended without a resumptionToken" + (" and without records" if not records
                                                                           else " on a continuation page"))
    if tokens:
        size, cursor = tokens[0].get("completeListSize", ""), tokens[0].get("cursor", "")
        if size.isdigit() and cursor.isdigit() and int(cursor) + records < int(size):
            raise Retryable(f"the list ended after {int(cursor) + records} of its {size} records "
                            "(completeListSize): cut short")


def parse_oai_page(root) -> Page:
    """Records of a ListRecords/GetRecord response in the snapshot schema; raises OAIError."""
    errors = _children(root, "error")
    if errors:
        raise OAIError(errors[0].get("code", "unknown"), clean_text(errors[0].text or ""))
    records = []
    for record in root.iter("{*}record"):
        header = _children(record, "header")[0]
        if header.get("status") == "deleted":
            continue
        metadata = _children(record, "metadata")
        if not metadata or not len(metadata[0]):
            continue
        paper = _parse_arxiv_metadata(metadata[0][0], _text(header, "datestamp"))
        if paper:
            records.append(paper)
    token_el = next(root.iter("{*}resumptionToken"), None)
    token = (token_el.text or "").strip() if token_el is not None else ""
    size = token_el.get("completeListSize") if token_el is not None else None
    response_date = _text(root, "responseDate")
    return Page(records, token or None, response_date[:10] if response_date else None,
                int(size) if size and size.isdigit() else None)


def _parse_arxiv_metadata(meta, datestamp: str | None) -> ArxivRecord | None:
    """Both metadata formats: arXiv (authors as keyname/forenames) and arXivRaw (versions)."""
    arxiv_id, title, abstract = _text(meta, "id"), _text(meta, "title"), _text(meta, "abstract")
    if not (arxiv_id and title and abstract):
        return None
    authors_el = _children(meta, "authors")
    if authors_el and _children(authors_el[0], "author"):
        names = []
        for author in _children(authors_el[0], "author"):
            parts = [_text(author, "forenames"), _text(author, "keyname"), _text(author, "suffix")]
            names.append(" ".join(p for p in parts if p))
        authors = ", ".join(names)
    else:
        authors = _text(meta, "authors") or ""
    versions = [{"version": v.get("version"), "created": _text(v, "date")} for v in _children(meta, "version")]
    if versions:  # arXivRaw: the newest version's date
        updated = email.utils.parsedate_to_datetime(versions[-1]["created"]).date().isoformat()
    else:  # arXiv: <updated> when revised, else <created>
        updated = _text(meta, "updated") or _text(meta, "created") or ""
    return ArxivRecord(
        base_id(arxiv_id), title, abstract, _text(meta, "categories") or "", updated[:10],
        version=len(versions) or None, submitter=_text(meta, "submitter"), authors=authors,
        comments=_text(meta, "comments"), journal_ref=_text(meta, "journal-ref"), doi=_text(meta, "doi"),
        report_no=_text(meta, "report-no"), license=_text(meta, "license"), versions=versions,
        datestamp=datestamp, source="oai",
    )


# --------------------------------------------------------------------------- API (Atom)
ATOM = "{http://www.w3.org/2005/Atom}"
ARXIV_ATOM = "{http://arxiv.org/schemas/atom}"


def parse_atom(root) -> tuple[list[ArxivRecord], int]:
    """(papers, totalResults) from an arXiv API response; raises CrawlError for an error feed."""
    papers = []
    for entry in root.iter(f"{ATOM}entry"):
        entry_id = (entry.findtext(f"{ATOM}id") or "").strip()
        if "/api/errors" in entry_id:
            raise CrawlError(f"arXiv API error: {clean_text(entry.findtext(f'{ATOM}summary') or '')}")
        match = re.search(r"abs/(.+?)(v(\d+))?$", entry_id)
        if not match:
            continue
        categories = [c.get("term") for c in entry.iter(f"{ATOM}category")]
        primary = entry.find(f"{ARXIV_ATOM}primary_category")
        if primary is not None and primary.get("term") in categories:
            categories.remove(primary.get("term"))
            categories.insert(0, primary.get("term"))
        papers.append(ArxivRecord(
            base_id(match.group(1)), clean_text(entry.findtext(f"{ATOM}title") or ""),
            clean_text(entry.findtext(f"{ATOM}summary") or ""), " ".join(categories),
            (entry.findtext(f"{ATOM}updated") or "")[:10], version=int(match.group(3) or 1),
            authors=", ".join(clean_text(a.findtext(f"{ATOM}name") or "") for a in entry.iter(f"{ATOM}author")),
            comments=entry.findtext(f"{ARXIV_ATOM}comment"), journal_ref=entry.findtext(f"{ARXIV_ATOM}journal_ref"),
            doi=entry.findtext(f"{ARXIV_ATOM}doi"), source="api",
        ))
    total = root.findtext("{http://a9.com/-/spec/opensearch/1.1/}totalResults")
    return papers, int(total) if total and total.strip().isdigit() else len(papers)


# --------------------------------------------------------------------------- RSS
_RSS_DESCRIPTION = re.compile(r"^\s*arXiv:(\S+?)(v(\d+))?\s+Announce Type:\s*([\w-]+)\s*Abstract:\s*(.*)$", re.S)


def parse_rss(root) -> list[ArxivRecord]:
    """Papers of an arXiv RSS listing (2024+ format: 'arXiv:ID Announce Type: new Abstract: ...')."""
    channel_date = root.findtext("channel/pubDate")
    date = email.utils.parsedate_to_datetime(channel_date).date().isoformat() if channel_date else ""
    papers = []
    for item in root.iter("item"):
        match = _RSS_DESCRIPTION.match(item.findtext("description") or "")
        if not match:
            continue
        arxiv_id, version, announce, abstract = match.group(1), match.group(3), match.group(4), match.group(5)
        papers.append(ArxivRecord(
            base_id(arxiv_id), clean_text(item.findtext("title") or ""), clean_text(abstract),
            " ".join(clean_text(c.text or "") for c in item.findall("category")), date, version=int(version or 1),
            authors=clean_text(item.findtext("{http://purl.org/dc/elements/1.1/}creator") or ""),
            license=item.findtext("{http://purl.org/dc/elements/1.1/}rights"), source=f"rss:{announce}",
        ))
    return papers
