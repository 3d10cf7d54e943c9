"""`export --format gguf`: base + adapter merged into one GGUF file for llama.cpp, Ollama and LM Studio.

A GGUF file holds the model's hyperparameters and tokenizer as key/value metadata and its tensors under
llama.cpp's names (`blk.N.attn_q.weight`, ...). For a base that came from a GGUF file (the built-in
bases, or a `.gguf` path) the metadata and the tensor list are copied from that file, so the export has
the original's layout; for a Hugging Face Llama base with a byte-level BPE tokenizer they are built from
its config and tokenizer files, as llama.cpp's convert_hf_to_gguf.py does. Either way the file gets a
chat template that renders our prompt around one user message (the abstract), so a chat client titles
an abstract pasted as it is, and an Ollama Modelfile is written beside it.
"""

from __future__ import annotations

from pathlib import Path

from chatgentitle.data.prompt import PromptTemplate
from chatgentitle.data.records import atomic_path, write_atomic
from chatgentitle.model.loading import ModelError, merged_model, resolve_base, source_gguf
from chatgentitle.model.run_dir import RunDir

OUTTYPES = ("f16", "q8_0", "f32")
# transformers' model_type -> llama.cpp's architecture name (gguf-py's MODEL_ARCH_NAMES)
ARCHITECTURES = {"llama": "llama", "gemma3_text": "gemma3", "gemma3": "gemma3"}


def export_gguf(run_dir: str | Path, out_file: str | Path, outtype: str = "f16") -> Path:
    """Write `out_file` (a .gguf) and a `Modelfile` beside it; returns the GGUF's path."""
    import gguf

    if outtype not in OUTTYPES:
        raise ModelError(f"unknown GGUF type {outtype!r}: use {', '.join(OUTTYPES)}")
    out_file = Path(out_file)
    info = RunDir(run_dir).describe()
    model, tokenizer = merged_model(run_dir, "fp32")
    arch = ARCHITECTURES.get(model.config.model_type)
    if arch is None:
        raise ModelError(f"cannot export a {model.config.model_type!r} model to GGUF (supported: "
                         f"{', '.join(sorted(set(ARCHITECTURES.values())))}); use export --format hf")
    tensors = dict(_gguf_tensors(model, arch))
    source = source_gguf(info.base_model)
    try:
        with atomic_path(out_file) as tmp:
            writer = gguf.GGUFWriter(tmp, arch)
            if source:
                names = _copy_metadata(gguf.GGUFReader(source), writer)
                tensors = {name: tensors[name] for name in names}  # the original's tensors, in its order
            else:
                _hf_metadata(writer, model.config, resolve_base(info.base_model))
            writer.add_name(f"{RunDir(run_dir).name} (chatgentitle)")
            writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                                  "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype])
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
            writer.add_chat_template(chat_template(info.template, abstract_chars(info, tokenizer)))
            for name, data in tensors.items():
                _add_tensor(writer, name, data, outtype)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
        eos = tokenizer.convert_ids_to_tokens(tokenizer.eos_token_id)
        write_atomic(out_file.with_name("Modelfile"), lambda f: f.write(modelfile(out_file.name, info.template, eos)),
                     mode="w")
    except OSError as err:
        raise ModelError(f"cannot write {out_file}: {err.strerror or err}") from None
    return out_file


def _gguf_tensors(model, arch: str):
    """(GGUF name, fp32 numpy array) for each weight, in llama.cpp's layout."""
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch),
                                     config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        stem, _, suffix = hf_name.rpartition(".")
        name = names.get_name(stem)
        if name is None:
            continue
        data = tensor.float().numpy()
        if arch == "llama" and name.endswith(("attn_q", "attn_k")):
            heads = config.num_attention_heads if name.endswith("attn_q") else config.num_key_value_heads
            data = _rope_interleaved(data, heads)
        if arch == "gemma3" and name.endswith("norm"):
            data = data + 1  # Gemma stores norm weights as an offset from 1; GGUF stores the weight
        yield f"{name}.{suffix}", data


