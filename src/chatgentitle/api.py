"""The REST API: POST /v1/titles, GET /health, OpenAPI docs at /docs.

    app = create_app(TitleGenerator.load())

One model in memory. Requests wait in one bounded queue; a single worker thread takes the
oldest and every queued request with the same options (up to max_batch abstracts) and
answers them with one batched generate call. A full queue answers 503, not a crash.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from chatgentitle.generate import GenerationOptions
from chatgentitle.ranking import Ranker

MAX_ABSTRACT_CHARS = 20_000
MAX_ABSTRACTS = 32
MAX_BODY_BYTES = 1_000_000


class TitleRequest(BaseModel):
    """One abstract or many, and generation options (all optional)."""

    model_config = ConfigDict(extra="forbid")

    abstract: str | None = Field(None, description="One abstract.")
    abstracts: list[str] | None = Field(None, description=f"Up to {MAX_ABSTRACTS} abstracts.")
    instruction: str | None = Field(None, max_length=2000, description="Overrides the model's instruction.")
    options: GenerationOptions = Field(default_factory=GenerationOptions,
                                       description="Decoding: max_new_tokens, num_beams, do_sample, temperature, "
                                                   "top_p, top_k, repetition_penalty, no_repeat_ngram_size, "
                                                   "num_candidates.")

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


class MicroBatcher:
    """A bounded queue in front of the generator, drained by one worker thread."""

    def __init__(self, generator, max_batch: int = 8, max_queue: int = 256, wait_seconds: float = 0.01):
        self.generator = generator
        self.max_batch = max_batch
        self.wait_seconds = wait_seconds  # how long to wait for company before a batch goes
        self.jobs: queue.Queue = queue.Queue(maxsize=max_queue)
        self.worker = threading.Thread(target=self._run, daemon=True, name="title-batcher")
        self.worker.start()

    def submit(self, abstracts: list[str], options: GenerationOptions, instruction: str | None) -> Future:
        future: Future = Future()
        self.jobs.put_nowait((abstracts, options, instruction, future))  # raises queue.Full
        return future

    def _run(self) -> None:
        while True:
            batch = [self.jobs.get()]
            deadline = time.monotonic() + self.wait_seconds
            held = []
            size = len(batch[0][0])
            while size < self.max_batch:
                try:
                    job = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                same = job[1] == batch[0][1] and job[2] == batch[0][2]
                if same and size + len(job[0]) <= self.max_batch:
                    batch.append(job)
                    size += len(job[0])
                else:
                    held.append(job)
            for job in held:  # different options: next round, in order
                self.jobs.put(job)
            self._answer(batch)

    def _answer(self, batch) -> None:
        abstracts = [a for job in batch for a in job[0]]
        options, instruction = batch[0][1], batch[0][2]
        try:
            results = self.generator.generate(abstracts, options, instruction)
        except Exception as err:  # one bad batch must not kill the worker
            for job in batch:
                job[3].set_exception(err)
            return
        start = 0
        for job in batch:
            job[3].set_result(results[start:start + len(job[0])])
            start += len(job[0])


def create_app(generator, ranker: Ranker | None = None, api_key: str | None = None,
               max_batch: int = 8, max_queue: int = 256) -> FastAPI:
    """The FastAPI app around one generator (a TitleGenerator or anything with .generate)."""
    app = FastAPI(title="ChatGenTitle", version="0.1.0",
                  description="Titles for research papers from their abstracts.")
    batcher = MicroBatcher(generator, max_batch=max_batch, max_queue=max_queue)
    app.state.batcher = batcher

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
        return {"status": "ok", "model": getattr(generator, "name", "model"),
                "queued": batcher.jobs.qsize()}

    @app.post("/v1/titles", dependencies=[Depends(check_key)])
    async def titles(body: TitleRequest):
        options = body.options
        abstracts = body.items()
        began = time.perf_counter()
        try:
            future = batcher.submit(abstracts, options, body.instruction)
        except queue.Full:
            raise HTTPException(status_code=503, detail="busy: too many queued requests",
                                headers={"Retry-After": "1"}) from None
        results = await asyncio.wrap_future(future)
        out = []
        for abstract, candidates in zip(abstracts, results, strict=True):
            if ranker and len(candidates) > 1:
                ranked = [asdict(c) for c in ranker.rank(abstract, candidates)]
            else:
                ranked = [{"title": t} for t in candidates]
            out.append({"title": ranked[0]["title"], "candidates": ranked})
        return {"results": out, "model": getattr(generator, "name", "model"),
                "seconds": round(time.perf_counter() - began, 3)}

    return app
