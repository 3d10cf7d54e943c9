"""What a title source promises: each says what it supports (TitleSource.defaults, .fixed, .judges in
generator.py); a request's options are built over its defaults (`options_for`) and checked once
(`check_supported`, called by generator.titles and by serve's TitleService before anything is queued),
so that no front end drops an option silently.
"""

from __future__ import annotations

from dataclasses import replace

from chatgentitle.errors import OptionError


class Unsupported(OptionError):
    """Options that a title source cannot honour; the message names them (422 on the API)."""


def options_for(source, given: dict):
    """A request's options: the fields it gives over the source's defaults (an endpoint decodes greedily
    unless asked to sample; a model in process, by 4-beam search)."""
    return replace(source.defaults, **given)


def check_supported(source, options, judging: bool = False) -> None:
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
