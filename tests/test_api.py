import concurrent.futures
import time

import pytest
from fastapi.testclient import TestClient
from helpers import FakeGenerator

from chatgentitle.serving.app import create_app
from chatgentitle.serving.jobs import MAX_ABSTRACT_CHARS
from chatgentitle.titling.ranking import Ranker

ABSTRACT = "we propose a novel method for learning graph neural networks"


@pytest.fixture
def client(fake_generator):
    return TestClient(create_app(fake_generator, Ranker()))


def test_health_and_docs(client):
    assert client.get("/health").json()["status"] == "ok"
    assert "/v1/titles" in client.get("/openapi.json").json()["paths"]


def test_one_and_many_abstracts(client):
    one = client.post("/v1/titles", json={"abstract": ABSTRACT})
    assert one.status_code == 200
    assert one.json()["results"][0]["title"] == "We Propose A Candidate 0"
    many = client.post("/v1/titles", json={"abstracts": [ABSTRACT, "deep models for images"],
                                            "options": {"num_candidates": 3}})
    results = many.json()["results"]
    assert len(results) == 2 and len(results[1]["candidates"]) == 3
    assert {"score", "faithfulness", "cliches"} <= set(results[1]["candidates"][0])


def test_options_reach_the_generator(client, fake_generator):
    client.post("/v1/titles", json={"abstract": ABSTRACT, "options": {"num_beams": 4, "max_new_tokens": 7}})
    options = fake_generator.calls[-1][1]
    assert options.num_beams == 4 and options.max_new_tokens == 7


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"abstract": ""}, 422),
        ({"abstract": "   "}, 422),
        ({"abstract": "\x1f\x85\u3000"}, 422),  # blank to Python, not to every regex engine's \S
        ({"abstract": 42}, 422),
        ({"abstract": ["a list"]}, 422),
        ({"abstracts": []}, 422),
        ({"abstracts": [ABSTRACT] * 33}, 422),
        ({"abstract": "x" * (MAX_ABSTRACT_CHARS + 1)}, 422),
        ({"abstract": ABSTRACT, "abstracts": [ABSTRACT]}, 422),
        ({"abstract": ABSTRACT, "options": {"num_beams": 0}}, 422),
        ({"abstract": ABSTRACT, "options": {"do_sample": True, "temperature": 0}}, 422),
        ({"abstract": ABSTRACT, "unknown": 1}, 422),
    ],
)
def test_bad_requests_get_4xx_and_the_server_keeps_serving(client, body, status):
    assert client.post("/v1/titles", json=body).status_code == status
    assert client.post("/v1/titles", json={"abstract": ABSTRACT}).status_code == 200


def test_the_schemas_text_pattern_is_what_the_server_strips():
    """A request the OpenAPI document allows is one the server takes: its "holds text" is str.strip()'s."""
    import re
    import sys

    from chatgentitle.serving.jobs import HOLDS_TEXT

    pattern = re.compile(HOLDS_TEXT)
    assert all(bool(pattern.match(c)) == bool(c.strip()) for c in map(chr, range(sys.maxunicode + 1)))


def test_malformed_and_oversized_bodies(client):
    assert client.post("/v1/titles", content=b"{not json", headers={"content-type": "application/json"}
                       ).status_code == 422
    big = b'{"abstract": "' + b"x" * 1_100_000 + b'"}'
    assert client.post("/v1/titles", content=big, headers={"content-type": "application/json"}).status_code == 413


def test_api_key(fake_generator):
    client = TestClient(create_app(fake_generator, api_key="s3cret"))
    assert client.post("/v1/titles", json={"abstract": ABSTRACT}).status_code == 401
    ok = client.post("/v1/titles", json={"abstract": ABSTRACT}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200


def test_concurrent_requests_are_micro_batched(fake_generator):
    fake_generator.delay_seconds = 0.05
    client = TestClient(create_app(fake_generator, max_batch=8))
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda i: client.post("/v1/titles", json={"abstract": f"paper {i} text"}),
                                  range(32)))
    assert all(r.status_code == 200 for r in responses)
    assert [r.json()["results"][0]["title"] for r in responses] == [f"Paper {i} Text Candidate 0" for i in range(32)]
    assert max(size for size, _ in fake_generator.calls) > 1  # several requests shared a generate call
    assert max(size for size, _ in fake_generator.calls) <= 8


