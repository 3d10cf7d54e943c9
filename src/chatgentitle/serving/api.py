"""Our own HTTP dialect, POST /v1/titles, and what the routes of `serve` share (app.py puts them
together with the OpenAI-compatible routes of openai_routes.py and the web UI).

Every route that reaches a model goes through the server's TitleService (jobs.py): one bounded
queue per model, micro-batches sized to meet each request's deadline, 503 + Retry-After for work it
cannot finish. With an API key, those routes answer 401 without `Authorization: Bearer KEY`. The
OpenAPI document states what the handlers enforce: required fields, one-of, lengths, ranges and
every status code a route answers, with its body.
"""


import asyncio
import dataclasses
import hmac
import ipaddress
import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from typing import Annotated, get_type_hints

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model, model_validator

from chatgentitle.config import field_docs, phrase_limits
from chatgentitle.data.index import MAX_RELATED
from chatgentitle.decoding.options import GenerationOptions
from chatgentitle.errors import ChatGenTitleError, UnknownModel
from chatgentitle.serving.jobs import (
    HOLDS_TEXT,
    MAX_ABSTRACT_CHARS,
    MAX_ABSTRACTS,
    MAX_INSTRUCTION_CHARS,
    MAX_TITLE_CHARS,
    Busy,
    Job,
    TitleService,
)
from chatgentitle.titling.ranking import ORDER, Verdict
from chatgentitle.titling.remote import RemoteError

log = logging.getLogger("chatgentitle.serving.app")

Abstract = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ABSTRACT_CHARS, pattern=HOLDS_TEXT)]
YourTitle = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TITLE_CHARS, pattern=HOLDS_TEXT)]


class ErrorBody(BaseModel):
    """Every error answer: what went wrong (a message, or the validator's list of problems)."""

    detail: str | list[dict]


def responses(*codes: int) -> dict:
    """OpenAPI documentation of the error answers a route can give."""
    meaning = {400: "The body is not JSON in UTF-8.", 401: "Missing or wrong API key.", 404: "No such model.",
               413: "Request body too large.", 422: "The request breaks the schema, or asks what cannot be done.",
               429: "Too many wrong API keys from this address: retry after Retry-After s.",
               500: "A fault of the server: the detail gives a request id to quote (the log has the rest).",
               502: "The engine behind this server failed.",
               503: "Busy or past the deadline: retry after Retry-After s."}
    return {code: {"model": ErrorBody, "description": meaning[code]} for code in codes}


ROUTE_ERRORS = (400, 401, 404, 413, 422, 429, 500, 502, 503)  # what a POST route that reaches a model can answer


def option_fields(skip: tuple[str, ...] = (), unset: bool = False, note: str = "") -> dict:
    """GenerationOptions' fields as pydantic field specs: the same types, bounds and help (`note` before it),
    and the same defaults, or none (`unset`: a field left out is not given, and the model's default holds)."""
    types, docs = get_type_hints(GenerationOptions), field_docs(GenerationOptions)
    specs = {}
    for option in dataclasses.fields(GenerationOptions):
        if option.name in skip:
            continue
        low, high = option.metadata.get("range", (None, None))
        kind, default, most = types[option.name], option.default, None
        if "phrases" in option.metadata:  # a JSON array of phrases
            most, chars = phrase_limits(GenerationOptions, option.name)
            kind = list[Annotated[str, StringConstraints(min_length=1, max_length=chars, pattern=HOLDS_TEXT)]]
            default = []
        elif unset:
            kind, default = kind | None, None
        specs[option.name] = (kind, Field(default, ge=low, le=high, max_length=most,
                                          description=note + docs[option.name]))
    return specs


def _options_model() -> type[BaseModel]:
    """GenerationOptions as a pydantic model: the same fields, defaults, bounds and help."""
    return create_model("Options", __base__=_CheckedOptions, **option_fields())


def steering_excludes(steering: dict[str, dict], decoding: dict[str, dict]) -> list[dict]:
    """JSON schema clauses: no field of `steering` given as shown together with one of `decoding` (each a
    field name and the schema of a value that conflicts)."""
    return [{"not": {"required": [a, b], "properties": {a: sa, b: sb}}}
            for a, sa in steering.items() for b, sb in decoding.items()]


STEERING = {"include": {"type": "array", "minItems": 1}, "words": {"type": "integer"}}


