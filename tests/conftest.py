"""Shared fixtures: a tiny Llama model and tokenizer built on the fly, real-format paper files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from helpers import SERVER_KEY, WORDS, FakeGenerator, paper_row, serving


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path, monkeypatch):
    """Never touch the real user cache or data dir from a test."""
    monkeypatch.setenv("CHATGENTITLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CHATGENTITLE_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer Llama with a word-level tokenizer trained here: fast, offline, exact."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, set_seed

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(special_tokens=["<unk>", "<s>", "</s>", "<pad>"])
    tok.train_from_iterator([WORDS, WORDS.lower(), "### ### : :"], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.save_pretrained(out)
    set_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def run_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A real (tiny) run dir named "run": trained for a few steps so the adapter is not the identity."""
    from chatgentitle.training.config import TrainConfig
    from chatgentitle.training.loop import train

    root = tmp_path_factory.mktemp("gen")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(paper_row(i)) + "\n" for i in range(8)))
    cfg = TrainConfig(base_model=str(tiny_model_dir), data=str(data), output_dir=str(root / "run"),
                      batch_size=4, micro_batch_size=4, max_steps=2, val_set_size=0, cutoff_len=64,
                      dtype="fp32", prompt_template="compact", save_steps=100)
    return train(cfg)


@pytest.fixture(scope="session")
def tiny_generator(run_dir):
    """A real TitleGenerator on the tiny run dir (fp32: exact)."""
    from chatgentitle.titling.generator import TitleGenerator

    return TitleGenerator.load(run_dir, dtype="fp32")


@pytest.fixture(scope="session")
def tiny_server(tiny_generator):
    """The real `serve` app around the tiny generator on 127.0.0.1, API key SERVER_KEY; yields .../v1."""
    from chatgentitle.serving.app import create_app

    app = create_app([tiny_generator], api_key=SERVER_KEY)
    app.state.key_guard.limit = 10_000  # many tests send wrong keys on purpose (test_security tests the limit)
    with serving(app) as url:
        yield url + "/v1"


@pytest.fixture
def papers_file(tmp_path) -> Path:
    """40 good papers in snapshot JSON lines, gzipped."""
    path = tmp_path / "papers.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for i in range(40):
            f.write(json.dumps(paper_row(i)) + "\n")
    return path


@pytest.fixture
def train_file(tmp_path) -> Path:
    """24 title/abstract pairs in prepare's JSONL, two titles alternating."""
    path = tmp_path / "train.jsonl"
    rows = [paper_row(i, title="Robust efficient attention" if i % 2 else "Deep graph models") for i in range(24)]
    path.write_text("".join(json.dumps({k: r[k] for k in ("id", "title", "abstract")}) + "\n" for r in rows))
    return path


@pytest.fixture
def fake_generator():
    return FakeGenerator()
