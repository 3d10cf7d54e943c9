"""Titles the author steers: phrases that must appear, a target length, options that differ, and a verdict
on the author's own title, through the search itself, the CLI and the API (the browser: test_web.py)."""

from __future__ import annotations

import httpx
import pytest
from click.testing import CliRunner
from helpers import SERVER_KEY, WORDS

from chatgentitle.cli import cli
from chatgentitle.decoding.options import GenerationOptions
from chatgentitle.errors import OptionError
from chatgentitle.titling.ranking import Candidate, Verdict, contains, spread

ABSTRACTS = [" ".join(WORDS.split()[i:i + 25]) for i in range(0, 50, 10)]


def test_contains_means_whole_words_in_any_case():
    assert contains("Deep Graph Models", "graph") and contains("A graph-based method", "Graph")
    assert contains("NGC  3351 bars", "NGC 3351")  # any run of spaces between the words
    assert not contains("Graphs and models", "graph") and not contains("subgraph models", "graph")


@pytest.mark.parametrize("phrases", [("graph",), ("neural networks",), ("quantum", "deep models")])
def test_every_searched_title_holds_every_phrase(tiny_generator, phrases):
    """The search's own titles (before any filter) hold each phrase, and there are num_beams of them."""
    from chatgentitle.decoding.steering import Steering, steered_search

    options = GenerationOptions(include=phrases, max_new_tokens=12)
    tokenizer = tiny_generator.tokenizer
    found = steered_search(tiny_generator.model, *tiny_generator.encode(ABSTRACTS), Steering(tokenizer, options),
                           num_beams=4, max_new_tokens=12, eos_token_id=tokenizer.eos_token_id)
    for titles in found:
        assert len(titles) == 4
        for tokens in titles:
            title = tokenizer.decode(tokens, skip_special_tokens=True)
            assert all(contains(title, phrase) for phrase in phrases), (title, phrases)


def test_plain_titles_lack_the_phrase_that_steered_ones_hold(tiny_generator):
    """The phrase is the search's doing: the model alone does not write it."""
    plain = tiny_generator(ABSTRACTS, GenerationOptions(max_new_tokens=12))
    steered = tiny_generator(ABSTRACTS, GenerationOptions(include=("quantum field theory",), max_new_tokens=12))
    assert not any(contains(t, "quantum field theory") for t in plain)
    assert all(contains(t, "quantum field theory") for t in steered)


def test_a_phrase_longer_than_the_budget_is_refused(tiny_generator):
    with pytest.raises(OptionError, match="max_new_tokens"):
        tiny_generator(ABSTRACTS[:1], GenerationOptions(include=("graph neural networks deep models",),
                                                         max_new_tokens=5))


def test_a_target_length_moves_the_length(tiny_generator):
    """--words N: titles nearer N words than the plain search's, from both sides."""
    def lengths(options):
        return [len(t.split()) for t in tiny_generator(ABSTRACTS, options)]

    plain = lengths(GenerationOptions(max_new_tokens=16))
    for target in (4, 12):
        steered = lengths(GenerationOptions(words=target, max_new_tokens=16))
        assert sum(abs(n - target) for n in steered) < sum(abs(n - target) for n in plain), (target, plain, steered)


def test_steering_needs_the_beam_search():
    for other in ({"do_sample": True}, {"consensus": 4}, {"no_repeat_ngram_size": 3}):
        with pytest.raises(OptionError, match="beam search"):
            GenerationOptions(include=("graph",), **other)
        with pytest.raises(OptionError, match="beam search"):
            GenerationOptions(words=8, **other)


def test_spread_keeps_the_first_and_passes_over_titles_like_it():
    rest = [Candidate("Graph Neural Networks for Molecular Properties"), Candidate("Graph Networks for Molecules"),
            Candidate("Learning Molecular Properties with Message Passing")]
    first = Candidate("Graph Neural Networks for Molecular Property Prediction")
    chosen = spread(first, rest, 3)
    assert chosen[0] is first and chosen[1].title == "Learning Molecular Properties with Message Passing"
    assert [c.title for c in spread(first, rest, 3, weight=0.0)] == [first.title, *(c.title for c in rest[:2])]


def test_the_first_shown_title_is_the_best_ranked_of_the_first_n(fake_generator):
    """Spreading the list over the pool leaves its first title where ranking put it."""
    from chatgentitle.titling.generator import candidates
    from chatgentitle.titling.ranking import Ranker

    pool = ["graph models", "graph neural models", "graph neural networks for graphs", "graph neural",
            "deep graph neural networks for graph data", "graph neural networks"]
    abstract = "graph neural networks for graph data with deep models"
    ranker = Ranker()
    best_of_head = ranker.rank(abstract, pool[:3])[0].title
    shown = candidates(abstract, pool, ranker, shown=3)
    assert shown[0].title == best_of_head and len(shown) == 3 and len({c.title for c in shown}) == 3