class _CheckedOptions(BaseModel):
    """What the fields alone cannot say: steering needs the beam search (GenerationOptions checks it)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": steering_excludes(
        STEERING, {"do_sample": {"const": True}, "consensus": {"type": "integer", "minimum": 1},
                   "no_repeat_ngram_size": {"type": "integer", "minimum": 1}})})

    @model_validator(mode="after")
    def steers_the_beam_search(self):
        GenerationOptions(**self.model_dump())  # an OptionError is a ValueError: 422
        return self


Options = _options_model()


class TitleRequest(BaseModel):
    """One abstract or many (exactly one of the two), and decoding options (all optional)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "oneOf": [{"required": ["abstract"]}, {"required": ["abstracts"]}],
        "not": {"required": ["title", "abstracts"]}})

    model: str | None = Field(None, description="Which served model (GET /v1/models); default: the first.")
    # not nullable: the schema's one-of counts a field as given when its key is there
    abstract: Abstract = Field(None, description="One abstract.")
    abstracts: list[Abstract] = Field(None, min_length=1, max_length=MAX_ABSTRACTS,
                                      description=f"Up to {MAX_ABSTRACTS} abstracts.")
    instruction: str | None = Field(None, max_length=MAX_INSTRUCTION_CHARS,
                                    description="Overrides the model's instruction.")
    options: Options = Field(default_factory=Options, description="Decoding options, each within its bounds.")
    title: YourTitle | None = Field(None, description="Your own title for `abstract` (not with `abstracts`): the "
                                                      "result's verdict says how the model ranks it among its "
                                                      "candidates.")
    related: int = Field(0, ge=0, le=MAX_RELATED, description="Also this many published papers like each abstract "
                                                              "(from the server's paper index), closest first.")

    @model_validator(mode="after")
    def one_of_abstract_or_abstracts(self):
        if (self.abstract is None) == (self.abstracts is None):
            raise ValueError("give exactly one of 'abstract' or 'abstracts'")
        if self.title is not None and self.abstract is None:
            raise ValueError("'title' is judged for one 'abstract'")
        return self

    def items(self) -> list[str]:
        return [self.abstract] if self.abstract is not None else list(self.abstracts)


class CandidateBody(BaseModel):
    title: str
    score: float | None = Field(None, description="The ranker's score (not the list's order: see `order`).")
    faithfulness: float | None = None
    words: int = 0
    cliches: list[str] = []
    known_match: str | None = None
    log_prob: float | None = None


class RelatedBody(BaseModel):
    id: str
    title: str
    similarity: float = Field(description="TF-IDF cosine with the abstract, 0..1.")
    categories: str = ""
    update_date: str = ""


class TitleResult(BaseModel):
    title: str
    candidates: list[CandidateBody] = Field(description=ORDER[0].upper() + ORDER[1:] + ".")
    verdict: Verdict | None = None  # how the model ranks the author's title (a dataclass: its schema as is)
    related: list[RelatedBody] = []


class TitleResponse(BaseModel):
    results: list[TitleResult]
    model: str
    seconds: float




def served_model(service: TitleService, required: bool = False):
    """A `model` field whose schema lists the served model ids."""
    return Field(... if required else None, json_schema_extra={"enum": list(service.sources)},
                 description="Which served model (GET /v1/models)" + ("." if required else "; default: the first."))


async def answer(service: TitleService, submit, *args, **kwargs) -> list:
    """Queue the work (service.titles / completions), wait for its result within the deadline (else 503)."""
    try:
        job: Job = submit(*args, **kwargs)
        waiter = asyncio.wrap_future(job.future)
        return await asyncio.wait_for(asyncio.shield(waiter), service.request_timeout)
    except UnknownModel as err:
        raise HTTPException(status_code=404, detail=str(err)) from None
    except RemoteError as err:
        raise HTTPException(status_code=502, detail=str(err)) from None
    except ChatGenTitleError as err:
        raise HTTPException(status_code=422, detail=str(err)) from None
    except Busy as err:  # refused when queued, or later in the queue: it could not finish in time
        raise HTTPException(status_code=503, detail=str(err), headers={"Retry-After": str(err.retry_after)}) from None
    except (TimeoutError, asyncio.CancelledError) as err:  # the deadline passed, or the client went away
        job.abandoned.set()  # the worker skips it, or stops the decoding it is in
        waiter.add_done_callback(_retrieve)  # the worker's TimeoutError is then nobody's news
        if isinstance(err, asyncio.CancelledError):
            raise
        raise HTTPException(status_code=503, headers={"Retry-After": "5"},
                            detail=f"busy: no answer within the {service.request_timeout:g} s deadline") from None
    except Exception:  # a bug: the log has its traceback, the client a request id to quote
        request_id = uuid.uuid4().hex[:12]
        log.exception("request %s failed", request_id)
        raise HTTPException(status_code=500, detail=f"internal error (request {request_id})") from None


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


