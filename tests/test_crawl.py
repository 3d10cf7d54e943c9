import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import shared_path
from lxml import etree
from oai_server import FixtureServer, OAIServer, make_records

from chatgentitle.cli import cli
from chatgentitle.crawl import formats as formats
from chatgentitle.crawl import harvest as arxiv
from chatgentitle.data.records import ArxivRecord, category_matches
from chatgentitle.data.store import PaperStore


def fast_fetcher(**kw):
    # local server: no politeness delay needed, tiny backoff; the timeout is generous so that a
    # busy machine never times out a normal answer (only the stall fault is meant to)
    return arxiv.Fetcher(delay_seconds=kw.pop("delay_seconds", 0.0), timeout_seconds=kw.pop("timeout", 5.0),
                         backoff_seconds=0.01, **kw)


def expected(records, categories=("cs.AI", "cs.CV", "cs.LG")):
    return sorted(r["id"] for r in records if category_matches(r["categories"], categories))


def stored_ids(store):
    return [r["id"] for r in store.records()]


def test_harvest_with_every_fault_loses_and_duplicates_nothing(tmp_path):
    records = make_records(20)
    faults = ["503", None, "timeout", "reset", None, "truncate", "malformed", "500", None, "badtoken", None]
    with OAIServer(records, page_size=3, faults=faults, stall_seconds=3.0) as server, \
            PaperStore(tmp_path / "p.db") as store:
        report = arxiv.harvest(store, fast_fetcher(timeout=1.0), server.url, ("cs.AI", "cs.CV", "cs.LG"))
        ids = stored_ids(store)
        assert ids == expected(records)  # nothing lost, nothing twice (ids are the primary key, sorted)
        assert report.restarts == 1
        state = store.state(f"{server.url}|cs|arXiv")
        assert state["last_datestamp"] == "2026-05-30" and state["resumption_token"] is None
        paper = store.get("2605.00001")
        assert paper["title"] == "Harvested paper 1 on graph learning"  # wrapped line joined, no glued words
        assert paper["abstract"] == "We study problem 1. It matters for learning systems."
        assert paper["authors"] == "Jane Doe" and paper["update_date"] == "2026-05-02"
        assert set(server.injected) == {"503", "timeout", "reset", "truncate", "malformed", "500", "badtoken"}


BAD_ANSWERS = ("html", "empty", "envelope", "short", "503html")


@pytest.mark.parametrize("first_page", [True, False])
def test_answers_that_are_not_a_page_are_retried_never_taken_for_the_end(tmp_path, first_page):
    # each bad answer once, at the first page or further in (a few good pages between them)
    records = make_records(20)
    faults = [] if first_page else [None, None]
    for kind in BAD_ANSWERS:
        faults += [kind, None]
    with OAIServer(records, page_size=3, faults=faults) as server, PaperStore(tmp_path / "p.db") as store:
        report = arxiv.harvest(store, fast_fetcher(), server.url, ("cs.AI", "cs.CV", "cs.LG"))
        assert stored_ids(store) == expected(records)
        assert set(server.injected) == set(BAD_ANSWERS)
        state = store.state(f"{server.url}|cs|arXiv")
        assert state["last_datestamp"] == "2026-05-30" and state["resumption_token"] is None
        assert state["last_run"] == "complete"
        window = report.windows[0]
        assert window.complete and window.pages == 7 and window.records == len(expected(records))