def test_log_probs_are_the_models_own(tiny_generator):
    """Batched and padded, each title's mean log-probability equals one unpadded forward pass of its own."""
    import torch

    from chatgentitle.data.prompt import encode_prompt

    g, abstract = tiny_generator, ABSTRACTS[0]
    titles = ["graph neural networks", "we propose a novel method for learning", "quantum"]
    batched = g.log_probs(abstract, titles)
    prompt = encode_prompt(g.template, g.tokenizer, abstract, None, g.max_prompt_tokens)
    for title, got in zip(titles, batched, strict=True):
        ids = g.tokenizer(g.template.title_prefix + title, add_special_tokens=False)["input_ids"]
        ids += [g.tokenizer.eos_token_id]
        with torch.no_grad():
            logits = g.model(input_ids=torch.tensor([prompt + ids])).logits[0, len(prompt) - 1:-1]
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids)[:, None]).mean().item()
        assert got == pytest.approx(expected, abs=1e-5)


def test_verdict_ranks_by_log_prob_and_places_the_title_on_the_published_scale():
    pool = [Candidate("A", log_prob=-0.5), Candidate("B", log_prob=-2.0), Candidate("C", log_prob=-1.0)]
    mine = Candidate("Mine", log_prob=-1.5, score=0.4)
    verdict = Verdict.judge(mine, pool)
    assert (verdict.rank, verdict.of, verdict.better, verdict.score, verdict.percentile) == (3, 4, ["A", "C"], 0.4,
                                                                                             None)
    published = [-3.0, -2.5, -2.0, -1.8, -1.6, -1.2, -1.0, -0.9, -0.7, -0.4]  # ascending
    assert Verdict.judge(mine, pool, published).percentile == 50.0  # above five of the ten


def test_generate_judges_your_title(run_dir):
    result = CliRunner().invoke(cli, ["generate", ABSTRACTS[0], "--model", str(run_dir), "--dtype", "fp32",
                                      "-n", "2", "--title", "graph neural networks", "--json"])
    assert result.exit_code == 0, result.output
    import json

    body = json.loads(result.output)
    verdict = body["verdict"]
    assert verdict["title"] == "graph neural networks" and verdict["of"] > len(body["candidates"]) + 1  # whole pool
    assert verdict["rank"] == len(verdict["better"]) + 1 and "not the score's" in body["order"]
    assert all(c["log_prob"] is not None for c in body["candidates"])


def test_a_title_is_judged_against_the_whole_pool_even_with_one_candidate(run_dir):
    result = CliRunner().invoke(cli, ["generate", ABSTRACTS[0], "--model", str(run_dir), "--dtype", "fp32",
                                      "--title", "graph neural networks", "--json"])
    assert result.exit_code == 0, result.output
    import json

    body = json.loads(result.output)
    assert len(body["candidates"]) == 1 and body["verdict"]["of"] > 2


BAD_STEERING = {  # name: (arguments, words the one error line holds)
    "empty phrase": (["--include", ""], ["include", "1 to 100 characters"]),
    "20 phrases": ([a for i in range(20) for a in ("--include", f"w{i}")], ["at most 5 phrases"]),
    "phrase over the budget": (["--include", "graph neural networks deep models", "--max-new-tokens", "4"],
                               ["max_new_tokens", "4"]),
    "words 0": (["--words", "0"], ["3<=x<=30"]),
    "words 100": (["--words", "100"], ["3<=x<=30"]),
    "steering a sample": (["--include", "graph", "--do-sample"], ["beam search"]),
}


@pytest.mark.parametrize("name", list(BAD_STEERING))
def test_bad_steering_is_one_clear_line(name, run_dir):
    args, words = BAD_STEERING[name]
    result = CliRunner().invoke(cli, ["generate", ABSTRACTS[0], "--model", str(run_dir), "--dtype", "fp32", *args])
    assert result.exit_code in (1, 2), result.output
    error = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(error) == 1 and all(word in error[0] for word in words), result.stderr
    assert "Traceback" not in result.output


def _post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(url + path, json=body, headers={"Authorization": f"Bearer {SERVER_KEY}"}, timeout=60)


