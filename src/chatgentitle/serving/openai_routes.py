"""The OpenAI-compatible routes of `serve`: GET /v1/models, POST /v1/completions (whole prompts, as vLLM
takes them) and POST /v1/chat/completions (the last user message with text is the abstract).

Fields this server does not use are ignored, as OpenAI-compatible servers do; `n` titles are distinct
candidates; streams send each title whole (beam search settles titles only at the end).
"""


import json
import time
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model, model_validator

from chatgentitle.config import bounds
from chatgentitle.decoding.options import GenerationOptions
from chatgentitle.serving.api import (
    ROUTE_ERRORS,
    STEERING,
    answer,
    option_fields,
    responses,
    served_model,
    steering_excludes,
)
from chatgentitle.serving.jobs import HOLDS_TEXT, MAX_ABSTRACT_CHARS, MAX_ABSTRACTS, MAX_INSTRUCTION_CHARS, TitleService

_N, _TOKENS = bounds(GenerationOptions, "num_candidates"), bounds(GenerationOptions, "max_new_tokens")
_TEMPERATURE, _TOP_P = bounds(GenerationOptions, "temperature"), bounds(GenerationOptions, "top_p")

MAX_PROMPT_CHARS = MAX_ABSTRACT_CHARS + 2000  # the abstract's bound plus a template
Prompt = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PROMPT_CHARS, pattern=HOLDS_TEXT)]
Text = Annotated[str, StringConstraints(max_length=MAX_ABSTRACT_CHARS)]
AbstractText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ABSTRACT_CHARS, pattern=HOLDS_TEXT)]
ERRORS = responses(*ROUTE_ERRORS)
SSE_EVENT = {"type": "object", "required": ["data"],  # each event: a JSON chunk, then "[DONE]"
             "properties": {"data": {"type": "string"}, "event": {"type": "string"}}}
STREAM = {200: {"content": {"text/event-stream": {"schema": SSE_EVENT}},
                "description": "JSON, or server-sent events with stream: true."}}


class ContentPart(BaseModel):
    type: str
    text: Text | None = None


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | Annotated[list[ContentPart], Field(max_length=16)] | None = None
    """Text, or OpenAI content parts ({"type": "text", "text": ...})."""

    def text(self) -> str:
        if isinstance(self.content, list):
            return " ".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


# GenerationOptions fields that OpenAI's own fields carry (n, max_tokens, temperature, top_p); every other
# field is an extension under its own name, as vLLM takes top_k or repetition_penalty
OPENAI_NAMED = ("num_candidates", "max_new_tokens", "temperature", "top_p")
Extensions = create_model("Extensions", **option_fields(OPENAI_NAMED, unset=True, note="Extension (ChatGenTitle): "))
EXTENSIONS = tuple(Extensions.model_fields)