def test_full_queue_answers_503(fake_generator):
    fake_generator.delay_seconds = 0.3
    client = TestClient(create_app(fake_generator, max_batch=1, max_queue=1))
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        codes = [r.status_code for r in pool.map(lambda i: client.post("/v1/titles", json={"abstract": "a b c"}),
                                                  range(6))]
    assert 503 in codes and 200 in codes and set(codes) <= {200, 503}


@pytest.mark.parametrize(("option", "value", "limit"), [
    ("num_beams", 1000, "8"), ("num_beams", 0, "1"), ("max_new_tokens", 100_000, "64"), ("num_candidates", 9, "8"),
    ("top_k", 10_000, "200"), ("temperature", 50.0, "2"), ("no_repeat_ngram_size", 99, "8"),
])
def test_each_option_has_an_upper_bound_and_a_422_names_it(client, fake_generator, option, value, limit):
    response = client.post("/v1/titles", json={"abstract": ABSTRACT, "options": {option: value}})
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "options", option] and limit in error["msg"]
    assert not fake_generator.calls  # never reached the model
    assert client.post("/v1/titles", json={"abstract": ABSTRACT}).status_code == 200


def test_a_request_past_its_deadline_gets_503_and_its_generation_stops():
    slow = FakeGenerator(delay_seconds=5.0)  # a model that would take 5 s
    client = TestClient(create_app(slow, request_timeout=0.5))
    response = client.post("/v1/titles", json={"abstract": ABSTRACT})
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert "deadline" in response.json()["detail"]
    assert slow.stopped.wait(10) and not slow.ran_to_the_end.is_set()  # the worker did not run on for the gone client
    assert slow.stopped_early == 1
    slow.delay_seconds = 0.0
    assert client.post("/v1/titles", json={"abstract": ABSTRACT}).status_code == 200  # next request served


def test_a_generation_stopped_at_its_deadline_is_not_an_answer():
    """The worker can see the deadline pass a moment before the request's timer does: the titles of
    the stopped generation must not go out as a 200."""
    from chatgentitle.serving.jobs import Job, MicroBatcher

    slow = FakeGenerator(delay_seconds=5.0)
    job = Job([ABSTRACT], lambda texts, should_stop: slow.generate(texts, should_stop=should_stop), "key", "key",
              deadline=time.monotonic() + 0.2)
    MicroBatcher().submit(job)  # stops at the deadline
    with pytest.raises(TimeoutError):
        job.future.result(timeout=2)


def test_queued_requests_past_their_deadline_never_reach_the_model():
    slow = FakeGenerator(delay_seconds=0.6)
    app = create_app(slow, max_batch=1, request_timeout=0.3)
    client = TestClient(app)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        codes = [r.status_code for r in pool.map(lambda i: client.post("/v1/titles", json={"abstract": f"p {i}"}),
                                                  range(4))]
    assert codes == [503] * 4
    assert app.state.service.batchers["fake"].idle.wait(10)  # nothing queued or decoding any more
    assert len(slow.calls) <= 2  # the first batch ran (and stopped early); the queued ones were dropped