def test_api_steers_and_judges(tiny_server):
    options = {"include": ["deep models"], "max_new_tokens": 12, "num_candidates": 2}
    answer = _post(tiny_server, "/titles", {"abstract": ABSTRACTS[1], "options": options,
                                            "title": "graph neural networks"})
    assert answer.status_code == 200, answer.text
    result = answer.json()["results"][0]
    assert all(contains(c["title"], "deep models") for c in result["candidates"])
    assert result["verdict"]["title"] == "graph neural networks" and result["verdict"]["of"] >= 3
    chat = _post(tiny_server, "/chat/completions", {"model": "run", "include": ["quantum"], "max_tokens": 12,
                                                    "messages": [{"role": "user", "content": ABSTRACTS[2]}]})
    assert chat.status_code == 200, chat.text
    assert contains(chat.json()["choices"][0]["message"]["content"], "quantum")


@pytest.mark.parametrize(("path", "body", "words"), [
    ("/titles", {"abstract": "x", "options": {"include": [""]}}, "include"),
    ("/titles", {"abstract": "x", "options": {"include": [f"w{i}" for i in range(20)]}}, "include"),
    ("/titles", {"abstract": "x", "options": {"include": ["graph neural networks deep"], "max_new_tokens": 3}},
     "max_new_tokens"),
    ("/titles", {"abstract": "x", "options": {"words": 0}}, "words"),
    ("/titles", {"abstract": "x", "options": {"words": 100}}, "words"),
    ("/titles", {"abstract": "x", "options": {"words": 8, "do_sample": True}}, "beam search"),
    ("/titles", {"abstracts": ["x", "y"], "title": "mine"}, "one 'abstract'"),
    ("/chat/completions", {"model": "run", "include": ["graph"], "temperature": 0.7,
                           "messages": [{"role": "user", "content": "x"}]}, "beam search"),
])
def test_api_refuses_bad_steering(tiny_server, path, body, words):
    answer = _post(tiny_server, path, body)
    assert answer.status_code == 422 and words in answer.text, answer.text


@pytest.fixture(scope="module")
def padded_generator(tiny_generator):
    """The tiny model with its vocabulary padded past its tokenizer's (as many checkpoints pad to 64)."""
    import copy

    from chatgentitle.titling.generator import TitleGenerator

    model = copy.deepcopy(tiny_generator.model)
    model.resize_token_embeddings(len(tiny_generator.tokenizer) + 13)
    assert model.config.vocab_size > len(tiny_generator.tokenizer)
    return TitleGenerator(model, tiny_generator.tokenizer, tiny_generator.template,
                          tiny_generator.max_prompt_tokens, name="padded")


VOCABULARY = sorted(set(WORDS.lower().split()) - {"###", ":"})


@pytest.mark.parametrize("which", ["tiny", "padded"])
def test_steering_holds_every_phrase_or_refuses(which, tiny_generator, padded_generator):
    """Random phrases (in random case) and budgets: each title holds every phrase, or the request is
    refused with an OptionError; never an empty title."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    generator = tiny_generator if which == "tiny" else padded_generator
    phrase = st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=3).map(" ".join)
    cased = st.tuples(phrase, st.sampled_from([str, str.title, str.upper, str.capitalize])).map(lambda p: p[1](p[0]))

    @settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(phrases=st.lists(cased, min_size=1, max_size=3), budget=st.integers(1, 12),
           words=st.one_of(st.none(), st.integers(3, 8)), beams=st.integers(1, 4))
    def check(phrases, budget, words, beams):
        try:
            options = GenerationOptions(include=tuple(phrases), max_new_tokens=budget, words=words, num_beams=beams)
            found = generator.generate(ABSTRACTS[:2], options)
        except OptionError:
            return  # refused up front (or found no title within the budget): a clear error, never a bad title
        for titles in found:
            assert titles and all(titles), (phrases, budget)
            assert all(contains(t, p) for t in titles for p in phrases), (titles, phrases)

    check()


def test_a_phrase_completed_by_the_last_token_is_kept(tiny_generator):
    """The budget is exactly the phrase and the end: the phrase's last token is the search's last step."""
    phrase = "graph neural networks"
    options = GenerationOptions(include=(phrase,), max_new_tokens=4, num_beams=2)
    assert all(contains(title, phrase) for title in tiny_generator(ABSTRACTS, options))


def test_a_phrase_is_found_in_the_case_the_title_writes_it(tiny_generator):
    """The tiny vocabulary has "Title" and "title": asked in lower case, a capitalised spelling also counts."""
    from chatgentitle.decoding.steering import Steering

    spellings = Steering(tiny_generator.tokenizer, GenerationOptions(include=("title",))).spellings[0]
    assert len(spellings) == 2
