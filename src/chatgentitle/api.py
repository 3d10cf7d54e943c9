"""The REST API: POST /v1/titles, GET /health, OpenAPI docs at /docs, and the OpenAI-compatible
GET /v1/models, POST /v1/completions (whole prompts, as vLLM takes them) and POST /v1/chat/completions
(the last user message is the abstract).

    app = create_app(TitleGenerator.load())

One model in memory. Requests wait in one bounded queue; a single worker thread takes the
oldest and every queued request with the same options (up to max_batch abstracts) and
answers them with one batched generate call. Every request costs a bounded amount of work:
at most MAX_ABSTRACTS abstracts of MAX_ABSTRACT_CHARS, decoding options inside the bounds
of GenerationOptions (422 outside), and a deadline (request_timeout seconds from arrival)
after which the client gets 503 + Retry-After and the generation stops. A full queue also
answers 503 + Retry-After; nothing else is a 5xx.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from functools import partial
from typing import get_type_hints

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from chatgentitle.config import GenerationOptions, field_docs
from chatgentitle.generate import TitleSource, titles
from chatgentitle.ranking import Ranker

MAX_ABSTRACT_CHARS = 20_000
MAX_ABSTRACTS = 32
MAX_BODY_BYTES = 1_000_000
REQUEST_TIMEOUT_SECONDS = 120.0  # the default decoding titles a batch of 8 in ~25 s on 2 CPU cores
RETRY_AFTER_SECONDS = 5


def _options_model() -> type[BaseModel]:
    """GenerationOptions as a pydantic model: the same fields, defaults, bounds and help."""
    types, docs = get_type_hints(GenerationOptions), field_docs(GenerationOptions)
    specs = {}
    for option in dataclasses.fields(GenerationOptions):
        low, high = option.metadata.get("range", (None, None))
        specs[option.name] = (types[option.name], Field(option.default, ge=low, le=high,
                                                         description=docs.get(option.name)))
    return create_model("Options", __config__=ConfigDict(extra="forbid"), **specs)


Options = _options_model()


class TitleRequest(BaseModel):
    """One abstract or many, and generation options (all optional)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="Which served model (GET /v1/models); default: the first.")
    abstract: str | None = Field(None, description="One abstract.")
    abstracts: list[str] | None = Field(None, description=f"Up to {MAX_ABSTRACTS} abstracts.")
    instruction: str | None = Field(None, max_length=2000, description="Overrides the model's instruction.")
    options: Options = Field(default_factory=Options, description="Decoding options, each within its bounds.")

    @model_validator(mode="after")
    def one_of_abstract_or_abstracts(self):
        if (self.abstract is None) == (self.abstracts is None):
            raise ValueError("give exactly one of 'abstract' or 'abstracts'")
        items = [self.abstract] if self.abstract is not None else self.abstracts
        if not items:
            raise ValueError("'abstracts' is empty")
        if len(items) > MAX_ABSTRACTS:
            raise ValueError(f"at most {MAX_ABSTRACTS} abstracts per request")
        for text in items:
            if not text.strip():
                raise ValueError("an abstract is empty")
            if len(text) > MAX_ABSTRACT_CHARS:
                raise ValueError(f"an abstract is longer than {MAX_ABSTRACT_CHARS} characters")
        return self

    def items(self) -> list[str]:
        return [self.abstract] if self.abstract is not None else list(self.abstracts)

    def generation_options(self) -> GenerationOptions:
        return GenerationOptions(**self.options.model_dump())


class ChatMessage(BaseModel):
    role: str
    content: str | list[dict] | None = None
    """Text, or OpenAI content parts ({"type": "text", "text": ...})."""

    def text(self) -> str:
        if isinstance(self.content, list):
            return " ".join(part.get("text", "") for part in self.content if part.get("type") == "text")
        return self.content or ""


class OpenAIRequest(BaseModel):
    """What OpenAI completion and chat requests share; fields this server does not use are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str
    n: int = Field(1, ge=1, le=8, description="Titles to return (distinct candidates).")
    max_tokens: int | None = Field(None, ge=1, description="Clamped to max_new_tokens' bound: a title needs few.")
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2, description="0 or absent: the default decoding; "
                                                                      "above 0: sampling at this temperature.")
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool = False
    stream_options: dict | None = None

    def generation_options(self) -> GenerationOptions:
        low, high = GenerationOptions.__dataclass_fields__["max_new_tokens"].metadata["range"]
        wanted = self.max_completion_tokens or self.max_tokens or GenerationOptions.max_new_tokens
        options = {"num_candidates": self.n, "max_new_tokens": max(low, min(high, wanted))}
        if self.temperature:  # sampling, as a client asking for a temperature expects
            options.update(do_sample=True, temperature=self.temperature, top_p=self.top_p or 1.0)
        return GenerationOptions(**options)


class ChatRequest(OpenAIRequest):
    """A chat completion: the last user message is the abstract."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def one_abstract(self):
        users = [m for m in self.messages if m.role == "user"]
        if not users or not users[-1].text().strip():
            raise ValueError("the last user message must hold the abstract")
        if len(users[-1].text()) > MAX_ABSTRACT_CHARS:
            raise ValueError(f"the abstract is longer than {MAX_ABSTRACT_CHARS} characters")
        return self

    def abstract(self) -> str:
        return [m for m in self.messages if m.role == "user"][-1].text().strip()


