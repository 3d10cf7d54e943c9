"""`export --format gguf`: the file's layout read back by transformers, its chat template, its errors,
and (where llama-cpp-python is installed) titles through the real llama.cpp engine and its server."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from helpers import WORDS, paper_row

from chatgentitle.cli import cli
from chatgentitle.data.prompt import PromptTemplate
from chatgentitle.decoding.options import GenerationOptions
from chatgentitle.export.gguf_file import chat_template, export_gguf
from chatgentitle.model.loading import ModelError, merged_model

GREEDY = GenerationOptions(num_beams=1, consensus=0, repetition_penalty=1.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory):
    """A run dir over a tiny Llama with a byte-level BPE tokenizer (what llama.cpp can tokenize) and
    grouped-query attention (2 heads, 1 KV head: the q/k row order matters)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, set_seed

    from chatgentitle.training.config import TrainConfig
    from chatgentitle.training.loop import train

    root = tmp_path_factory.mktemp("bpe")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([WORDS, WORDS.lower(), "Title: Abstract: \n\n"] * 5, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    base = root / "base"
    tokenizer.save_pretrained(base)
    set_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(base)
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(paper_row(i)) + "\n" for i in range(8)))
    cfg = TrainConfig(base_model=str(base), data=str(data), output_dir=str(root / "run"), batch_size=4,
                      micro_batch_size=4, max_steps=40, val_set_size=0, cutoff_len=448, dtype="fp32",
                      prompt_template="compact", save_steps=100, learning_rate=0.01, warmup_steps=0,
                      lora_target_modules=["all-linear"], lora_dropout=0.0)
    return train(cfg)


@pytest.fixture(scope="module")
def gguf_f16(bpe_run, tmp_path_factory):
    return export_gguf(bpe_run, tmp_path_factory.mktemp("gguf") / "run-f16.gguf", "f16")


@pytest.fixture(scope="module")
def gguf_f32(bpe_run, tmp_path_factory):
    """Full precision: the tiny model's close logits must not be rounded into other choices."""
    return export_gguf(bpe_run, tmp_path_factory.mktemp("gguf") / "run-f32.gguf", "f32")


@pytest.mark.parametrize("outtype, tolerance", [("f32", 1e-4), ("f16", 2e-2), ("q8_0", 5e-2)])
def test_gguf_weights_read_back_by_transformers(bpe_run, tmp_path, outtype, tolerance):
    """transformers' own GGUF loader (which undoes llama.cpp's q/k row order) gives the merged model's logits."""
    import torch
    from transformers import AutoModelForCausalLM

    out = export_gguf(bpe_run, tmp_path / f"run-{outtype}.gguf", outtype)
    reread = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32)
    merged, tokenizer = merged_model(bpe_run)
    ids = torch.tensor([tokenizer("we propose a novel method for graph neural networks")["input_ids"]])
    with torch.no_grad():
        expected, got = merged(ids).logits, reread(ids).logits
    assert torch.allclose(expected, got, atol=tolerance * expected.abs().max()), (expected - got).abs().max()
    assert (tmp_path / "Modelfile").is_file()


def test_chat_template_renders_our_prompt(gguf_f16):
    """One user message holding the abstract renders exactly the prompt the adapter was trained on; a
    system message replaces the instruction."""
    import gguf
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    reader = gguf.GGUFReader(gguf_f16)
    source = reader.fields["tokenizer.chat_template"].contents()
    template = ImmutableSandboxedEnvironment().from_string(source)
    prompt = PromptTemplate.load("compact")
    abstract = "We propose a 'novel' method\\n for graphs."
    assert template.render(messages=[{"role": "user", "content": f"  {abstract}\n"}]) == prompt.render(abstract)
    assert template.render(messages=[{"role": "system", "content": "Name it."},
                                     {"role": "user", "content": abstract}]) == prompt.render(abstract, "Name it.")
    # a long abstract is cut at a word boundary to about what the model sees in process (cutoff_len)
    long = "graph " * 2000
    cut = template.render(messages=[{"role": "user", "content": long}])
    assert cut.endswith("graph\n\nTitle:") and len(cut) < len(prompt.render(long)) / 5
    assert source.replace(source[source.index("truncate("):source.index(")", source.index("truncate("))], "") == \
        chat_template(prompt, 1).replace("truncate(1, false, '', 0", "")
    modelfile = (gguf_f16.parent / "Modelfile").read_text()
    assert f"FROM ./{gguf_f16.name}" in modelfile and "PARAMETER temperature 0" in modelfile
    assert 'PARAMETER stop "<|endoftext|>"' in modelfile and "Abstract: {{ .Prompt }}" in modelfile