def test_work_that_cannot_finish_is_refused_at_once_and_every_request_is_answered(caplog):
    """4 requests in flight whose one batch (1.3 s) would outlast the 1 s deadline: micro-batches are sized
    from the measured cost, work that cannot finish gets 503 + Retry-After at once, the client retries,
    every abstract gets its title, and no decoding is stopped at a deadline."""
    import logging

    from helpers import serving

    from chatgentitle.titling.remote import RemoteTitles

    slow = FakeGenerator(delay_seconds=0.1, seconds_per_abstract=0.3)  # 0.4 s alone, 1.3 s for 4
    abstracts = [f"paper {i} text" for i in range(4)]
    caplog.set_level(logging.DEBUG)
    with serving(create_app([slow], request_timeout=1.0)) as url:
        remote = RemoteTitles(url + "/v1", "fake", chat=True, concurrency=4, backoff_seconds=0.05)
        found = remote.generate(abstracts)
    assert [titles[0] for titles in found] == [f"Paper {i} Text Candidate 0" for i in range(4)]
    assert remote.retries >= 1  # some were refused early and retried after Retry-After
    assert slow.stopped_early == 0  # no batch ran into its deadline
    assert all(0.1 + 0.3 * size <= 1.0 for size, _ in slow.calls)
    assert "Future exception was never retrieved" not in caplog.text


def test_a_request_stopped_at_its_deadline_leaves_no_unretrieved_future(caplog):
    import gc
    import logging

    caplog.set_level(logging.DEBUG)
    slow = FakeGenerator(delay_seconds=3.0)
    client = TestClient(create_app(slow, request_timeout=0.3))
    assert client.post("/v1/titles", json={"abstract": ABSTRACT}).status_code == 503
    assert slow.stopped.wait(10)
    client.close()
    gc.collect()
    assert "Future exception was never retrieved" not in caplog.text


def test_queued_work_beyond_the_deadline_is_refused_once_the_cost_is_known():
    slow = FakeGenerator(seconds_per_abstract=0.3)
    client = TestClient(create_app(slow, request_timeout=1.5))
    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda i: (client.post("/v1/titles", json={"abstract": f"p {i}"}), time.monotonic()),
                                range(12)))
    ok = [r for r, _ in answers if r.status_code == 200]
    refused = [(r, t) for r, t in answers if r.status_code == 503]
    assert ok and refused and len(ok) + len(refused) == 12
    for response, _ in refused:  # refused as soon as the first batch had measured the cost, not at the deadline
        assert "deadline allows" in response.json()["detail"] and int(response.headers["Retry-After"]) >= 1
    assert slow.stopped_early == 0
    assert max(t for _, t in refused) - began < 1.0


class Broken(FakeGenerator):
    """A model whose titling fails: a bug (ZeroDivisionError) or an engine behind an endpoint (RemoteError)."""

    def __init__(self, error: Exception):
        super().__init__()
        self.error = error

    def generate(self, abstracts, options=None, instruction=None, should_stop=None):
        raise self.error


def test_a_failing_model_is_a_documented_500_with_a_request_id_and_the_log_has_the_traceback(caplog):
    with TestClient(create_app([Broken(ZeroDivisionError("secret detail"))])) as client:
        answer = client.post("/v1/titles", json={"abstract": "we propose a method"})
    assert answer.status_code == 500 and "secret detail" not in answer.text
    request_id = answer.json()["detail"].split("request ")[1].rstrip(")")
    failed = next(r for r in caplog.records if request_id in r.getMessage())
    assert failed.exc_info and failed.exc_info[0] is ZeroDivisionError
    schema = client.get("/openapi.json").json()["paths"]["/v1/titles"]["post"]["responses"]
    assert {"400", "429", "500", "502"} <= set(schema)


def test_an_engine_failure_is_502_and_an_unknown_model_404():
    from chatgentitle.titling.remote import RemoteError

    with TestClient(create_app([Broken(RemoteError("http://engine: HTTP 500"))])) as client:
        answer = client.post("/v1/titles", json={"abstract": "we propose a method"})
        assert answer.status_code == 502 and "HTTP 500" in answer.json()["detail"]
        assert client.post("/v1/titles", json={"abstract": "x y", "model": "nope"}).status_code == 404


def test_a_body_that_is_not_utf8_is_400_and_one_that_is_not_json_422():
    """Both documented, both an ErrorBody."""
    with TestClient(create_app([FakeGenerator()])) as client:
        for body, status in ((b'{"abstract": "\xff\xfe"}', 400), (b"{not json", 422)):
            answer = client.post("/v1/titles", content=body, headers={"content-type": "application/json"})
            assert answer.status_code == status and "detail" in answer.json()