class CompletionRequest(OpenAIRequest):
    """A completion: each prompt is a whole prompt in the served model's template (vLLM's convention)."""

    prompt: str | list[str]

    @model_validator(mode="after")
    def bounded_prompts(self):
        prompts = self.prompts()
        if not prompts or len(prompts) > MAX_ABSTRACTS or not all(p.strip() for p in prompts):
            raise ValueError(f"give 1 to {MAX_ABSTRACTS} non-empty prompts")
        if any(len(p) > MAX_ABSTRACT_CHARS + 2000 for p in prompts):  # the abstract's bound plus a template
            raise ValueError(f"a prompt is longer than {MAX_ABSTRACT_CHARS + 2000} characters")
        return self

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


@dataclasses.dataclass
class Job:
    """One request in the queue."""

    abstracts: list[str]
    options: GenerationOptions
    instruction: str | None
    deadline: float  # time.monotonic() after which nobody waits for the answer
    rendered: bool = False  # whole prompts (/v1/completions), not abstracts
    future: Future = dataclasses.field(default_factory=Future)
    abandoned: threading.Event = dataclasses.field(default_factory=threading.Event)

    def wanted(self) -> bool:
        return not self.abandoned.is_set() and time.monotonic() < self.deadline


class MicroBatcher:
    """A bounded queue in front of the generator, drained by one worker thread."""

    def __init__(self, generator: TitleSource, ranker: Ranker | None = None, max_batch: int = 8,
                 max_queue: int = 256, wait_seconds: float = 0.01):
        self.generator = generator
        self.ranker = ranker
        self.max_batch = max_batch
        self.wait_seconds = wait_seconds  # how long to wait for company before a batch goes
        self.jobs: queue.Queue = queue.Queue(maxsize=max_queue)
        self.worker = threading.Thread(target=self._run, daemon=True, name="title-batcher")
        self.worker.start()

    def submit(self, job: Job) -> Job:
        self.jobs.put_nowait(job)  # raises queue.Full
        return job

    def _run(self) -> None:
        while True:
            batch = [self.jobs.get()]
            deadline = time.monotonic() + self.wait_seconds
            held = []
            size = len(batch[0].abstracts)
            while size < self.max_batch:
                try:
                    job = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                same = (job.options, job.instruction, job.rendered) == (
                    batch[0].options, batch[0].instruction, batch[0].rendered)
                if same and size + len(job.abstracts) <= self.max_batch:
                    batch.append(job)
                    size += len(job.abstracts)
                else:
                    held.append(job)
            for job in held:  # different options: next round, in order
                self.jobs.put(job)
            self._answer([job for job in batch if job.wanted()])  # nobody waits for the others

    def _answer(self, batch: list[Job]) -> None:
        if not batch:
            return
        abstracts = [a for job in batch for a in job.abstracts]
        nobody_waits = partial(_nobody_waits, batch)  # checked between decoding steps
        try:
            results = titles(self.generator, abstracts, batch[0].options, None if batch[0].rendered else self.ranker,
                             batch[0].instruction, should_stop=nobody_waits, rendered=batch[0].rendered)
        except Exception as err:  # one bad batch must not kill the worker
            for job in batch:
                job.future.set_exception(err)
            return
        start = 0
        for job in batch:
            if job.wanted():
                job.future.set_result(results[start:start + len(job.abstracts)])
            else:  # past its deadline, the generation was stopped: what it has is not an answer (503)
                job.future.set_exception(TimeoutError(f"deadline passed for {len(job.abstracts)} abstract(s)"))
            start += len(job.abstracts)


def _event(payload: dict | str) -> str:
    """One server-sent event."""
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _chat_chunks(reply: dict, candidates, usage: dict | None):
    """Server-sent events of a chat completion: the role, each title, the finish, usage, [DONE].

    Titles come whole (beam search settles them only at the end), one content delta per choice."""
    chunk = {**reply, "object": "chat.completion.chunk"}
    for i, candidate in enumerate(candidates):
        yield _event({**chunk, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                            "finish_reason": None}]})
        yield _event({**chunk, "choices": [{"index": i, "delta": {"content": candidate.title}, "finish_reason": None}]})
        yield _event({**chunk, "choices": [{"index": i, "delta": {}, "finish_reason": "stop"}]})
    if usage:
        yield _event({**chunk, "choices": [], "usage": usage})
    yield _event("[DONE]")


def _completion_chunks(reply: dict, choices: list[dict], usage: dict | None):
    """Server-sent events of a completion: each choice's text, then usage, then [DONE]."""
    for choice in choices:
        yield _event({**reply, "choices": [choice]})
    if usage:
        yield _event({**reply, "choices": [], "usage": usage})
    yield _event("[DONE]")