class KeyGuard:
    """The API key, compared in constant time, and a throttle on wrong keys per client: after `limit`
    wrong keys within `window` seconds, that client is refused (429, right key or not) until the oldest
    of them is `window` seconds old. Other clients are not affected. A client is its address, or its /64
    for IPv6 (one host holds a whole /64). Memory stays bounded against the outside: only clients that
    sent a wrong key are remembered, at most `limit` times each, for at most `window` seconds, and at
    most `max_addresses` of them (the one whose last failure is oldest goes first). `clock` is injectable."""

    def __init__(self, api_key: str | None, limit: int = 10, window: float = 60.0, clock=time.monotonic,
                 max_addresses: int = 10_000):
        self.api_key, self.limit, self.window, self.clock = api_key, limit, window, clock
        self.max_addresses = max_addresses
        self.failures: OrderedDict[str, deque] = OrderedDict()  # least recently failed first
        self.lock = threading.Lock()

    def retry_after(self, address: str) -> float:
        """Seconds until `address` may try a key again (0: now). Remembers nothing."""
        with self.lock:
            self._forget_expired()
            times = self.failures.get(client_group(address), ())
            return max(0.0, times[0] + self.window - self.clock()) if len(times) >= self.limit else 0.0

    def failed(self, address: str) -> None:
        with self.lock:
            group = client_group(address)
            times = self.failures.pop(group, None) or deque(maxlen=self.limit)
            times.append(self.clock())
            self.failures[group] = times  # now the most recent
            while len(self.failures) > self.max_addresses:
                self.failures.popitem(last=False)
            self._forget_expired()

    def matches(self, given: str) -> bool:
        return not self.api_key or hmac.compare_digest(given.encode(), self.api_key.encode())

    def _forget_expired(self) -> None:
        """Drop the clients whose last wrong key is older than the window (they are at the front)."""
        horizon = self.clock() - self.window
        while self.failures and next(iter(self.failures.values()))[-1] <= horizon:
            self.failures.popitem(last=False)


def client_group(address: str) -> str:
    """Who the throttle counts: the address, or for IPv6 its /64 (IPv4-mapped IPv6 as the IPv4 address)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 4:
        return address
    if ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


def client_address(request: Request) -> str:
    """The connecting address, or the client a trusted proxy names (serve's --trusted-proxy: uvicorn
    rewrites it from X-Forwarded-For only for those proxies)."""
    return request.client.host if request.client else "unknown"


def key_check(guard: KeyGuard):
    """A dependency that lets a request through only with `Authorization: Bearer <key>` (when a key is set);
    a wrong key counts against the address (guard_doors' middleware refuses a throttled one first)."""

    def check_key(request: Request) -> None:
        if not guard.api_key:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not guard.matches(given):
            guard.failed(client_address(request))
            raise HTTPException(status_code=401, detail="missing or wrong API key",
                                headers={"WWW-Authenticate": "Bearer"})

    return check_key


def guard_doors(app, api_key: str | None):
    """Every door of `app` that takes the key: the KeyGuard (app.state.key_guard), a middleware that
    answers 429 to an address that sent too many wrong keys (the API, the web UI's login and pages; a
    failed web UI login counts as a wrong key) and keeps Gradio's heartbeat stream for signed-in pages;
    returns the dependency the API routes check the key with."""
    from fastapi.responses import JSONResponse

    app.state.key_guard = guard = KeyGuard(api_key)
    app.state.signed_in = lambda request: False  # the web UI's session check, once server.with_ui mounts it

    @app.middleware("http")
    async def throttle_wrong_keys(request: Request, call_next):
        if not api_key or request.url.path == "/health":
            return await call_next(request)
        address = client_address(request)
        wait = guard.retry_after(address)
        if wait:
            return JSONResponse({"detail": "too many wrong API keys from this address"}, status_code=429,
                                headers={"Retry-After": str(max(1, round(wait)))})
        if "/heartbeat/" in request.url.path and not request.app.state.signed_in(request):
            # Gradio holds this stream open for anyone; with a key, only for a signed-in page
            return JSONResponse({"detail": "sign in first"}, status_code=401)
        response = await call_next(request)
        if request.method == "POST" and request.url.path.endswith("/login") and response.status_code >= 400:
            guard.failed(address)
        return response

    return key_check(guard)


def titles_router(service: TitleService, check_key) -> APIRouter:
    """POST /v1/titles: our own dialect, with candidates and their scores."""
    router = APIRouter(dependencies=[Depends(check_key)])

    class Body(TitleRequest):
        model: str = served_model(service)
        related: int = Field(0, ge=0, le=MAX_RELATED if service.index else 0,  # the schema says what this server has
                             description=TitleRequest.model_fields["related"].description
                             + ("" if service.index else " This server has no paper index: 0."))

    @router.post("/v1/titles", response_model=TitleResponse, responses=responses(*ROUTE_ERRORS))
    async def write_titles(body: Body):
        began = time.perf_counter()
        results = await answer(service, service.titles, body.items(), body.options.model_dump(exclude_unset=True),
                               body.instruction, model=body.model, yours=body.title, related=body.related)
        out = [result.to_dict() for result in results]
        return {"results": out, "model": service.source(body.model).name,
                "seconds": round(time.perf_counter() - began, 3)}

    return router
