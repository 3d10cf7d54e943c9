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
from tenacity import RetryCallState, retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from chatgentitle.config import GenerationOptions
from chatgentitle.generate import pick_titles
from chatgentitle.prompt import PromptTemplate

API_KEY_ENV = "CHATGENTITLE_ENDPOINT_KEY"  # or OPENAI_API_KEY


class RemoteError(RuntimeError):
    """The server refused the request for good (4xx other than 429), or kept failing."""


class _Busy(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class RemoteTitles:
    """A TitleSource backed by an OpenAI-compatible HTTP endpoint."""

    def __init__(self, endpoint: str, model: str, *, api_key: str | None = None, chat: bool = False,
                 template: PromptTemplate | None = None, concurrency: int = 4, timeout_seconds: float = 120.0,
                 max_retries: int = 6, backoff_seconds: float = 1.0):
        self.endpoint = endpoint.rstrip("/")
        self.name = model
        self.chat = chat
        self.template = template or PromptTemplate.load("compact")
        self.concurrency = concurrency
        key = api_key or os.environ.get(API_KEY_ENV) or os.environ.get("OPENAI_API_KEY")
        self.client = httpx.Client(timeout=timeout_seconds, headers={"Authorization": f"Bearer {key}"} if key else {},
                                   limits=httpx.Limits(max_connections=concurrency))
        self.retries = 0
        self.backoff_seconds = backoff_seconds
        self._post = retry(retry=retry_if_exception_type((_Busy, httpx.TransportError)), wait=self._wait,
                           stop=stop_after_attempt(max_retries), reraise=True,
                           before_sleep=self._count_retry)(self._post_once)

    @property
    def instruction(self) -> str:
        return self.template.instruction

    # ------------------------------------------------------------------ TitleSource
    def generate(self, abstracts: list[str], options: GenerationOptions | None = None,
                 instruction: str | None = None, should_stop: Callable[[], bool] | None = None,
                 rendered: bool = False) -> list[list[str]]:
        options = options or GenerationOptions()
        with ThreadPoolExecutor(self.concurrency) as pool:  # results in input order
            return list(pool.map(partial(self._titles, options=options, instruction=instruction, rendered=rendered),
                                 abstracts))

    def stream(self, abstract: str, options: GenerationOptions | None = None,
               instruction: str | None = None) -> Iterator[str]:
        yield self.generate([abstract], options, instruction)[0][0]  # whole: one request, one title

    def count_tokens(self, text: str, as_prompt: bool = False) -> int:
        return len(text.split())  # the server's tokenizer is not ours; words are an honest proxy

    # ------------------------------------------------------------------ HTTP
    def _titles(self, abstract: str, options: GenerationOptions, instruction: str | None,
                rendered: bool = False) -> list[str]:
        body = {"model": self.name, "max_tokens": options.max_new_tokens, "n": options.num_candidates,
                "temperature": options.temperature if options.do_sample else 0.0}
        if options.do_sample:
            body["top_p"] = options.top_p
        if self.chat and not rendered:
            body["messages"] = [{"role": "system", "content": instruction or self.instruction},
                                {"role": "user", "content": abstract}]
            texts = [c["message"]["content"] or "" for c in self._request("/chat/completions", body)["choices"]]
        else:  # self-hosted engines (vLLM, llama.cpp) take the repetition penalty; hosted chat APIs do not
            body.update(prompt=abstract if rendered else self.template.render(abstract, instruction), stop=["\n"],
                        repetition_penalty=options.repetition_penalty)
            texts = [c["text"] for c in self._request("/completions", body)["choices"]]
        return pick_titles(texts, options.num_candidates)

    def _request(self, path: str, body: dict) -> dict:
        try:
            return self._post(path, body)
        except (_Busy, httpx.TransportError) as err:
            raise RemoteError(f"giving up on {self.endpoint}{path} after {self.retries} retries: {err}") from None

    def _post_once(self, path: str, body: dict) -> dict:
        try:
            response = self.client.post(self.endpoint + path, json=body)
        except httpx.TimeoutException as err:
            raise _Busy(f"timed out ({err})") from None
        if response.status_code == 429 or response.status_code >= 500:
            after = response.headers.get("Retry-After", "")
            raise _Busy(f"HTTP {response.status_code}", float(after) if after.replace(".", "", 1).isdigit() else None)
        if response.status_code >= 400:
            raise RemoteError(f"{self.endpoint}{path}: HTTP {response.status_code}: {response.text[:300]}")
        return response.json()

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _Busy) and error.retry_after is not None:
            return min(error.retry_after, 60.0)
        return wait_exponential(multiplier=self.backoff_seconds, max=30)(state)

    def _count_retry(self, state: RetryCallState) -> None:
        self.retries += 1

    def close(self) -> None:
        self.client.close()