@pytest.mark.parametrize("kind", BAD_ANSWERS)
def test_a_persisting_bad_answer_stops_the_run_and_keeps_the_state(tmp_path, kind):
    records = make_records(12)
    db = tmp_path / "p.db"
    with OAIServer(records, page_size=3, faults=[None, None] + [kind] * 4) as server:
        key = f"{server.url}|cs|arXiv"
        with PaperStore(db) as store:
            with pytest.raises(arxiv.CrawlError, match="giving up") as err:
                arxiv.harvest(store, fast_fetcher(max_retries=4), server.url, ("cs",))
            assert "resumes from the same resumption token" in str(err.value)
            state = store.state(key)
            assert state["resumption_token"] == "|2" and state["last_datestamp"] is None  # after 2 good pages
            assert stored_ids(store) == expected(server.records[:6], ("cs",))
            assert state["last_run"].startswith("stopped: giving up")
        # the next run resumes from that token and ends the window
        with PaperStore(db) as store:
            arxiv.harvest(store, fast_fetcher(), server.url, ("cs",))
            assert stored_ids(store) == expected(records, ("cs",))
            assert store.state(key)["last_datestamp"] == "2026-05-30"
        resumed = server.requests[2 + 4][1]
        assert resumed == {"verb": "ListRecords", "resumptionToken": "|2"}


def test_cli_exits_non_zero_on_a_persisting_bad_answer_and_status_says_why(tmp_path):
    db = tmp_path / "p.db"
    with OAIServer(make_records(9), faults=[None] + ["html"] * 10) as server:
        runner = CliRunner()
        result = runner.invoke(cli, ["crawl", "--endpoint", server.url, "--db", str(db), "--delay", "0",
                                     "--timeout", "5", "--retries", "2"])
        assert result.exit_code == 1
        assert "not an OAI-PMH answer (root element <html>)" in result.output
        assert "harvested" not in result.output
    status = runner.invoke(cli, ["crawl", "--db", str(db), "--status"]).output
    assert "incomplete: window start..2026-05-30 continues from its resumption token" in status
    assert "last run: stopped: giving up" in status and "2 records in 1 pages" in status


def test_list_checks_on_recorded_style_answers():
    def check(xml: str, continuation=False):
        formats.check_list_answer(etree.fromstring(xml.encode()), continuation)

    oai = '<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/">{}</OAI-PMH>'
    record = "<record><header><identifier>x</identifier></header></record>"
    check(oai.format('<error code="noRecordsMatch">none</error>'))
    check(oai.format(f"<ListRecords>{record}</ListRecords>"))  # a complete list in one answer
    check(oai.format(f'<ListRecords>{record}<resumptionToken cursor="5" completeListSize="6"/></ListRecords>'),
          continuation=True)
    for bad, continuation in [
        ("<html><body>Service temporarily unavailable</body></html>", False),
        ('<OAI-PMH xmlns="http://example.org/other"><ListRecords/></OAI-PMH>', False),
        (oai.format("<responseDate>2026-05-30</responseDate>"), False),
        (oai.format("<ListRecords></ListRecords>"), False),
        (oai.format(f"<ListRecords>{record}</ListRecords>"), True),
        (oai.format(f'<ListRecords>{record}<resumptionToken cursor="3" completeListSize="9"/></ListRecords>'),
         True),
    ]:
        with pytest.raises(arxiv.Retryable):
            check(bad, continuation)


def test_next_run_continues_from_the_last_datestamp(tmp_path):
    with OAIServer(make_records(6), page_size=10) as server, PaperStore(tmp_path / "p.db") as store:
        arxiv.harvest(store, fast_fetcher(), server.url, ("cs",))
        arxiv.harvest(store, fast_fetcher(), server.url, ("cs",))
        first, second = server.requests[0][1], server.requests[1][1]
        assert "from" not in first and second["from"] == "2026-05-30"
        assert second["set"] == "cs" and second["metadataPrefix"] == "arXiv"


def test_no_records_match_is_a_finished_window(tmp_path):
    with OAIServer([], page_size=3) as server, PaperStore(tmp_path / "p.db") as store:
        report = arxiv.harvest(store, fast_fetcher(), server.url, ("cs.LG",), from_date="2026-06-01")
        assert report.records_kept == 0 and store.count() == 0
        assert store.state(f"{server.url}|cs|arXiv")["last_datestamp"] == "2026-06-01"


def test_retry_after_is_honoured(tmp_path):
    with OAIServer(make_records(2), faults=["503"], retry_after=1) as server, PaperStore(tmp_path / "p.db") as s:
        arxiv.harvest(s, fast_fetcher(), server.url, ("cs",))
        (t0, _), (t1, _) = server.requests[:2]
        assert t1 - t0 >= 0.95


