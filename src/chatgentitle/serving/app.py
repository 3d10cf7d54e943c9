"""`chatgentitle serve`: the JSON API, the OpenAI-compatible routes and the web UI in one process.

    app = create_app([TitleGenerator.load()], api_key="K")      # the API alone (tests, embedding)
    serve(ServeConfig(api_key="K"), SourceSpec())                # what the command runs

One key for every door: with an API key, every route that reaches a model needs it — the API routes
as `Authorization: Bearer KEY`, the web UI and Gradio's own routes (its call and queue API
included) through Gradio's login, whose password is the key. /health stays open. Every front end
submits to one TitleService, so the UI has the API's bounds, queue and deadline.
"""

from __future__ import annotations

import ipaddress
import warnings
from dataclasses import dataclass, field

from chatgentitle.config import split_csv
from chatgentitle.errors import OptionError
from chatgentitle.serving.jobs import REQUEST_TIMEOUT_SECONDS

MAX_BODY_BYTES = 1_000_000
WARM_UP_ABSTRACT = ("We fine-tune a small language model with low-rank adapters on pairs of abstracts and titles "
                    "of research papers and show that it writes titles close to the authors' own.")


@dataclass
class ServeConfig:
    """How `serve` listens and how much work it accepts."""

    host: str = "127.0.0.1"
    """Interface to bind (0.0.0.0: all; then give an api_key)."""
    port: int = 7860
    """TCP port."""
    api_key: str | None = field(default=None, metadata={"envvar": "CHATGENTITLE_API_KEY"})
    """Required on every route that reaches a model: 'Authorization: Bearer KEY' on the API, the
    password of the web UI's login (any user name). Also CHATGENTITLE_API_KEY."""
    trusted_proxy: str | None = None
    """Addresses of reverse proxies (comma-separated IPs or networks, '*': any) whose X-Forwarded-For
    names the client. Without one, the connecting address is the client: behind a proxy, all its
    clients share one throttle on wrong keys."""
    max_batch: int = 8
    """Abstracts per micro-batch, at most (fewer when the deadline needs it)."""
    max_queue: int = 256
    """Queued requests per model before 503."""
    request_timeout: float = REQUEST_TIMEOUT_SECONDS
    """Seconds a request may take, queueing included; work that cannot finish in time gets 503 +
    Retry-After at once, and decoding past it stops."""
    db: str | None = None
    """Paper store (from crawl) for the uniqueness check."""
    index: str | None = None
    """Paper index (`chatgentitle index`) for related papers [default: beside the store, if built]."""
    ui: bool = True
    """Serve the web UI at / besides the API."""

    def __post_init__(self):
        if self.request_timeout <= 0 or self.max_batch < 1 or self.max_queue < 1:
            raise OptionError("request_timeout, max_batch and max_queue must be positive")

    def exposed_without_key(self) -> bool:
        """Listening beyond this machine with no key: anyone who can reach it can use the model."""
        if self.api_key:
            return False
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host != "localhost"


