"""The bounded work queue in front of a title source, shared by the JSON API, the OpenAI routes and
the web UI: every request that reaches a model goes through one `MicroBatcher`.

One worker thread takes the oldest job and every queued job with the same key (same kind of work,
options and instruction) and answers them with one call. Every job costs a bounded amount of work
(the limits below, checked by each front end with `check_abstract`) and has a deadline: past it the
decoding stops and the job fails with TimeoutError. The batcher measures how long a text takes for
each key and refuses work it cannot finish: a job whose wait (the queued work ahead of it) plus its
own decoding would pass its deadline is refused at once with `Busy` (503 + Retry-After), and a
micro-batch holds only as many texts as the oldest job's remaining time allows.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from functools import partial

from chatgentitle.errors import OptionError, UnknownModel

MAX_ABSTRACT_CHARS = 20_000
MAX_ABSTRACTS = 32
MAX_INSTRUCTION_CHARS = 2000  # an instruction is a sentence or two
MAX_TITLE_CHARS = 500  # an author's title to judge: real ones have ~10 words
REQUEST_TIMEOUT_SECONDS = 120.0
SAFETY = 0.8  # plan batches to end by 80% of the time left: measured costs vary by ~10% between batches
# "Holds text": a character that str.strip() keeps, spelled out for the OpenAPI schema because \S means
# different things to Python (U+1C-1F and U+85 are blank), pydantic's Rust engine and a client's ECMA engine.
BLANK = "".join(c for c in map(chr, range(0x3001)) if c.isspace())  # Python's last blank is U+3000
HOLDS_TEXT = "[^" + "".join(f"\\u{ord(c):04x}" for c in BLANK) + "]"


class Busy(Exception):
    """Work refused now (queue full, or more queued than the deadline can serve); try after retry_after s."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


def check_abstract(text: str) -> str:
    """The bounds of one abstract on every path; returns it, or raises ValueError saying which bound."""
    if not text.strip():
        raise OptionError("the abstract is empty")
    if len(text) > MAX_ABSTRACT_CHARS:
        raise OptionError(f"the abstract is longer than {MAX_ABSTRACT_CHARS} characters ({len(text)})")
    return text


@dataclasses.dataclass(eq=False)
class Job:
    """One request's texts and how to decode them: `decode(texts, should_stop)` returns one result per text."""

    texts: list[str]
    decode: Callable[[list[str], Callable[[], bool]], list]
    key: Hashable  # jobs with equal keys may share one decode call
    cost_key: Hashable  # jobs with equal cost keys take as long per text: no free text, no per-request object
    deadline: float  # time.monotonic() after which nobody waits for the answer
    future: Future = dataclasses.field(default_factory=Future)
    abandoned: threading.Event = dataclasses.field(default_factory=threading.Event)
    estimate: float = 0.0  # seconds of decoding expected (0: not measured yet)

    def wanted(self) -> bool:
        return not self.abandoned.is_set() and time.monotonic() < self.deadline


class CostTable:
    """Seconds per text, measured per cost key (a running mean of the last measurements); at most `size`
    keys, the least recently used going first, so that no stream of requests can grow it for good."""

    def __init__(self, size: int = 256):
        self.size = size
        self.seconds: OrderedDict[Hashable, float] = OrderedDict()

    def get(self, key: Hashable) -> float | None:
        if key in self.seconds:
            self.seconds.move_to_end(key)
        return self.seconds.get(key)

    def measured(self, key: Hashable, seconds: float) -> None:
        known = self.seconds.pop(key, None)
        self.seconds[key] = seconds if known is None else 0.5 * (known + seconds)
        while len(self.seconds) > self.size:
            self.seconds.popitem(last=False)

    def __len__(self) -> int:
        return len(self.seconds)


