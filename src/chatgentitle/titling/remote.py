"""Titles through any OpenAI-compatible server: our own `serve`, vLLM with our adapters, llama.cpp's
server, a hosted chat model. A `TitleSource` like TitleGenerator, so every front end can use it.

    source = RemoteTitles("http://127.0.0.1:8000/v1", "title-lora")                # completions + our prompt
    source = RemoteTitles("https://api.openai.com/v1", "gpt-4o-mini", chat=True, api_key=...)
    titles(source, ["We propose ..."])

Completions send the prompt rendered from the run's template (what the adapter was trained on);
chat sends the instruction as the system message and the abstract as the user message (what chat
models and our `serve` expect). Requests run `concurrency` at a time; 429, 5xx, timeouts and
dropped connections are retried with exponential backoff, honouring Retry-After.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import httpx

from chatgentitle.crawl.http import GiveUp, HttpClient, user_agent
from chatgentitle.data.prompt import SERVED_TEMPLATE, PromptTemplate
from chatgentitle.decoding.options import GenerationOptions
from chatgentitle.errors import ChatGenTitleError
from chatgentitle.titling.ranking import pick_titles

API_KEY_ENV = "CHATGENTITLE_ENDPOINT_KEY"  # or OPENAI_API_KEY


class RemoteError(ChatGenTitleError, RuntimeError):
    """The server refused the request for good (4xx other than 429), or kept failing."""


class RemoteTitles:
    """A TitleSource backed by an OpenAI-compatible HTTP endpoint."""

    defaults = GenerationOptions(num_beams=1)  # greedy, unless asked to sample
    # what the OpenAI API has no field for: these options keep their defaults (titles.check_supported)
    fixed = ("num_beams", "consensus", "top_k", "no_repeat_ngram_size", "length_penalty", "include", "words")
    judges = False  # no log-probabilities of given text
    verdict_scale = None
    guide = None  # a paper index: the related papers' titles a template that reads them gets (completions)

    def __init__(self, endpoint: str, model: str, *, api_key: str | None = None, chat: bool = False,
                 template: PromptTemplate | None = None, concurrency: int = 4, timeout_seconds: float = 120.0,
                 max_retries: int = 6, backoff_seconds: float = 1.0):
        self.endpoint = endpoint.rstrip("/")
        self.name = model
        self.chat = chat
        self.template = template or PromptTemplate.load(SERVED_TEMPLATE)
        self.concurrency = concurrency
        # what this side can know: where the server is, the model it serves under that name (what it serves
        # under the name may still change unseen) and how it is asked
        self.made_by = {"endpoint": self.endpoint, "model": model, "chat": chat, "template": self.template.record()}
        key = api_key or os.environ.get(API_KEY_ENV) or os.environ.get("OPENAI_API_KEY")
        headers = {"User-Agent": user_agent("title generation")} | ({"Authorization": f"Bearer {key}"} if key else {})
        self.client = HttpClient(timeout_seconds=timeout_seconds, max_retries=max_retries,
                                 backoff_seconds=backoff_seconds, max_backoff_seconds=30,
                                 max_retry_after_seconds=60, headers=headers, max_connections=concurrency,
                                 retry_unreachable=False)

    @property
    def instruction(self) -> str:
        return self.template.instruction

    @property
    def retries(self) -> int:
        return self.client.retries

    # ------------------------------------------------------------------ TitleSource
    def generate(self, abstracts: list[str], options: GenerationOptions | None = None,
                 instruction: str | None = None, should_stop: Callable[[], bool] | None = None) -> list[list[str]]:
        return self._map(partial(self._titles, options=options or self.defaults, instruction=instruction),
                         abstracts)

    def complete(self, prompts: list[str], options: GenerationOptions | None = None,
                 should_stop: Callable[[], bool] | None = None) -> list[list[str]]:
        return self._map(partial(self._completions, options=options or self.defaults), prompts)

    def stream(self, abstract: str, options: GenerationOptions | None = None, instruction: str | None = None,
               should_stop: Callable[[], bool] | None = None) -> Iterator[str]:
        yield self.generate([abstract], options, instruction)[0][0]  # whole: one request, one title

    def count_tokens(self, text: str, as_prompt: bool = False) -> int:
        return len(text.split())  # the server's tokenizer is not ours; words are an honest proxy

    def log_probs(self, abstract: str, titles: list[str], instruction: str | None = None) -> list[float]:
        raise RemoteError("judging a title needs the model's log-probabilities of given text, which an "
                          "OpenAI-compatible endpoint does not give: run the model in process")

    # ------------------------------------------------------------------ HTTP
    def _map(self, request, texts: list[str]) -> list[list[str]]:
        with ThreadPoolExecutor(self.concurrency) as pool:  # results in input order
            return list(pool.map(request, texts))

    def _titles(self, abstract: str, options: GenerationOptions, instruction: str | None) -> list[str]:
        if not self.chat:
            related = self.template.related_papers(self.guide, abstract)
            return self._completions(self.template.render(abstract, instruction, related), options)
        body = self._body(options) | {"messages": [{"role": "system", "content": instruction or self.instruction},
                                                   {"role": "user", "content": abstract}]}
        texts = [c["message"]["content"] or "" for c in self._request("/chat/completions", body)["choices"]]
        return pick_titles(texts, options.num_candidates)

    def _completions(self, prompt: str, options: GenerationOptions) -> list[str]:
        # self-hosted engines (vLLM, llama.cpp) take the repetition penalty; hosted chat APIs do not
        body = self._body(options) | {"prompt": prompt, "stop": ["\n"],
                                      "repetition_penalty": options.repetition_penalty}
        texts = [c["text"] for c in self._request("/completions", body)["choices"]]
        return pick_titles(texts, options.num_candidates)

    def _body(self, options: GenerationOptions) -> dict:
        body = {"model": self.name, "max_tokens": options.max_new_tokens, "n": options.num_candidates,
                "temperature": options.temperature if options.do_sample else 0.0}
        return body | ({"top_p": options.top_p} if options.do_sample else {})

    def _request(self, path: str, body: dict) -> dict:
        try:
            return self.client.send("POST", self.endpoint + path, json=body, check=partial(_json, path=path))
        except GiveUp as err:
            raise RemoteError(str(err)) from None

    def close(self) -> None:
        self.client.close()


def _json(response: httpx.Response, path: str) -> dict:
    if response.status_code >= 400:
        raise RemoteError(f"{response.url}: HTTP {response.status_code}: {response.text[:300]}")
    return response.json()