def _rope_interleaved(weights, heads: int):
    """HF's Llama q/k rows (rotary halves) -> llama.cpp's interleaved pairs (convert_hf_to_gguf's permute)."""
    rows = weights.shape[0] // heads // 2
    return weights.reshape(heads, 2, rows, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _add_tensor(writer, name: str, data, outtype: str) -> None:
    import gguf
    import numpy as np

    # norms and other vectors stay f32, as llama.cpp's converter keeps them
    if outtype == "f32" or data.ndim == 1:
        writer.add_tensor(name, data.astype(np.float32))
    elif outtype == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        quantized = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:  # f16, and rows too short for q8_0's blocks of 32
        writer.add_tensor(name, data.astype(np.float16))


def _copy_metadata(reader, writer) -> list[str]:
    """Copy the source GGUF's hyperparameters and tokenizer (not what this export sets); its tensor names."""
    import gguf

    keys = gguf.Keys
    ours = {keys.General.ARCHITECTURE, keys.General.NAME, keys.General.FILE_TYPE,
            keys.General.QUANTIZATION_VERSION, keys.Tokenizer.CHAT_TEMPLATE}
    for field in reader.fields.values():
        if field.name in ours or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        writer.add_key_value(field.name, field.contents(), kind,
                             sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    return [tensor.name for tensor in reader.tensors]


def _hf_metadata(writer, config, base_dir: str) -> None:
    """Hyperparameters and tokenizer of a Hugging Face Llama base (byte-level BPE tokenizers only)."""
    import gguf

    if config.model_type != "llama":
        raise ModelError(f"a {config.model_type!r} base exports to GGUF only from its own GGUF file")
    try:
        vocab = gguf.vocab.BpeVocab(Path(base_dir))
    except (FileNotFoundError, ValueError) as err:
        raise ModelError(f"cannot export {base_dir}'s tokenizer to GGUF (byte-level BPE only): {err}; "
                         f"use export --format hf and llama.cpp's convert_hf_to_gguf.py") from None
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base((getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(vocab.vocab_size)
    tokens, types = zip(*((text, kind) for text, _, kind in vocab.all_tokens()), strict=True)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # llama.cpp: GPT-2's split regex, what a byte-level pre-tokenizer uses
    writer.add_token_list(list(tokens))
    writer.add_token_types(list(types))
    special = gguf.SpecialVocab(Path(base_dir), load_merges=True, n_vocab=vocab.vocab_size)
    special.chat_template = None  # ours is set by export_gguf
    special.add_to_gguf(writer, quiet=True)


def abstract_chars(info, tokenizer) -> int:
    """About how many characters of an abstract the model sees in process, where the prompt is cut to the
    run's cutoff_len tokens: the tokens the instruction leaves, at the characters per token of the
    packaged sample abstracts. A chat template cannot count tokens; it cuts at this many characters."""
    from chatgentitle.data.prompt import encode_prompt
    from chatgentitle.data.records import sample_papers

    overhead = len(encode_prompt(info.template, tokenizer, "x")) - 1
    samples = [paper["abstract"] for paper in sample_papers()]
    tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in samples)
    return int((info.cutoff_len - overhead) * sum(map(len, samples)) / tokens)


def chat_template(template: PromptTemplate, max_abstract_chars: int | None = None) -> str:
    """A Jinja chat template that renders our prompt: the last user message is the abstract (cut at a word
    boundary near max_abstract_chars, as the model saw it), a system message (if any) replaces the
    instruction. llama.cpp, LM Studio and transformers read it."""
    def literal(text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"

    before, after = template.around_abstract()
    return (
        "{%- set ns = namespace(abstract='', instruction=" + literal(template.instruction) + ") -%}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'system' -%}{%- set ns.instruction = message['content'] | trim -%}"
        "{%- elif message['role'] == 'user' -%}{%- set ns.abstract = message['content'] | trim -%}"
        "{%- endif -%}{%- endfor -%}"
        "{{ " + literal(before).replace("{instruction}", "' + ns.instruction + '") + " }}"
        + ("{{ ns.abstract }}" if max_abstract_chars is None else
           f"{{{{ ns.abstract | truncate({max_abstract_chars}, false, '', 0) }}}}")
        + "{{ " + literal(after) + " }}"
    )


def modelfile(gguf_name: str, template: PromptTemplate, eos_token: str) -> str:
    """An Ollama Modelfile: the GGUF beside it, our prompt as TEMPLATE, greedy decoding, a title's length."""
    before, after = template.around_abstract()
    before = before.replace("{instruction}", "{{ if .System }}{{ .System }}{{ else }}" + template.instruction
                            + "{{ end }}")
    return (f"# ollama create chatgentitle -f Modelfile && ollama run chatgentitle \"<abstract>\"\n"
            f"FROM ./{gguf_name}\n"
            f'TEMPLATE """{before}{{{{ .Prompt }}}}{after}"""\n'
            f"PARAMETER temperature 0\n"
            f"PARAMETER repeat_penalty 1.0\n"
            f"PARAMETER num_predict 40\n"
            f'PARAMETER stop "{eos_token}"\n'
            f'PARAMETER stop "\\n"\n')


def gguf_instructions(gguf_file: Path) -> str:
    """What to do with the export: llama.cpp, its Python server behind our remote backend, Ollama."""
    name = gguf_file.stem
    return (f"GGUF written to {gguf_file} ({gguf_file.stat().st_size / 1e6:.0f} MB), Ollama Modelfile beside it\n"
            f"llama.cpp:     llama-cli -m {gguf_file} -cnv --temp 0   (paste an abstract)\n"
            f"               llama-server -m {gguf_file} --port 8080\n"
            f"Python server: python -m llama_cpp.server --model {gguf_file} --model_alias {name} --port 8080\n"
            f"then: chatgentitle generate --endpoint http://127.0.0.1:8080/v1 --model {name} --chat ...\n"
            f"Ollama:        cd {gguf_file.parent} && ollama create {name} -f Modelfile && ollama run {name}")
