"""GenerationOptions: one value that says how titles are decoded, and the mode it decodes in."""

from __future__ import annotations

import enum
import typing
from dataclasses import dataclass, fields

from chatgentitle.config import bounded, phrase_limits, phrases
from chatgentitle.errors import OptionError


class DecodingMode(enum.Enum):
    """How a GenerationOptions value is decoded (transformers' GenerationConfig.get_generation_mode())."""

    GREEDY = "greedy"
    SAMPLE = "sample"
    BEAM_SEARCH = "beam_search"  # the shared-prefill search (decoding.beam_search)
    CONSTRAINED_BEAM_SEARCH = "constrained_beam_search"  # with no_repeat_ngram_size: transformers' search
    CONSENSUS = "consensus"  # beams + samples of every model, the candidate that agrees most
    STEERED = "steered_beam_search"  # phrases that must appear, a target length (steering.steered_search)

    @property
    def uses_members(self) -> bool:
        """Whether an ensemble run's other members take part (and so must be in memory)."""
        return self is DecodingMode.CONSENSUS


_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


BEST_TITLES = 32  # consensus samples per model for the best titles (`label`'s default; docs/search.md)


@dataclass
class GenerationOptions:
    """How titles are decoded; every field takes effect. The bounds keep one request's work bounded
    (beams x candidates x new tokens); the API answers 422 outside them, the CLI and web UI use them."""

    max_new_tokens: int = bounded(40, 1, 64)
    """Upper bound on generated tokens per title."""
    num_beams: int = bounded(4, 1, 8)
    """Beam search width (1: greedy, or sampling with do_sample). 4, as the seed project decoded: better
    titles than greedy decoding at about twice the time (docs/search.md, Decoding)."""
    do_sample: bool = False
    """Sample instead of beam/greedy decoding (num_beams is then not used)."""
    temperature: float = bounded(0.7, 0.01, 2.0)
    """Sampling temperature (with do_sample)."""
    top_p: float = bounded(0.9, 0.01, 1.0)
    """Nucleus sampling: keep the smallest set of tokens with this much probability (with do_sample)."""
    top_k: int = bounded(50, 0, 200)
    """Sample among the k most likely tokens (0: all; with do_sample)."""
    repetition_penalty: float = bounded(1.1, 0.5, 2.0)
    """>1 discourages repeated tokens (titles that say the same thing twice)."""
    length_penalty: float = bounded(1.0, 0.0, 2.0)
    """Beam search: a finished title's score is its log-probability / length**length_penalty; below 1
    favours shorter titles, above 1 longer ones."""
    consensus: int = bounded(0, 0, 64)
    """Draw this many samples per model besides the beams and return the candidate that agrees most (mean
    ROUGE-L) with all of them (minimum Bayes risk); with an ensemble run every member takes part. 32
    (BEST_TITLES) is `label`'s teacher; several times slower than beams, and on today's default within
    noise of them (docs/search.md, Decoding). 0: the most likely beam. Not used with do_sample or
    no_repeat_ngram_size (those decode as they say)."""
    no_repeat_ngram_size: int = bounded(0, 0, 8)
    """Never repeat a sequence of this many tokens within a title (0: off)."""
    num_candidates: int = bounded(1, 1, 8)
    """Distinct titles to return per abstract (beam search or sampling provide them)."""
    include: tuple[str, ...] = phrases(5, 100)
    """Phrases every title must contain, as whole words (case-insensitive; written as given), by
    lexically constrained beam search. Up to 5 phrases of up to 100 characters that fit in
    max_new_tokens together."""
    words: int | None = bounded(None, 3, 30)
    """Target title length in words (soft: titles closer to it score better in the beam search)."""

    @classmethod
    def overrides(cls, pairs: list[str]) -> dict:
        """Fields from "name=value" texts (eval's NAME=RUN_DIR,num_beams=1,words=8,include=dark matter): a
        phrases field takes one phrase per pair and may repeat (include=A,include=B C)."""
        types, found = typing.get_type_hints(cls), {}
        for pair in pairs:
            name, _, value = pair.partition("=")
            if name not in types or not value:
                raise OptionError(f"{pair!r}: give OPTION=VALUE with one of {', '.join(types)}")
            if "phrases" in cls.__dataclass_fields__[name].metadata:
                found[name] = (*found.get(name, ()), value)
                continue
            kind = next((t for t in typing.get_args(types[name]) if t is not type(None)), types[name])  # int | None
            try:
                found[name] = _BOOLS[value.lower()] if kind is bool else kind(value)
            except (KeyError, ValueError):
                raise OptionError(f"{pair!r}: {name} takes a {kind.__name__}") from None
        return found

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if "range" in f.metadata and not (value is None and f.default is None):
                low, high = f.metadata["range"]
                if not low <= value <= high:
                    raise OptionError(f"{f.name} must be between {low} and {high}")
        self.include = tuple(self.include)
        most, chars = phrase_limits(type(self), "include")
        if len(self.include) > most:
            raise OptionError(f"include: at most {most} phrases, {len(self.include)} given")
        for phrase in self.include:
            if not phrase.strip() or len(phrase) > chars:
                raise OptionError(f"include: a phrase has 1 to {chars} characters, {phrase[:20]!r} has {len(phrase)}")
        if (self.include or self.words) and (self.do_sample or self.no_repeat_ngram_size or self.consensus):
            raise OptionError("include and words steer the beam search: not with do_sample, "
                              "no_repeat_ngram_size or consensus")

    @property
    def mode(self) -> DecodingMode:
        """The one place that turns these options into a way of decoding; every front end asks it."""
        if self.do_sample:
            return DecodingMode.SAMPLE
        if self.include or self.words:
            return DecodingMode.STEERED
        if self.no_repeat_ngram_size:
            return DecodingMode.CONSTRAINED_BEAM_SEARCH if self.beams > 1 else DecodingMode.GREEDY
        if self.consensus:
            return DecodingMode.CONSENSUS
        return DecodingMode.BEAM_SEARCH if self.beams > 1 else DecodingMode.GREEDY

    @property
    def streams(self) -> bool:
        """Whether the title can be shown as it grows: one candidate, decoded token by token."""
        return self.mode in (DecodingMode.GREEDY, DecodingMode.SAMPLE) and self.num_candidates == 1

    @property
    def pool(self) -> int:
        """Titles decoded to show num_candidates of them. For several, four times as many: near-copies are
        dropped and the shown ones spread over the pool (generate.candidates); beam search fills it with 2n
        beams and 2n samples (decoding.decode), sampling with 4n samples."""
        return 4 * self.num_candidates if self.num_candidates > 1 else 1

    @property
    def beams(self) -> int:
        """Beam width without sampling: several candidates come from 2n beams."""
        return max(self.num_beams, self.pool // 2)

    def generate_kwargs(self) -> dict:
        """transformers' generate() arguments (greedy, sampling, beams with no_repeat_ngram_size)."""
        wanted = self.pool
        kwargs = {"max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty,
                  "do_sample": self.do_sample, "num_beams": self.num_beams}
        if self.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        if not self.do_sample and self.num_beams > 1:
            kwargs["length_penalty"] = self.length_penalty
        if self.do_sample:  # plain sampling: the (default) beam width does not apply
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, num_beams=1)
        else:
            kwargs["num_beams"] = self.beams
        beams = kwargs["num_beams"]
        # every beam comes back: the best one that does not repeat itself is chosen (see generate)
        kwargs["num_return_sequences"] = wanted if beams == 1 else beams
        return kwargs
