"""What a title source promises (`TitleSource`: TitleGenerator, RemoteTitles, the tests' stand-in). Each
says what it supports (defaults, fixed, judges); a request's options are built over its defaults
(`options_for`) and checked once (`check_supported`, called by generator.titles and by serve's
TitleService before anything is queued), so that no front end drops an option silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Protocol

from chatgentitle.decoding.options import GenerationOptions
from chatgentitle.errors import OptionError


class TitleSource(Protocol):
    """What writes titles. Front ends use generator.titles(), never a backend's internals."""

    name: str
    instruction: str
    """The instruction of its prompt (what the web UI's Instruction box starts with)."""
    defaults: GenerationOptions
    """The options a request starts from: the fields it gives go over these (`options_for`)."""
    fixed: tuple[str, ...]
    """GenerationOptions fields it cannot honour: they must keep their value in `defaults`."""
    judges: bool
    """Whether it can judge a given title (log_probs)."""
    verdict_scale: list[float] | None
    """Ascending log-probabilities of published titles for their own abstracts (Verdict.percentile), or None."""
    made_by: dict
    """What its titles depend on (base model, adapter weights, prompt, precision; or the endpoint and its
    model): a file of its titles records it, so that no other model continues that file."""

    def generate(self, abstracts: list[str], options: GenerationOptions | None = None,
                 instruction: str | None = None, should_stop: Callable[[], bool] | None = None) -> list[list[str]]:
        """Distinct candidate titles per abstract, best first: one for num_candidates 1; for more, a pool of up
        to `options.pool` that `titles()` chooses the shown ones from. `should_stop` is asked between
        decoding steps: when it says yes, decoding ends there."""

    def complete(self, prompts: list[str], options: GenerationOptions | None = None,
                 should_stop: Callable[[], bool] | None = None) -> list[list[str]]:
        """At most num_candidates titles for whole prompts in the model's template (what OpenAI completions
        clients send)."""

    def stream(self, abstract: str, options: GenerationOptions | None = None, instruction: str | None = None,
               should_stop: Callable[[], bool] | None = None) -> Iterator[str]:
        """One title as it grows (for options that stream: see GenerationOptions.streams)."""

    def count_tokens(self, text: str, as_prompt: bool = False) -> int:
        """Tokens of a title, or of the whole prompt made from an abstract (as_prompt), for usage counts."""

    def log_probs(self, abstract: str, titles: list[str], instruction: str | None = None) -> list[float]:
        """Each title's mean log-probability per token under the model, after this abstract's prompt."""


class Unsupported(OptionError):
    """Options that a title source cannot honour; the message names them (422 on the API)."""


def options_for(source: TitleSource, given: dict) -> GenerationOptions:
    """A request's options: the fields it gives over the source's defaults (an endpoint decodes greedily
    unless asked to sample; a model in process, by 4-beam search)."""
    return replace(source.defaults, **given)


def check_supported(source: TitleSource, options: GenerationOptions, judging: bool = False) -> None:
    """Unsupported, naming every option asked of `source` that it cannot honour (and `title` when a title is
    to be judged by a source that cannot): the one check behind every front end (titles() and serve's
    TitleService), so that nothing asked is silently dropped."""
    refused = [f"{name}={getattr(options, name)!r}" for name in source.fixed
               if getattr(options, name) != getattr(source.defaults, name)]
    if judging and not source.judges:
        refused.append("title (judging needs the model's log-probabilities)")
    if refused:
        raise Unsupported(f"model {source.name!r} cannot honour {', '.join(refused)}: it decodes "
                          "greedily or by sampling (temperature, top_p), n titles; leave those options out")
