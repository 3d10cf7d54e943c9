"""A merged Hugging Face checkpoint (plain transformers, vLLM) and the `export` command's dispatch."""

from __future__ import annotations

from pathlib import Path

from chatgentitle.data.records import atomic_dir
from chatgentitle.model.loading import merged_model, resolve_base
from chatgentitle.model.run_dir import RunDir, RunDirError


def export_merged(run_dir: str | Path, out_dir: str | Path, dtype: str = "fp32") -> Path:
    """Base + adapter merged into one HF checkpoint that plain transformers loads.

    The adapter alone (PEFT format) and the prompt template are copied beside it.
    """
    run = RunDir(run_dir)
    merged, tokenizer = merged_model(run_dir, dtype)
    with atomic_dir(Path(out_dir)) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        run.describe().template.save(tmp)
        run.copy_adapter(tmp / "adapter")
    return Path(out_dir)


def export_instructions(run_dir: str | Path, out_dir: str | Path) -> str:
    """What an exported model is for: the command lines that serve it with vLLM and title through it."""
    name, out_dir = Path(run_dir).name, Path(out_dir)
    base = resolve_base(RunDir(run_dir).describe().base_model)  # an HF dir (built-in GGUF bases: converted)
    return (f"merged model written to {out_dir} (the adapter alone and its prompt in {out_dir / 'adapter'})\n"
            f"vLLM, merged:  python -m vllm.entrypoints.openai.api_server --model {out_dir}\n"
            f"vLLM, LoRA:    python -m vllm.entrypoints.openai.api_server --model {base} --enable-lora "
            f"--lora-modules {name}={out_dir / 'adapter'}\n"
            f"then: chatgentitle generate --endpoint http://127.0.0.1:8000/v1 --model {name} "
            f"--prompt-template {out_dir / 'adapter'} ...")


def export(adapter: str, out_dir: Path, out_format: str = "hf", dtype: str = "fp32", outtype: str = "f16") -> str:
    """`chatgentitle export`: the adapter (a run dir, or "default": the packaged one, named chatgentitle)
    merged into its base, as an HF checkpoint (dtype) or a GGUF file named NAME-OUTTYPE.gguf; returns how to
    use what was written."""
    from chatgentitle.titling.generator import default_adapter_dir

    name = "chatgentitle" if adapter == "default" else Path(adapter).name
    run_dir = default_adapter_dir() if adapter == "default" else Path(adapter)
    if run_dir is None or not run_dir.exists():
        raise RunDirError(f"adapter not found: {run_dir or 'the packaged default (not in this install)'}")
    if out_format == "gguf":
        from chatgentitle.export.gguf_file import export_gguf, gguf_instructions

        return gguf_instructions(export_gguf(run_dir, out_dir / f"{name}-{outtype}.gguf", outtype))
    return export_instructions(run_dir, export_merged(run_dir, out_dir, dtype))