class MicroBatcher:
    """A bounded queue in front of one title source, drained by one worker thread."""

    def __init__(self, max_batch: int = 8, max_queue: int = 256, wait_seconds: float = 0.01):
        self.max_batch = max_batch
        self.wait_seconds = wait_seconds  # how long to wait for company before a batch goes
        self.jobs: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.seconds_per_text = CostTable()  # measured, per cost key
        self.backlog = 0.0  # estimated seconds of the queued jobs (recounted between batches by _sweep)
        self._lock = threading.Lock()
        self.idle = threading.Event()  # set while nothing is queued or decoding (tests and shutdown wait on it)
        self.idle.set()
        self.worker = threading.Thread(target=self._run, daemon=True, name="title-batcher")
        self.worker.start()

    def estimate(self, texts: int, key: Hashable) -> float:
        """Seconds `texts` texts of this key take, as measured (0 before the first measurement)."""
        return texts * (self.seconds_per_text.get(key) or 0.0)

    def submit(self, job: Job) -> Job:
        """Queue the job, or raise Busy when it cannot be answered within its deadline."""
        with self._lock:
            job.estimate = self.estimate(len(job.texts), job.cost_key)
            allowed = (job.deadline - time.monotonic()) * SAFETY
            if job.estimate > allowed:
                raise Busy(f"busy: this decoding takes ~{job.estimate:.0f} s here, over the "
                           f"{allowed / SAFETY:.0f} s deadline: ask for fewer abstracts or cheaper options",
                           job.estimate)
            if self.backlog + job.estimate > allowed:
                raise Busy(f"busy: ~{self.backlog:.0f} s of work queued, more than the deadline allows",
                           self.backlog + job.estimate - allowed)
            try:
                self.jobs.put_nowait(job)
                self.idle.clear()
            except queue.Full:
                raise Busy("busy: too many queued requests", max(self.backlog, 1)) from None
            self.backlog += job.estimate
        return job

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            self._answer([job for job in batch if job.wanted()])  # nobody waits for the others
            with self._lock:
                self._sweep()
                if self.jobs.empty():
                    self.idle.set()

    def _sweep(self) -> None:
        """Between batches, with the costs measured so far: refuse at once every queued job that cannot be
        reached and decoded before its deadline (e.g. accepted before the first measurement), in queue
        order, and recount the backlog. Called with self._lock held, so no job is submitted meanwhile."""
        kept, waited = [], 0.0
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            job.estimate = self.estimate(len(job.texts), job.cost_key)
            if not job.wanted():
                continue  # its request has given up already
            if waited + job.estimate > (job.deadline - time.monotonic()) * SAFETY:  # as submit plans it
                job.future.set_exception(Busy("busy: more work queued than the deadline allows", waited))
                continue
            kept.append(job)
            waited += job.estimate
        for job in kept:
            self.jobs.put_nowait(job)
        self.backlog = waited

    def _next_batch(self) -> list[Job]:
        """The oldest job and the queued jobs of its key that fit: at most max_batch texts, and as many as
        the oldest job's remaining time allows at the measured cost (one job alone until measured)."""
        first = self.jobs.get()
        per_text = self.seconds_per_text.get(first.cost_key)
        room = self.max_batch
        if per_text is None:
            room = len(first.texts)
        elif per_text > 0:
            room = min(room, int((first.deadline - time.monotonic()) * SAFETY / per_text))
        batch, held, size = [first], [], len(first.texts)
        deadline = time.monotonic() + self.wait_seconds
        while size < room:
            try:
                job = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job.key == first.key and size + len(job.texts) <= room:
                batch.append(job)
                size += len(job.texts)
            else:
                held.append(job)
        for job in held:  # another key, or no room: next round, in order
            self.jobs.put(job)
        return batch

    def _answer(self, batch: list[Job]) -> None:
        if not batch:
            return
        texts = [text for job in batch for text in job.texts]
        began = time.monotonic()
        try:  # should_stop is asked between decoding steps
            results = batch[0].decode(texts, lambda: not any(job.wanted() for job in batch))
        except Exception as err:  # one bad batch must not kill the worker
            for job in batch:
                job.future.set_exception(err)
            return
        start, finished = 0, True
        for job in batch:
            if job.wanted():
                job.future.set_result(results[start:start + len(job.texts)])
            else:  # past its deadline, the decoding was stopped: what it has is not an answer (503)
                finished = False
                job.future.set_exception(TimeoutError(f"deadline passed for {len(job.texts)} text(s)"))
            start += len(job.texts)
        if finished:  # a stopped decoding's time says nothing about the cost
            measured = (time.monotonic() - began) / len(texts)
            self.seconds_per_text.measured(batch[0].cost_key, measured)


