"""Harvesting arXiv politely into the paper store: OAI-PMH, the API (Atom) and the RSS listings.

Run as: chatgentitle crawl --categories cs.AI,cs.CV,cs.LG           (incremental OAI-PMH harvest)
        chatgentitle crawl --every 24h                              (keeps running; SIGTERM stops it)

`Fetcher` makes every request: one connection, at least `delay_seconds` between requests
(never below 3 s against arXiv's hosts, as arXiv's terms ask), retries with backoff on
timeouts, resets, 5xx and truncated XML, and waits as long as a 503's Retry-After says.
`list_records` is a generator over OAI-PMH pages that follows resumption tokens; `harvest`
commits each page and the harvest state in one transaction.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import urlparse

import httpx
from lxml import etree

from chatgentitle.config import split_csv
from chatgentitle.crawl.formats import (
    CrawlError,
    OAIError,
    Page,
    check_list_answer,
    parse_atom,
    parse_oai_page,
    parse_rss,
)
from chatgentitle.crawl.http import GiveUp, HttpClient, Retryable, user_agent
from chatgentitle.data.records import ArxivRecord, category_matches
from chatgentitle.data.store import PaperStore
from chatgentitle.errors import OptionError

OAI_ENDPOINT = "https://oaipmh.arxiv.org/oai"  # arXiv's OAI-PMH base URL (export.arxiv.org/oai2 before 2025)
API_ENDPOINT = "https://export.arxiv.org/api/query"
RSS_ENDPOINT = "https://rss.arxiv.org/rss"
DEFAULT_CATEGORIES = ("cs.AI", "cs.CV", "cs.LG")
ARXIV_MIN_DELAY_SECONDS = 3.0
MAX_RETRY_AFTER_SECONDS = 600.0

# arXiv archives whose OAI-PMH set is "physics:<archive>"
PHYSICS_ARCHIVES = {"astro-ph", "cond-mat", "gr-qc", "hep-ex", "hep-lat", "hep-ph", "hep-th", "math-ph",
                    "nlin", "nucl-ex", "nucl-th", "physics", "quant-ph"}


# --------------------------------------------------------------------------- HTTP
class Fetcher:
    """The crawler's side of the HTTP client: one connection, at least delay_seconds between requests
    (3 s against arXiv's hosts), XML answers checked before they count."""

    def __init__(self, delay_seconds: float = ARXIV_MIN_DELAY_SECONDS, timeout_seconds: float = 60.0,
                 max_retries: int = 8, backoff_seconds: float = 1.0, contact: str | None = None,
                 on_wait: Callable[[float], None] | None = None):
        self.delay_seconds = delay_seconds
        # one connection: arXiv asks crawlers not to open several
        self.client = HttpClient(timeout_seconds=timeout_seconds, max_retries=max_retries,
                                 backoff_seconds=backoff_seconds, max_retry_after_seconds=MAX_RETRY_AFTER_SECONDS,
                                 headers={"User-Agent": user_agent("title-generation research crawler", contact)},
                                 min_interval=self.delay_for, on_wait=on_wait)

    @property
    def retries(self) -> int:
        return self.client.retries

    def delay_for(self, url: str) -> float:
        host = urlparse(url).hostname or ""
        if host == "arxiv.org" or host.endswith(".arxiv.org"):
            return max(self.delay_seconds, ARXIV_MIN_DELAY_SECONDS)
        return self.delay_seconds

    def get_xml(self, url: str, params: dict, check: Callable[[etree._Element], None] | None = None):
        """The parsed answer; `check` raises Retryable for an answer that is not what was asked for."""
        try:
            return self.client.send("GET", url, params=params, check=partial(_xml, check=check))
        except GiveUp as err:
            raise CrawlError(str(err)) from None

    def close(self) -> None:
        self.client.close()


def _xml(response: httpx.Response, check: Callable[[etree._Element], None] | None):
    if response.status_code >= 400 and b"<error" not in response.content:
        raise CrawlError(f"HTTP {response.status_code} from {response.url}")
    try:  # a cut-off transfer or an empty body shows up as XML that does not parse: fetch it again
        root = etree.fromstring(response.content)
    except etree.XMLSyntaxError as err:
        raise Retryable(f"malformed XML ({err})") from None
    if check:
        check(root)
    return root


def oai_set(category: str) -> str:
    """The OAI-PMH set that holds a category: cs.AI -> cs, hep-th -> physics:hep-th."""
    archive = category.split(".", 1)[0]
    return f"physics:{archive}" if archive in PHYSICS_ARCHIVES else archive


def list_records(fetcher: Fetcher, endpoint: str, metadata_prefix: str = "arXiv", set_spec: str | None = None,
                 from_date: str | None = None, until_date: str | None = None,
                 resumption_token: str | None = None) -> Iterator[Page]:
    """OAI-PMH ListRecords pages, following resumption tokens until the list ends."""
    while True:
        if resumption_token:
            params = {"verb": "ListRecords", "resumptionToken": resumption_token}
        else:
            params = {"verb": "ListRecords", "metadataPrefix": metadata_prefix}
            params.update({k: v for k, v in (("set", set_spec), ("from", from_date), ("until", until_date)) if v})
        continuation = bool(resumption_token)
        root = fetcher.get_xml(endpoint, params, check=partial(check_list_answer, continuation=continuation))
        page = parse_oai_page(root)
        yield page
        if not page.resumption_token:
            return
        resumption_token = page.resumption_token


@dataclass
class Window:
    """One set's harvest window in this run."""

    set_spec: str
    start: str | None  # from (None: from the beginning)
    end: str | None  # until (the first page's responseDate unless given)
    pages: int = 0
    records: int = 0
    complete: bool = False
    """The list really ended (empty resumptionToken or noRecordsMatch): last_datestamp advanced."""
    stopped: str = ""
    """Why the run left this window: complete, stop requested, or the error that ended it."""


@dataclass
class HarvestReport:
    pages: int = 0
    records_seen: int = 0
    records_kept: int = 0
    restarts: int = 0
    windows: list[Window] = field(default_factory=list)


def harvest(store: PaperStore, fetcher: Fetcher, endpoint: str = OAI_ENDPOINT,
            categories: tuple[str, ...] = DEFAULT_CATEGORIES, metadata_prefix: str = "arXiv",
            from_date: str | None = None, until_date: str | None = None,
            progress: Callable[[str, Page, HarvestReport], None] | None = None,
            should_stop: Callable[[], bool] = lambda: False) -> HarvestReport:
    """Incremental harvest of the sets holding `categories`; resumable after any crash.

    Each page's papers and the resumption token are committed together. A run starts where the
    last one stopped: inside a window (its resumption token), or from the last datestamp. A
    request that keeps failing raises CrawlError with the state as the last good page left it.
    """
    report = HarvestReport()
    for set_spec in sorted({oai_set(c) for c in categories}):
        key = f"{endpoint}|{set_spec}|{metadata_prefix}"
        state = store.state(key)
        token = state.get("resumption_token")
        window = Window(set_spec, state.get("window_from") if token else (from_date or state.get("last_datestamp")),
                        state.get("window_until") if token else until_date)
        report.windows.append(window)
        try:
            token = _harvest_window(store, fetcher, endpoint, metadata_prefix, key, window, token, categories,
                                    report, progress, should_stop)
        except CrawlError as err:
            window.stopped = str(err)
            store.set_state(key, last_run=f"stopped: {err}")
            where = "resumption token" if store.state(key).get("resumption_token") else "date"
            raise CrawlError(f"{err}; the harvest of {set_spec} stopped there and resumes from the same "
                             f"{where} next run") from None
        window.stopped = "complete" if window.complete else "stop requested"
        store.set_state(key, last_run=window.stopped)
        if not window.complete:
            break
    return report


def _harvest_window(store, fetcher, endpoint, metadata_prefix, key, window, token, categories, report,
                    progress, should_stop) -> str | None:
    """Pages of one window until its list ends or a stop is requested; returns the stored token."""
    while True:
        try:
            for page in list_records(fetcher, endpoint, metadata_prefix, window.set_spec, window.start,
                                     window.end, resumption_token=token):
                window.end = window.end or page.response_date
                kept = [r for r in page.records if category_matches(r.categories, categories)]
                window.complete = page.resumption_token is None
                state_update = {"resumption_token": page.resumption_token, "window_from": window.start,
                                "window_until": window.end}
                if window.complete:  # the list ended: the next run starts where this window ended
                    state_update["last_datestamp"] = window.end
                store.save_page(kept, key, **state_update)
                token = page.resumption_token
                window.pages += 1
                window.records += len(kept)
                report.pages += 1
                report.records_seen += len(page.records)
                report.records_kept += len(kept)
                if progress:
                    progress(window.set_spec, page, report)
                if should_stop() and not window.complete:
                    return token
            return token
        except OAIError as err:
            if err.code == "noRecordsMatch":
                window.complete = True
                store.set_state(key, resumption_token=None, window_from=window.start,
                                last_datestamp=window.end or window.start)
                return None
            if err.code == "badResumptionToken" and token:
                # the token expired: restart this window from its committed start date
                token = None
                report.restarts += 1
                store.set_state(key, resumption_token=None)
                continue
            raise


def fetch_ids(fetcher: Fetcher, ids: list[str], endpoint: str = API_ENDPOINT,
              chunk: int = 100) -> Iterator[ArxivRecord]:
    """Papers for arXiv ids (old or new style, with or without version), 100 per request."""
    for start in range(0, len(ids), chunk):
        params = {"id_list": ",".join(ids[start:start + chunk]), "start": 0, "max_results": chunk}
        yield from parse_atom(fetcher.get_xml(endpoint, params))[0]


def fetch_rss(fetcher: Fetcher, categories: tuple[str, ...], endpoint: str = RSS_ENDPOINT) -> list[ArxivRecord]:
    return parse_rss(fetcher.get_xml(f"{endpoint}/{'+'.join(categories)}", {}))


# --------------------------------------------------------------------------- the crawl command
@dataclass
class CrawlJob:
    """What one `chatgentitle crawl` does: which source, which papers, how often, how politely."""

    categories: tuple[str, ...] = DEFAULT_CATEGORIES
    """Comma-separated categories (cs.AI) or archives (cs)."""
    endpoint: str | None = None
    """OAI-PMH base URL, or the API / RSS base with ids / rss (default: arXiv's)."""
    metadata_prefix: str = "arXiv"
    """OAI-PMH metadata format: arXiv or arXivRaw."""
    from_date: str | None = field(default=None, metadata={"flag": "--from"})
    """Harvest records changed on or after YYYY-MM-DD (default: continue from the last run)."""
    until_date: str | None = field(default=None, metadata={"flag": "--until"})
    """... and on or before YYYY-MM-DD."""
    ids: tuple[str, ...] = ()
    """Look these arXiv ids up through the API instead (comma-separated)."""
    rss: bool = False
    """Read today's RSS listing of the categories instead."""
    every: str | None = None
    """Keep running, harvesting every interval (24h, 30m, 90s); SIGTERM stops cleanly."""
    delay: float = ARXIV_MIN_DELAY_SECONDS
    """Seconds between requests (never below 3 against arXiv's hosts)."""
    timeout: float = 60.0
    """Seconds per request."""
    retries: int = field(default=8, metadata={"range": (1, 20)})
    """Attempts per request (5xx, timeouts, answers that are not a page) before the run stops."""
    contact: str | None = field(default=None, metadata={"envvar": "CHATGENTITLE_CONTACT"})
    """An e-mail address for the User-Agent."""

    def __post_init__(self):
        for name in ("categories", "ids"):
            if isinstance(getattr(self, name), str):
                setattr(self, name, split_csv(getattr(self, name)))
        if self.metadata_prefix not in ("arXiv", "arXivRaw"):
            raise OptionError("metadata_prefix must be arXiv or arXivRaw")
        self.every_seconds = duration_seconds(self.every) if self.every else None

    def fetcher(self, on_wait: Callable[[float], None] | None = None) -> Fetcher:
        return Fetcher(delay_seconds=self.delay, timeout_seconds=self.timeout, max_retries=self.retries,
                       contact=self.contact, on_wait=on_wait)


def duration_seconds(text: str) -> float:
    """'24h', '30m', '90s', '1d' or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise OptionError(f"{text!r} is not a duration like 24h, 30m or 90s") from None


def echo_wait(seconds: float) -> None:
    """Say on stderr how long the polite wait before the next request is (crawl, on a terminal)."""
    print(f"  next request in {seconds:.1f} s", file=sys.stderr)


def run(job: CrawlJob, store: PaperStore, fetcher: Fetcher, echo: Callable[[str], None] = print) -> None:
    """Run the job once, or every `job.every_seconds` until SIGTERM, which stops after the current page
    (the harvest state is committed with every page, so the next run continues from there)."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    from_date = job.from_date
    while True:
        if job.ids:
            papers = list(fetch_ids(fetcher, list(job.ids), job.endpoint or API_ENDPOINT))
            echo(f"{store.save_page(papers)} papers looked up")
        elif job.rss:
            papers = fetch_rss(fetcher, job.categories, job.endpoint or RSS_ENDPOINT)
            echo(f"{store.save_page(papers)} papers from the RSS listing")
        else:
            report = harvest(store, fetcher, job.endpoint or OAI_ENDPOINT, job.categories, job.metadata_prefix,
                             from_date, job.until_date, partial(_echo_page, echo, time.monotonic()),
                             should_stop=stopping.is_set)
            for window in report.windows:
                echo(f"{window.set_spec} {window.start or 'start'}..{window.end or 'now'}: "
                     f"{window.stopped}, {window.pages} pages, {window.records} papers")
            echo(f"harvested {report.records_kept} papers ({report.records_seen} seen, "
                 f"{report.pages} pages, {fetcher.retries} retries); store has {store.count()}")
        if job.every_seconds is None or stopping.is_set():
            return
        from_date = None  # later runs continue from the stored datestamps
        echo(f"next harvest in {job.every_seconds:g} s")
        if stopping.wait(job.every_seconds):
            return


def _echo_page(echo: Callable[[str], None], began: float, set_spec: str, page: Page, report: HarvestReport) -> None:
    rate = report.records_seen / max(1e-9, time.monotonic() - began)
    total = f"/{page.complete_list_size}" if page.complete_list_size else ""
    echo(f"{set_spec}: page {report.pages}, {report.records_seen}{total} records seen, "
         f"{report.records_kept} kept, {rate:.1f} records/s")
