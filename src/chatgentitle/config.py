"""What every typed config shares: the docstring under each field (the CLI's help, the API schema's
descriptions), bounds and phrase limits on fields, the comma-separated flag splitter, the dtypes and
quantisations a model loads in, and the default base model.

The configs themselves live with what they configure: GenerationOptions (decoding/options.py),
TrainConfig (training/config.py), PrepareConfig, CrawlJob, ServeConfig, SourceSpec. A YAML file gives
the values, command-line flags override them, and the resolved config is saved next to the outputs.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import field
from functools import cache

from chatgentitle.errors import OptionError

DTYPES = ("auto", "bf16", "fp16", "fp32")  # auto: bf16 where it is measured faster (model/loading.bf16_pays_off)
QUANTIZATIONS = ("8bit", "4bit")  # bitsandbytes, CUDA only
DEFAULT_BASE = "smollm2-135m"  # SmolLM2-135M-Instruct, packaged as a GGUF wheel (model/loading.py: BUILTIN_BASES)


@cache
def field_docs(cls) -> dict[str, str]:
    """The docstring under each field of a dataclass (what the CLI, the API schema and the web UI show)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def split_csv(value: str | None) -> tuple[str, ...]:
    """A comma-separated flag's values ("cs.AI, cs.CL" -> ("cs.AI", "cs.CL")); the one splitter of them."""
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def split_named(value: str, default_name: str) -> tuple[str, str]:
    """A NAME=VALUE flag's (name, value) ("cs=runs/cs" -> ("cs", "runs/cs")); a value alone, or one whose
    "name" holds a slash (a path with "="), gets default_name. The one reader of such flags (eval, serve)."""
    name, sep, rest = value.partition("=")
    return (name, rest) if sep and name and "/" not in name else (default_name, value)


def check_precision(dtype: str, quantize: str | None) -> None:
    """OptionError unless dtype is one of DTYPES and quantize None or one of QUANTIZATIONS."""
    if dtype not in DTYPES:
        raise OptionError(f"dtype must be {', '.join(DTYPES)}, not {dtype!r}")
    if quantize not in (None, *QUANTIZATIONS):
        raise OptionError(f"quantize must be {' or '.join(QUANTIZATIONS)}, not {quantize!r}")


def bounds(cls, name: str) -> tuple:
    """The (low, high) bound of a dataclass field: what every front end derives its limits from."""
    return cls.__dataclass_fields__[name].metadata["range"]


def phrase_limits(cls, name: str) -> tuple[int, int]:
    """(most phrases, most characters per phrase) of a phrases field."""
    return cls.__dataclass_fields__[name].metadata["phrases"]


def bounded(default, low, high):
    """A field whose value must lie in [low, high] (or be None when that is its default): the bound every
    front end enforces and shows."""
    return field(default=default, metadata={"range": (low, high)})


def phrases(most: int, chars: int):
    """A field of up to `most` phrases of 1 to `chars` characters each (a repeatable flag, a JSON array)."""
    return field(default=(), metadata={"phrases": (most, chars)})


