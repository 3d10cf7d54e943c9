"""Where titles come from: a `SourceSpec` says which model (a run dir, the packaged default, a base
model zero-shot, or a model behind an OpenAI-compatible server) and how to load it; `load_source`
turns it into a TitleSource. The CLI's model flags are generated from SourceSpec's fields.

    source = load_source(SourceSpec(model="runs/cs-lora", dtype="fp32"))
    source = load_source(SourceSpec(model="title-lora", endpoint="http://127.0.0.1:8000/v1"))
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

from chatgentitle.config import check_precision
from chatgentitle.errors import ChatGenTitleError

DEFAULT_MODEL = "default"  # the packaged adapter, wherever a run dir is asked for


class SourceError(ChatGenTitleError, ValueError):
    """A source that cannot be loaded as asked; the message says why, in one line."""


@dataclass
class SourceSpec:
    """Which model writes the titles, and how it is loaded."""

    model: str | None = None
    """Run dir or PEFT adapter dir ('default' or none: the packaged adapter); with --endpoint, the
    server's model name."""
    endpoint: str | None = None
    """Title through this OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1 for vLLM) instead of a
    model in this process."""
    endpoint_key: str | None = field(default=None, metadata={"envvar": "CHATGENTITLE_ENDPOINT_KEY"})
    """API key for the endpoint (or CHATGENTITLE_ENDPOINT_KEY / OPENAI_API_KEY)."""
    chat: bool = False
    """With an endpoint: chat messages (chat models, our serve) instead of completions with our prompt."""
    concurrency: int = 4
    """With an endpoint: requests in flight."""
    base_model: str | None = None
    """Base model (with no model: zero-shot, no adapter)."""
    prompt_template: str | None = None
    """Override the run dir's prompt template."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:1, ..."""
    dtype: str = "auto"
    """auto (bf16 on a GPU that has it, or a CPU where it measures faster), bf16, fp16 or fp32."""
    quantize: str | None = None
    """Load the base model in 8bit or 4bit; CUDA only."""
    merge: bool = True
    """Merge the adapter into the base model (faster decoding)."""
    index: str | None = None
    """Paper index (`chatgentitle index`): related papers, and their titles in the prompt of a model that reads
    them [default: beside the store]."""

    def __post_init__(self):
        check_precision(self.dtype, self.quantize)
        if self.endpoint and not self.model:
            raise SourceError("an endpoint needs a model name (the model id the server serves)")

    @property
    def run_dir(self) -> Path | None:
        return None if self.model in (None, DEFAULT_MODEL) else Path(self.model)


def load_source(spec: SourceSpec):
    """The TitleSource a spec asks for: a model in this process, or a remote server's."""
    from chatgentitle.model.loading import ModelError
    from chatgentitle.titling.generator import TitleGenerator

    if spec.endpoint:
        from chatgentitle.data.prompt import PromptTemplate
        from chatgentitle.titling.remote import RemoteTitles

        template = (PromptTemplate.load(spec.prompt_template) if spec.prompt_template
                    else TitleGenerator.default_template())
        return guided(RemoteTitles(spec.endpoint, spec.model, api_key=spec.endpoint_key, chat=spec.chat,
                                   template=template, concurrency=spec.concurrency), spec.index)
    try:
        generator = TitleGenerator.load(spec.run_dir, base_model=spec.base_model, device=spec.device,
                                        prompt_template=spec.prompt_template, dtype=spec.dtype,
                                        quantize=spec.quantize, merge=spec.merge)
        return guided(generator, spec.index)
    except (ModelError, ValueError) as err:
        raise SourceError(str(err)) from None


def guided(source, index: str | None = None):
    """The source with the paper index its template reads related titles from (`guide`). Without an index
    the titles come without them, and a warning says what to build."""
    from chatgentitle.data.index import PaperIndex, default_index_path

    if not source.template.related:
        return source
    path = Path(index) if index else default_index_path()
    if path.is_file():
        source.guide = PaperIndex(path)
        source.made_by = {**source.made_by, "index": str(path.resolve())}
    else:
        warnings.warn(f"{source.name} reads the titles of related papers, but there is no paper index at {path}: "
                      "titles without them (build one with `chatgentitle index PAPERS...`, or give --index)",
                      stacklevel=2)
    return source


def load_sources(spec: SourceSpec, named_models: dict[str, str]) -> list:
    """Several adapters by name (NAME -> run dir or 'default'), over one base model held once when
    there are several; the first is the default model."""
    from chatgentitle.model.loading import ModelError
    from chatgentitle.titling.generator import TitleGenerator

    if len(named_models) <= 1:
        name, model = next(iter(named_models.items()), (None, spec.model))
        source = load_source(replace(spec, model=model))
        if name:
            source.name = name
        return [source]
    if spec.endpoint:
        raise SourceError("several named models are served in process: drop the endpoint")
    if spec.quantize:
        raise SourceError("several named models share one unquantised base model: drop --quantize")
    try:
        return [guided(source, spec.index) for source in TitleGenerator.load_many(
            {name: None if path == DEFAULT_MODEL else path for name, path in named_models.items()},
            device=spec.device, dtype=spec.dtype)]
    except (ModelError, ValueError) as err:
        raise SourceError(str(err)) from None