class TitleService:
    """The sources a server holds (the first is the default model), a MicroBatcher each, the ranker and
    the deadline: what every front end of `serve` submits its work to."""

    def __init__(self, sources: list, ranker=None, max_batch: int = 8, max_queue: int = 256,
                 request_timeout: float = REQUEST_TIMEOUT_SECONDS, index=None):
        self.sources = {source.name: source for source in sources}
        self.batchers = {name: MicroBatcher(max_batch, max_queue) for name in self.sources}
        self.default = sources[0].name
        self.ranker = ranker
        self.request_timeout = request_timeout
        self.index = index  # data.index.PaperIndex for related papers, or None

    def source(self, model: str | None = None):
        """The named source (None: the default); UnknownModel names the ones there are."""
        name = model or self.default
        if name not in self.sources:
            raise UnknownModel(f"model {name!r} not found; this server has {', '.join(map(repr, self.sources))}")
        return self.sources[name]

    def titles(self, abstracts: list[str], options, instruction: str | None = None, model: str | None = None,
               yours: str | None = None, related: int = 0) -> Job:
        """Queue abstracts; the job's result is their ranked candidates (generator.titles; `yours`: the
        author's title for one abstract, judged beside them, decoded alone; `related`: that many papers
        like each from the server's index). `options`: GenerationOptions, or the fields a request gave
        (over the model's own defaults)."""
        from chatgentitle.titling.generator import titles

        source, options = self._asked(model, options, judging=yours is not None)
        if related and self.index is None:
            raise OptionError("related papers: this server has no paper index (build one with `chatgentitle "
                              "index`, then serve --index PATH)")
        papers = (self.index, related) if related else None
        decode = partial(_titles, titles, source, options, self.ranker, instruction, yours, papers)
        cost = ("titles", _frozen(options), yours is not None, related)  # judging adds a pass, lookups a little
        alone = () if yours is None else (object(),)  # a judged abstract is decoded alone
        return self._submit(source, abstracts, decode, (*cost, instruction, *alone), cost)

    def completions(self, prompts: list[str], options, model: str | None = None) -> Job:
        """Queue whole prompts (OpenAI completions); the job's result is their titles."""
        source, options = self._asked(model, options)
        decode = partial(_completions, source, options)
        key = ("completions", _frozen(options))
        return self._submit(source, prompts, decode, key, key)

    def stream(self, abstract: str, options, instruction: str | None, on_title: Callable[[str], None],
               model: str | None = None, related: int = 0) -> Job:
        """Queue one abstract for a plan that streams: on_title(title so far) as it grows; the job's
        result is its candidates (and `related` papers like it). Decoded alone, never batched."""
        source, options = self._asked(model, options)
        papers = (self.index, related) if related and self.index else None
        decode = partial(_stream, source, options, instruction, self.ranker, on_title, papers)
        cost = ("stream", _frozen(options))
        return self._submit(source, [abstract], decode, (*cost, object()), cost)  # never batched

    def _asked(self, model: str | None, options, judging: bool = False) -> tuple:
        """The source and the options it is asked for, checked before anything is queued: UnknownModel,
        or Unsupported naming what the source cannot honour."""
        from chatgentitle.titling.contract import check_supported, options_for

        source = self.source(model)
        options = options_for(source, options) if isinstance(options, dict) else options
        check_supported(source, options, judging)
        return source, options

    def _submit(self, source, texts: list[str], decode, key, cost_key) -> Job:
        job = Job(texts, decode, key, cost_key, deadline=time.monotonic() + self.request_timeout)
        return self.batchers[source.name].submit(job)

    def warm_up(self, abstract: str) -> None:
        """Before serving: decode one abstract with the default options on every model, once directly (it
        loads what that decoding needs, e.g. an ensemble's members) and once through the queue (it measures
        the cost), so that the first requests are admitted and batched on a measurement."""
        from chatgentitle.decoding.options import GenerationOptions

        for name, source in self.sources.items():
            source.generate([abstract], GenerationOptions())
            self.titles([abstract], GenerationOptions(), model=name).future.result()

    def queued(self) -> int:
        return sum(batcher.jobs.qsize() for batcher in self.batchers.values())


def _frozen(options) -> tuple:
    return dataclasses.astuple(options)


def _titles(titles, source, options, ranker, instruction, yours, related, texts, should_stop):
    return titles(source, texts, options, ranker, instruction, should_stop=should_stop, yours=yours, related=related)


def _completions(source, options, texts, should_stop):
    return source.complete(texts, options, should_stop=should_stop)


def _stream(source, options, instruction, ranker, on_title, related, texts, should_stop):
    from chatgentitle.titling.generator import candidates
    from chatgentitle.titling.ranking import Titled

    title = ""
    for title in source.stream(texts[0], options, instruction, should_stop=should_stop):
        on_title(title)
    found = related[0].nearest(texts[0], related[1]) if related else []
    return [Titled(candidates(texts[0], [title], ranker), related=found)]