def create_app(sources: list, ranker=None, api_key: str | None = None, max_batch: int = 8, max_queue: int = 256,
               request_timeout: float = REQUEST_TIMEOUT_SECONDS, index=None):
    """The FastAPI app around title sources (TitleGenerator, RemoteTitles, or anything with their
    interface): each is a model id, the first the default. `app.state.service` is their TitleService."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel

    from chatgentitle import __version__
    from chatgentitle.serving.api import guard_doors, titles_router
    from chatgentitle.serving.jobs import TitleService
    from chatgentitle.serving.openai_routes import openai_router

    class Health(BaseModel):
        status: str
        model: str
        models: list[str]
        queued: int

    service = TitleService(sources if isinstance(sources, list) else [sources], ranker, max_batch, max_queue,
                           request_timeout, index)
    app = FastAPI(title="ChatGenTitle", version=__version__,
                  description="Titles for research papers from their abstracts.")
    app.state.service = service
    check_key = guard_doors(app, api_key)

    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)  # outermost: before any other layer reads a byte

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):  # the documented ErrorBody shape
        return JSONResponse({"detail": [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in err.errors()]},
                            status_code=422)

    @app.get("/health", response_model=Health)
    def health():
        return {"status": "ok", "model": service.default, "models": list(service.sources), "queued": service.queued()}

    app.include_router(titles_router(service, check_key))
    app.include_router(openai_router(service, check_key))
    return app


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 as soon as it passes the limit,
    whether the client announced its length or streams it in chunks (Transfer-Encoding: chunked); the
    rest is never read. A body within the limit is read here and handed on whole, so no request holds
    more than `limit` bytes of body in memory."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            return await self._refuse(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(scope, receive, send)
            more = message.get("more_body", False)
        body, handed = b"".join(chunks), False

        async def replay():
            nonlocal handed
            if handed:  # after the body: what the app waits for is the client going away
                return await receive()
            handed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        from starlette.responses import JSONResponse

        response = JSONResponse({"detail": f"request body over {self.limit} bytes"}, status_code=413,
                                headers={"Connection": "close"})
        await response(scope, receive, send)


def with_ui(app, api_key: str | None = None):
    """The app with the web UI mounted at /, behind Gradio's login when there is a key."""
    import gradio as gr
    from starlette.routing import Mount

    from chatgentitle.serving.web import build_demo

    def login(user: str, password: str) -> bool:
        return app.state.key_guard.matches(password)  # constant time; failures are throttled (api.guard_doors)

    app = gr.mount_gradio_app(app, build_demo(app.state.service), path="/", auth=login if api_key else None,
                              auth_message="Sign in with any user name; the password is the server's API key.",
                              run_history=False)  # no record of other users' abstracts
    ui = next(route.app for route in app.routes if isinstance(route, Mount))
    cookies = (f"access-token-{ui.cookie_id}", f"access-token-unsecure-{ui.cookie_id}")  # as Gradio reads them
    app.state.signed_in = lambda request: any(request.cookies.get(name) in ui.tokens for name in cookies)
    return app


def serve(cfg: ServeConfig, spec, named_models: dict[str, str] | None = None, echo=print) -> None:
    """Load the models, build the app and serve it until stopped."""
    import uvicorn

    from chatgentitle.titling.ranking import make_ranker
    from chatgentitle.titling.sources import load_sources

    if cfg.exposed_without_key():
        message = (f"serving on {cfg.host} WITHOUT an API key: anyone who can reach this port can use the model. "
                   "Give --api-key (or CHATGENTITLE_API_KEY).")
        warnings.warn(message, stacklevel=2)
        echo(f"WARNING: {message}")
    from chatgentitle.data.index import PaperIndex, default_index_path

    index = PaperIndex(cfg.index) if cfg.index or default_index_path().is_file() else None
    app = create_app(load_sources(spec, named_models or {}), make_ranker(cfg.db), cfg.api_key, cfg.max_batch,
                     cfg.max_queue, cfg.request_timeout, index)
    try:
        app.state.service.warm_up(WARM_UP_ABSTRACT)
    except Exception as err:  # e.g. a remote backend not up yet: serve anyway, costs get measured later
        echo(f"warning: warm-up failed ({err}); the first requests are admitted unmeasured")
    if cfg.ui:
        app = with_ui(app, cfg.api_key)
    echo(f"serving on http://{cfg.host}:{cfg.port}  (API docs: /docs)")
    uvicorn.run(app, **listening(cfg))


def listening(cfg: ServeConfig) -> dict:
    """uvicorn's settings from a ServeConfig: the address, and which proxies it believes about clients
    (none unless given: uvicorn's own default trusts X-Forwarded-For from 127.0.0.1)."""
    trusted = ",".join(split_csv(cfg.trusted_proxy))
    return {"host": cfg.host, "port": cfg.port, "log_level": "warning", "proxy_headers": bool(trusted),
            "forwarded_allow_ips": trusted or None}