def _nobody_waits(batch: list[Job]) -> bool:
    return not any(job.wanted() for job in batch)


def create_app(generator: TitleSource | list[TitleSource], ranker: Ranker | None = None, api_key: str | None = None,
               max_batch: int = 8, max_queue: int = 256,
               request_timeout: float = REQUEST_TIMEOUT_SECONDS) -> FastAPI:
    """The FastAPI app around one title source (a TitleGenerator, or anything with its interface), or
    several (e.g. adapters over one base, TitleGenerator.load_many): each is a model id, the first the
    default. Each has its own bounded queue; sources sharing a model take turns on it."""
    app = FastAPI(title="ChatGenTitle", version="0.1.0",
                  description="Titles for research papers from their abstracts.")
    sources = generator if isinstance(generator, list) else [generator]
    batchers = {s.name: MicroBatcher(s, ranker, max_batch=max_batch, max_queue=max_queue) for s in sources}
    default = sources[0].name

    def batcher_for(model: str | None) -> MicroBatcher:
        if (model or default) not in batchers:
            raise HTTPException(status_code=404, detail=f"model {model!r} not found; this server has "
                                                        f"{', '.join(map(repr, batchers))}")
        return batchers[model or default]

    def check_key(request: Request) -> None:
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            raise HTTPException(status_code=401, detail="missing or wrong API key")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)

    @app.get("/health")
    def health():
        return {"status": "ok", "model": default, "models": list(batchers),
                "queued": sum(b.jobs.qsize() for b in batchers.values())}

    async def answer(batcher: MicroBatcher, abstracts: list[str], options: GenerationOptions,
                     instruction: str | None, rendered: bool = False):
        """Queue the abstracts, wait for their candidates within the deadline (else 503)."""
        job = Job(abstracts, options, instruction, deadline=time.monotonic() + request_timeout, rendered=rendered)
        try:
            batcher.submit(job)
        except queue.Full:
            raise HTTPException(status_code=503, detail="busy: too many queued requests",
                                headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(job.future)), request_timeout)
        except TimeoutError:
            job.abandoned.set()  # the worker skips it, or stops the generation it is in
            raise HTTPException(status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                                detail=f"busy: no answer within the {request_timeout:g} s deadline") from None
        except asyncio.CancelledError:  # the client went away
            job.abandoned.set()
            raise

    @app.post("/v1/titles", dependencies=[Depends(check_key)])
    async def titles(body: TitleRequest):
        try:
            options = body.generation_options()
        except ValueError as err:  # a rule across fields
            raise HTTPException(status_code=422, detail=str(err)) from None
        began = time.perf_counter()
        batcher = batcher_for(body.model)
        results = await answer(batcher, body.items(), options, body.instruction)
        out = [{"title": candidates[0].title, "candidates": [c.to_dict() for c in candidates]}
               for candidates in results]
        return {"results": out, "model": batcher.generator.name,
                "seconds": round(time.perf_counter() - began, 3)}

    # ---------------------------------------------------------------- the OpenAI-compatible boundary
    @app.get("/v1/models", dependencies=[Depends(check_key)])
    def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "chatgentitle"}
                                           for name in batchers]}

    @app.post("/v1/completions", dependencies=[Depends(check_key)])
    async def completions(body: CompletionRequest):
        """Each prompt continued by the model: its titles (n per prompt), choice index = prompt x n + k."""
        batcher = batcher_for(body.model)
        source, prompts = batcher.generator, body.prompts()
        results = await answer(batcher, prompts, body.generation_options(), None, rendered=True)
        choices = [{"index": i * body.n + k, "text": c.title, "finish_reason": "stop", "logprobs": None}
                   for i, candidates in enumerate(results) for k, c in enumerate(candidates)]
        usage = _usage(sum(source.count_tokens(p) for p in prompts),
                       sum(source.count_tokens(c["text"]) + 1 for c in choices))  # +1: EOS
        reply = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                 "model": source.name}
        if not body.stream:
            return {**reply, "choices": choices, "usage": usage}
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        return StreamingResponse(_completion_chunks(reply, choices, usage if include_usage else None),
                                 media_type="text/event-stream")

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key)])
    async def chat_completions(body: ChatRequest):
        """The last user message is an abstract; each choice is a title (n: distinct candidates)."""
        batcher = batcher_for(body.model)
        source = batcher.generator
        abstract = body.abstract()
        results = await answer(batcher, [abstract], body.generation_options(), None)
        candidates = results[0]
        usage = _usage(source.count_tokens(abstract, as_prompt=True),
                       sum(source.count_tokens(c.title) + 1 for c in candidates))  # +1: EOS
        reply = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": source.name}
        if not body.stream:
            choices = [{"index": i, "message": {"role": "assistant", "content": c.title}, "finish_reason": "stop"}
                       for i, c in enumerate(candidates)]
            return {**reply, "object": "chat.completion", "choices": choices, "usage": usage}
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        return StreamingResponse(_chat_chunks(reply, candidates, usage if include_usage else None),
                                 media_type="text/event-stream")

    return app