class OpenAIRequest(Extensions):
    """What OpenAI completion and chat requests share, and our extensions: every other GenerationOptions
    field by its own name (include, words, num_beams, top_k, ...)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"allOf": steering_excludes(
        STEERING, {"temperature": {"type": "number", "exclusiveMinimum": 0}, "do_sample": {"const": True},
                   "consensus": {"type": "integer", "minimum": 1},
                   "no_repeat_ngram_size": {"type": "integer", "minimum": 1}})})

    model: str
    n: int = Field(1, ge=_N[0], le=_N[1], description="Titles to return (distinct candidates).")
    max_tokens: int | None = Field(None, ge=_TOKENS[0], le=_TOKENS[1], description="max_new_tokens: a title needs few.")
    max_completion_tokens: int | None = Field(None, ge=_TOKENS[0], le=_TOKENS[1])
    temperature: float | None = Field(None, ge=0, le=_TEMPERATURE[1],
                                      description="0 or absent: the default decoding; from "
                                                  f"{_TEMPERATURE[0]}: sampling at this temperature.",
                                      json_schema_extra={"not": {"type": "number", "exclusiveMinimum": 0,
                                                                 "exclusiveMaximum": _TEMPERATURE[0]}})
    top_p: float | None = Field(None, ge=_TOP_P[0], le=_TOP_P[1])
    stream: bool = False
    stream_options: dict | None = None

    @model_validator(mode="after")
    def sampling_temperature(self):
        if self.temperature and self.temperature < _TEMPERATURE[0]:
            raise ValueError(f"temperature is 0 (the default decoding) or from {_TEMPERATURE[0]} to "
                             f"{_TEMPERATURE[1]} (sampling)")
        GenerationOptions(**self.given_options())  # include and words need the beam search: an OptionError: 422
        return self

    def given_options(self) -> dict:
        """The GenerationOptions fields this request gives (over the model's defaults); out-of-bounds values
        were refused (422) above, as on /v1/titles."""
        options = {name: value for name in EXTENSIONS if (value := getattr(self, name)) not in (None, [])}
        options |= {"num_candidates": self.n} | ({"include": tuple(self.include)} if self.include else {})
        if self.max_completion_tokens or self.max_tokens:
            options["max_new_tokens"] = self.max_completion_tokens or self.max_tokens
        if self.temperature:  # sampling, as a client asking for a temperature expects
            options.update(do_sample=True, temperature=self.temperature, top_p=self.top_p or 1.0)
        elif options.get("do_sample") and self.top_p:
            options["top_p"] = self.top_p
        return options

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


USER_WITH_TEXT = {"type": "object", "required": ["role", "content"],
                  "properties": {"role": {"const": "user"},
                                 "content": {"type": "string", "minLength": 1, "pattern": HOLDS_TEXT}}}


class ChatRequest(OpenAIRequest):
    """A chat completion: the last user message with text is the abstract."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=64, json_schema_extra={"contains": USER_WITH_TEXT})

    def abstract(self) -> str | None:
        """The last user message with text (parts joined, cut to the abstract's bound), if any."""
        texts = [m.text().strip() for m in self.messages if m.role == "user"]
        return next((text[:MAX_ABSTRACT_CHARS] for text in reversed(texts) if text), None)

    def instruction(self) -> str | None:
        """The last system (or developer) message with text: the prompt's instruction, as in the exported
        GGUF's chat template and the remote backend (None: the model's own)."""
        texts = [m.text().strip() for m in self.messages if m.role in ("system", "developer")]
        return next((text[:MAX_INSTRUCTION_CHARS] for text in reversed(texts) if text), None)


class CompletionRequest(OpenAIRequest):
    """A completion: each prompt is a whole prompt in the served model's template (vLLM's convention)."""

    prompt: Prompt | Annotated[list[Prompt], Field(min_length=1, max_length=MAX_ABSTRACTS)]

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Completion(BaseModel):
    id: str
    object: str
    created: int
    model: str
    choices: list[dict]
    usage: Usage


class ModelList(BaseModel):
    object: str
    data: list[dict]


def _event(payload: dict | str) -> str:
    """One server-sent event."""
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _sse(chunks: list[dict], reply: dict, usage: dict | None) -> StreamingResponse:
    """Server-sent events: each chunk, then usage (when asked for), then [DONE]."""
    events = [*map(_event, chunks), *([_event({**reply, "choices": [], "usage": usage})] if usage else []),
              _event("[DONE]")]
    return StreamingResponse(iter(events), media_type="text/event-stream")


def _chat_chunks(reply: dict, titles: list[str]) -> list[dict]:
    """A chat stream's chunks: per choice the role, the title, the finish."""
    chunk = {**reply, "object": "chat.completion.chunk"}
    deltas = [({"role": "assistant", "content": ""}, None), (None, None), ({}, "stop")]
    return [{**chunk, "choices": [{"index": i, "delta": {"content": title} if delta is None else delta,
                                   "finish_reason": finish}]}
            for i, title in enumerate(titles) for delta, finish in deltas]


def openai_router(service: TitleService, check_key) -> APIRouter:
    router = APIRouter(dependencies=[Depends(check_key)])

    class Chat(ChatRequest):
        model: str = served_model(service, required=True)

    class Completions(CompletionRequest):
        model: str = served_model(service, required=True)

    @router.get("/v1/models", response_model=ModelList, responses=responses(401, 429))
    def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "chatgentitle"}
                                           for name in service.sources]}

    @router.post("/v1/completions", response_model=Completion, responses={**ERRORS, **STREAM})
    async def completions(body: Completions):
        """Each prompt continued by the model: its titles (n per prompt), choice index = prompt x n + k."""
        prompts = body.prompts()
        results = await answer(service, service.completions, prompts, body.given_options(), model=body.model)
        source = service.source(body.model)
        choices = [{"index": i * body.n + k, "text": title, "finish_reason": "stop", "logprobs": None}
                   for i, titles in enumerate(results) for k, title in enumerate(titles)]
        usage = _usage(sum(source.count_tokens(p) for p in prompts),
                       sum(source.count_tokens(c["text"]) + 1 for c in choices))  # +1: EOS
        reply = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                 "model": source.name}
        if not body.stream:
            return {**reply, "choices": choices, "usage": usage}
        return _sse([{**reply, "choices": [choice]} for choice in choices], reply,
                    usage if body.include_usage() else None)

    @router.post("/v1/chat/completions", response_model=Completion, responses={**ERRORS, **STREAM})
    async def chat_completions(body: Chat):
        """The last user message with text is an abstract; each choice is a title (n: distinct candidates)."""
        abstract = body.abstract()
        if abstract is None:
            raise HTTPException(status_code=422, detail="no user message holds an abstract")
        instruction = body.instruction()
        results = await answer(service, service.titles, [abstract], body.given_options(), instruction,
                               model=body.model)
        source = service.source(body.model)
        titles = [c.title for c in results[0].candidates]
        usage = _usage(source.count_tokens(abstract, as_prompt=True),
                       sum(source.count_tokens(title) + 1 for title in titles))  # +1: EOS
        reply = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": source.name}
        if not body.stream:
            choices = [{"index": i, "message": {"role": "assistant", "content": title}, "finish_reason": "stop"}
                       for i, title in enumerate(titles)]
            return {**reply, "object": "chat.completion", "choices": choices, "usage": usage}
        return _sse(_chat_chunks(reply, titles), reply, usage if body.include_usage() else None)

    return router
