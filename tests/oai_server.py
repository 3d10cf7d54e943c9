"""A real HTTP server on 127.0.0.1 that plays arXiv's OAI-PMH interface, with injectable faults.

Used by tests/test_crawl.py and benchmarks/soak_crawl.py. Records are served in the `arXiv`
metadata format, `page_size` per page, chained by resumption tokens, filtered by `from`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse
from xml.sax.saxutils import escape

FAULTS = ("503", "500", "timeout", "reset", "truncate", "malformed", "badtoken",
          # answers that are not a page although they come with 200 (gateways, proxies, bugs):
          "html", "empty", "envelope", "short", "503html")
MAINTENANCE_PAGE = b"<html><body>Service temporarily unavailable</body></html>"

HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/">'
        "<responseDate>{date}T10:00:00Z</responseDate><request>http://127.0.0.1/oai</request>")


def make_records(n: int, start_day: int = 1) -> list[dict]:
    """n papers with wrapped text (as arXiv sends it) and datestamps spread over days."""
    return [{
        "id": f"2605.{i:05d}", "datestamp": f"2026-05-{start_day + i % 20:02d}",
        "title": f"Harvested paper {i} on graph\n  learning",
        "abstract": f"  We study problem {i}.\nIt matters for\n  learning systems.",
        "categories": ["cs.LG cs.AI", "cs.CV", "math.CO"][i % 3],
    } for i in range(n)]


def record_xml(r: dict) -> str:
    return (f"<record><header><identifier>oai:arXiv.org:{r['id']}</identifier><datestamp>{r['datestamp']}"
            f"</datestamp><setSpec>cs</setSpec></header><metadata><arXiv xmlns=\"http://arxiv.org/OAI/arXiv/\">"
            f"<id>{r['id']}</id><created>{r['datestamp']}</created><authors><author><keyname>Doe</keyname>"
            f"<forenames>Jane</forenames></author></authors><title>{escape(r['title'])}</title>"
            f"<categories>{r['categories']}</categories><abstract>{escape(r['abstract'])}</abstract>"
            f"</arXiv></metadata></record>")


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 for the life of a `with` block; subclasses answer GETs."""

    path = ""  # appended to the base URL to make `url`
    port = 0  # any free one

    def get(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_error(405)

    def post(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_error(405)

    def __enter__(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.get(self)

            def do_POST(self):
                server.post(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{self.path}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class OAIServer(LoopbackServer):
    """Start with `with OAIServer(records) as server:`; server.url is the endpoint."""

    path = "/oai"

    def __init__(self, records: list[dict], page_size: int = 3, faults=(), response_date: str = "2026-05-30",
                 retry_after: int = 1, stall_seconds: float = 2.0):
        self.records = sorted(records, key=lambda r: (r["datestamp"], r["id"]))
        self.page_size = page_size
        self.faults = deque(faults)  # consumed one per request; None means "answer normally"
        self.response_date = response_date
        self.retry_after = retry_after
        self.stall_seconds = stall_seconds
        self.requests: list[tuple[float, dict]] = []  # (monotonic time, params)
        self.injected: dict[str, int] = {}
        self.lock = threading.Lock()

    def get(self, handler: BaseHTTPRequestHandler) -> None:
        params = {k: v[0] for k, v in parse_qs(urlparse(handler.path).query).items()}
        with self.lock:
            self.requests.append((time.monotonic(), params))
            fault = self.faults.popleft() if self.faults else None
            if fault == "badtoken" and "resumptionToken" not in params:
                self.faults.appendleft(fault)  # only a request with a token can have an
                fault = None  # expired one: keep it for the next such request
            if fault:
                self.injected[fault] = self.injected.get(fault, 0) + 1
        self.answer(handler, params, fault)

    def page(self, params: dict, cut_short: bool = False) -> str:
        if "resumptionToken" in params:
            from_date, _, index = params["resumptionToken"].partition("|")
            index = int(index)
        else:
            from_date, index = params.get("from", ""), 0
        selected = [r for r in self.records if r["datestamp"] >= from_date]
        if not selected:
            return HEAD.format(date=self.response_date) + '<error code="noRecordsMatch">none</error></OAI-PMH>'
        chunk = selected[index * self.page_size:(index + 1) * self.page_size]
        more = (index + 1) * self.page_size < len(selected) and not cut_short  # short: ends the list early
        token = f"{from_date}|{index + 1}" if more else ""
        return (HEAD.format(date=self.response_date) + "<ListRecords>" + "".join(map(record_xml, chunk))
                + f'<resumptionToken cursor="{index * self.page_size}" completeListSize="{len(selected)}">'
                + f"{token}</resumptionToken></ListRecords></OAI-PMH>")

    def answer(self, handler, params: dict, fault: str | None) -> None:
        if fault == "reset":
            handler.connection.close()  # no response at all: the client sees a dropped connection
            return
        if fault == "timeout":
            time.sleep(self.stall_seconds)  # longer than the client's timeout
        if fault in ("503", "500", "503html"):
            handler.send_response(int(fault[:3]))
            if fault == "503":
                handler.send_header("Retry-After", str(self.retry_after))
            handler.end_headers()
            handler.wfile.write(MAINTENANCE_PAGE if fault == "503html" else b"busy")
            return
        if fault in ("html", "empty"):
            data = MAINTENANCE_PAGE if fault == "html" else b""
            handler.send_response(200)
            handler.send_header("Content-Type", "text/html" if data else "text/xml")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        if fault == "badtoken" and "resumptionToken" in params:
            body = HEAD.format(date=self.response_date) + (
                '<error code="badResumptionToken">The resumptionToken supplied is illegal</error></OAI-PMH>')
        elif fault == "envelope":
            body = HEAD.format(date=self.response_date) + "</OAI-PMH>"
        else:
            body = self.page(params, cut_short=fault == "short")
        data = body.encode()
        if fault == "truncate":
            data = data[: len(data) // 2]
        elif fault == "malformed":
            data = data.replace(b"</title>", b"</titel>", 1)
        handler.send_response(200)
        handler.send_header("Content-Type", "text/xml; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        try:
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (timeout fault)


class FixtureServer(LoopbackServer):
    """Serves recorded responses: `routes` maps a URL path to a file (the arXiv API and RSS)."""

    def __init__(self, routes: dict[str, str]):
        self.routes = routes
        self.requests: list[str] = []

    def get(self, handler: BaseHTTPRequestHandler) -> None:
        self.requests.append(handler.path)
        path = urlparse(handler.path).path
        if path not in self.routes:
            handler.send_error(404)
            return
        with open(self.routes[path], "rb") as file:
            data = file.read()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/xml")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