def test_politeness_delay_between_requests(tmp_path):
    with OAIServer(make_records(12), page_size=2, faults=["500"]) as server, PaperStore(tmp_path / "p.db") as s:
        arxiv.harvest(s, fast_fetcher(delay_seconds=0.2), server.url, ("cs",))
        times = [t for t, _ in server.requests]
        assert len(times) == 7  # 6 pages + 1 retry
        # measured where the requests arrive: thread scheduling on a busy machine shifts them a little
        assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 0.18


def test_arxiv_hosts_never_get_less_than_3_seconds():
    fetcher = arxiv.Fetcher(delay_seconds=0.5)
    assert fetcher.delay_for("https://oaipmh.arxiv.org/oai") == 3.0
    assert fetcher.delay_for("https://export.arxiv.org/api/query") == 3.0
    assert fetcher.delay_for("http://127.0.0.1:8000/oai") == 0.5
    assert "chatgentitle/" in fetcher.client.headers["User-Agent"]


def test_gives_up_with_a_clear_error(tmp_path):
    with OAIServer(make_records(2), faults=["500"] * 10) as server, PaperStore(tmp_path / "p.db") as store:
        with pytest.raises(arxiv.CrawlError, match="giving up"):
            arxiv.harvest(store, fast_fetcher(max_retries=3), server.url, ("cs",))


def test_newer_version_wins(tmp_path):
    with PaperStore(tmp_path / "p.db") as store:
        base = ArxivRecord("2605.00001", "Old", "a", "cs.LG", version=2)
        store.save_page([base])
        store.save_page([replace(base, title="Older", version=1)])
        assert store.get("2605.00001")["title"] == "Old"
        store.save_page([replace(base, title="New", version=3)])
        assert store.get("2605.00001")["title"] == "New" and store.count() == 1
        assert [r["title"] for r in store.search("new")] == ["New"]


@pytest.mark.slow
@pytest.mark.parametrize("faults", [(), ("html", None, None, "empty", "envelope", None, "short", None, None,
                                         "503html", None, None, "short")])