def test_export_gguf_cli_and_errors(bpe_run, run_dir, tmp_path, monkeypatch):
    runner = CliRunner()
    result = runner.invoke(cli, ["export", "--adapter", str(bpe_run), "--out", str(tmp_path / "a"),
                                 "--format", "gguf", "--outtype", "q8_0"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "run-q8_0.gguf").is_file() and "llama_cpp.server" in result.output
    # a word-level tokenizer cannot go into a GGUF: one line, no file
    result = runner.invoke(cli, ["export", "--adapter", str(run_dir), "--out", str(tmp_path / "b"),
                                 "--format", "gguf"])
    assert result.exit_code == 1 and "byte-level BPE only" in result.output
    assert result.output.count("\n") == 1 and not list((tmp_path / "b").glob("*"))
    with pytest.raises(ModelError, match="unknown GGUF type"):
        export_gguf(bpe_run, tmp_path / "x.gguf", "q4_k")

    import gguf

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", full_disk)
    with pytest.raises(ModelError, match="No space left on device"):
        export_gguf(bpe_run, tmp_path / "c" / "run.gguf", "f16")
    assert not list((tmp_path / "c").iterdir())


# --------------------------------------------------------------------------- the real engine
def test_llama_cpp_titles_match_ours(bpe_run, gguf_f32):
    """llama.cpp greedy on the exported file = our greedy in process, by raw completion and by chat."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from chatgentitle.titling.generator import TitleGenerator

    ours = TitleGenerator.load(bpe_run, dtype="fp32")
    llm = llama_cpp.Llama(model_path=str(gguf_f32), n_ctx=1024, verbose=False, seed=0)
    abstracts = [paper_row(i)["abstract"] for i in range(4)]
    titles = [found[0] for found in ours.generate(abstracts, GREEDY)]
    assert all("graph" in title for title in titles), titles  # trained enough to write words
    template = ours.template
    for abstract, title in zip(abstracts, titles, strict=True):
        raw = llm.create_completion(template.render(abstract), max_tokens=12, temperature=0, repeat_penalty=1.0)
        chat = llm.create_chat_completion([{"role": "user", "content": abstract}], max_tokens=12,
                                          temperature=0, repeat_penalty=1.0)
        assert raw["choices"][0]["text"].strip() == title
        assert chat["choices"][0]["message"]["content"].strip() == title


def test_llama_cpp_server_behind_our_remote_backend(gguf_f16, tmp_path):
    """llama.cpp's OpenAI-compatible server titles a batch file through `generate --endpoint`, each id once."""
    pytest.importorskip("llama_cpp.server")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_f16),
                               "--model_alias", "tiny", "--port", str(port), "--n_ctx", "512"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import httpx

        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        papers = tmp_path / "papers.jsonl"
        papers.write_text("".join(json.dumps(paper_row(i)) + "\n" for i in range(16)))
        out = tmp_path / "titles.jsonl"
        result = CliRunner().invoke(cli, ["generate", "--endpoint", f"http://127.0.0.1:{port}/v1", "--model", "tiny",
                                          "--input", str(papers), "--output", str(out),
                                          "--max-new-tokens", "12"])
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert sorted(r["id"] for r in rows) == sorted(paper_row(i)["id"] for i in range(16))
        assert all(r["title"] for r in rows)
    finally:
        server.terminate()
        server.wait(10)