def test_kill_9_mid_harvest_then_resume(tmp_path, faults):
    records = make_records(60)
    db = tmp_path / "p.db"
    with OAIServer(records, page_size=4, faults=faults) as server:
        cmd = [sys.executable, "-m", "chatgentitle", "crawl", "--endpoint", server.url, "--db", str(db),
               "--delay", "0.1", "--categories", "cs.AI,cs.CV,cs.LG"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while len(server.requests) < 6 and time.time() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with PaperStore(db) as store:
            partial = store.count()
            assert store.state(f"{server.url}|cs|arXiv")["resumption_token"]  # stopped inside the window
        assert 0 < partial < len(expected(records))
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        with PaperStore(db) as store:
            assert stored_ids(store) == expected(records)
            assert store.state(f"{server.url}|cs|arXiv")["last_datestamp"] == "2026-05-30"
        # the restart continued with the stored token instead of starting over
        restart = [p for _, p in server.requests if "metadataPrefix" in p]
        assert len(restart) == (2 if faults else 1)  # with faults: the first page was asked twice (html)
        assert sum(server.injected.values()) == len([f for f in faults if f])  # every fault was met


def test_cli_status_export_and_prepare_from_db(tmp_path):
    db = tmp_path / "p.db"
    with OAIServer(make_records(9)) as server:
        runner = CliRunner()
        result = runner.invoke(cli, ["crawl", "--endpoint", server.url, "--db", str(db), "--delay", "0"])
        assert result.exit_code == 0, result.output
        assert "harvested 6 papers" in result.output and "page 3" in result.output
    status = runner.invoke(cli, ["crawl", "--db", str(db), "--status"])
    assert "6 papers in" in status.output and "cs.LG" in status.output and "last datestamp 2026-05-30" in status.output
    out = tmp_path / "papers.jsonl"
    assert runner.invoke(cli, ["crawl", "--db", str(db), "--export", str(out)]).exit_code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and {"journal-ref", "update_date", "versions"} <= set(rows[0])
    prepared = runner.invoke(cli, ["prepare", "--db", str(db), "--out", str(tmp_path / "d"), "--min-abstract-chars",
                                   "10", "--val-size", "0", "--test-size", "0"])
    assert prepared.exit_code == 0 and "kept 6" in prepared.output
    again = runner.invoke(cli, ["prepare", str(out), "--out", str(tmp_path / "e"), "--min-abstract-chars", "10"])
    assert "kept 6" in again.output


# --------------------------------------------------------------------------- recorded arXiv responses
RECORDED = Path(__file__).parent / "data" / "arxiv"  # our own, in arXiv's formats (fresh clones have them)


def parse(name):
    return etree.parse(str(RECORDED / name)).getroot()


def test_own_oai_pages_parse():
    page = formats.parse_oai_page(parse("oai_ListRecords_arXiv.xml"))
    assert [r.id for r in page.records] == ["2605.00017", "2605.00021"]  # the deleted record is skipped
    assert page.resumption_token == "7263541|1001" and page.complete_list_size == 5
    assert page.response_date == "2026-05-04"
    first = page.records[0]
    assert first.title == "Sparse Mixtures of Experts for Long-Context Retrieval"
    assert first.abstract.startswith("We study sparse mixtures") and "\n" not in first.abstract
    assert first.authors == "Maria Rossi, Wei Chen Jr" and first.categories == "cs.CL cs.LG"
    assert first.update_date == "2026-05-01" and first.datestamp == "2026-05-02"
    assert page.records[1].update_date == "2026-05-01" and page.records[1].doi == "10.1000/example.2026.21"
    raw = formats.parse_oai_page(parse("oai_ListRecords_arXivRaw.xml"))
    paper = raw.records[0]
    assert paper.id == "hep-th/9901001" and paper.version == 2 and paper.update_date == "2026-05-03"
    assert paper.title == "Spectra of a Toy Quantum Field Theory" and raw.resumption_token is None
    formats.check_list_answer(parse("oai_ListRecords_arXiv.xml"), continuation=False)
    formats.check_list_answer(parse("oai_ListRecords_arXivRaw.xml"), continuation=True)  # 3 + 1 of 4: complete
    with pytest.raises(arxiv.OAIError) as err:
        formats.parse_oai_page(parse("oai_error_badResumptionToken.xml"))
    assert err.value.code == "badResumptionToken"


def test_own_api_and_rss_responses_parse():
    papers, total = formats.parse_atom(parse("api_query_id_list.xml"))
    assert total == 2 and [p.id for p in papers] == ["2605.00017", "hep-th/9901001"]
    assert papers[0].categories == "cs.CL cs.LG"  # the primary category first
    assert papers[0].title == "Sparse Mixtures of Experts for Long-Context Retrieval"
    assert papers[1].version == 2 and papers[1].journal_ref == "Toy Phys. 1 (1999) 1"
    with pytest.raises(arxiv.CrawlError, match="incorrect id format for 2605.bad"):
        formats.parse_atom(parse("api_error.xml"))
    items = formats.parse_rss(parse("rss_cs.AI.xml"))
    assert [(p.id, p.source) for p in items] == [
        ("2605.00101", "rss:new"), ("2604.31100", "rss:replace"), ("2605.00133", "rss:cross")]
    assert items[0].abstract.startswith("We let a language model plan") and items[0].update_date == "2026-05-04"
    assert items[0].authors == "Lena Vogel, Tomas Ruiz" and items[1].version == 2


def test_cli_ids_and_rss_store_what_the_recorded_answers_hold(tmp_path):
    db = tmp_path / "p.db"
    routes = {"/api/query": str(RECORDED / "api_query_id_list.xml"), "/rss/cs.AI": str(RECORDED / "rss_cs.AI.xml")}
    with FixtureServer(routes) as server:
        runner = CliRunner()
        ids = runner.invoke(cli, ["crawl", "--db", str(db), "--delay", "0", "--endpoint", server.url + "/api/query",
                                  "--ids", "2605.00017,hep-th/9901001v2"])
        assert ids.exit_code == 0 and "2 papers looked up" in ids.output, ids.output
        assert "id_list=2605.00017%2Chep-th%2F9901001v2" in server.requests[0]
        rss = runner.invoke(cli, ["crawl", "--db", str(db), "--delay", "0", "--endpoint", server.url + "/rss",
                                  "--rss", "--categories", "cs.AI"])
        assert rss.exit_code == 0 and "3 papers from the RSS listing" in rss.output, rss.output
    with PaperStore(db) as store:
        assert store.count() == 5 and store.get("hep-th/9901001")["version"] == 2
        assert store.get("2605.00101")["source"] == "rss:new"


@pytest.mark.slow
def test_every_harvests_again_until_sigterm(tmp_path):
    db = tmp_path / "p.db"
    with OAIServer(make_records(6), page_size=10) as server:
        proc = subprocess.Popen([sys.executable, "-m", "chatgentitle", "crawl", "--endpoint", server.url, "--db",
                                 str(db), "--delay", "0", "--every", "1s"], stdout=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while len(server.requests) < 2 and time.time() < deadline:  # two harvests, one second apart
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert out.count("harvested") >= 2 and "next harvest in 1 s" in out
        assert server.requests[1][1]["from"] == "2026-05-30"  # the second run continued from the first


def test_shared_oai_pages_parse():
    folder = shared_path("fixtures", "oai_pmh")
    name = "litpuvn_arxiv-oai-harvester__ListRecords_arXivRaw_2016-10-21.xml"
    page = formats.parse_oai_page(etree.parse(str(folder / name)).getroot())
    assert len(page.records) == 387 and page.resumption_token == "1403493|1001"
    assert page.complete_list_size == 1440
    first = page.records[0]
    assert first.id == "0803.4354" and first.version == 6 and first.update_date == "2016-10-20"
    assert all("\n" not in r.abstract and "  " not in r.title for r in page.records)
    raw = formats.parse_oai_page(etree.parse(str(folder / "hepcrawl__sample_arxiv_record0.xml")).getroot())
    assert raw.records[0].authors.startswith("Planck Collaboration, Jieci Wang")
    for code in ("BadArgument", "BadResumptionToken", "BadVerb", "IdDoesNotExist", "NoRecordsMatch"):
        root = etree.parse(str(folder / f"mikesaelim_arXivOAIHarvester__ErrorResponse{code}.xml")).getroot()
        with pytest.raises(arxiv.OAIError) as err:
            formats.parse_oai_page(root)
        assert err.value.code.lower() == code.lower()


def test_shared_api_and_rss_parse():
    api = shared_path("fixtures", "api_atom")
    papers, total = formats.parse_atom(etree.parse(str(api / "id_1605.08386_s0_m100_199195aa31ad.xml")).getroot())
    assert total == 1 and papers[0].id == "1605.08386" and papers[0].categories == "math.CO math.ST"
    assert papers[0].authors == "Caprice Stanley, Tobias Windisch"
    with pytest.raises(arxiv.CrawlError, match="incorrect id format"):
        formats.parse_atom(etree.parse(str(api / "aioarxiv-0.2.2__tests_data_error_response.xml")).getroot())
    rss = next(shared_path("fixtures", "rss").glob("*.xml"))
    items = formats.parse_rss(etree.parse(str(rss)).getroot())
    assert len(items) == 123
    assert {p.source for p in items} == {"rss:new", "rss:cross", "rss:replace", "rss:replace-cross"}
    first = items[0]
    assert first.id == "2403.15527" and first.update_date == "2024-03-26"
    assert first.abstract.startswith("Conformal prediction equips") and "Abstract:" not in first.abstract
