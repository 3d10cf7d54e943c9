"""Shared fixtures: a tiny Llama model and tokenizer built on the fly, real-format paper files."""

from __future__ import annotations

import contextlib
import gzip
import json
from pathlib import Path

import pytest

from chatgentitle.prompt import SEED_INSTRUCTION

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = Path(__file__).parent / "data"

WORDS = (
    "we propose a novel method for learning graph neural networks deep models transformer "
    "attention language image segmentation robust efficient training data results show that "
    "our approach outperforms baselines on benchmarks quantum field theory spectra of the "
    "Title Abstract Instruction Input Response Below is an instruction describes task paired "
    "with input provides further context Write response appropriately completes request"
)


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or skip the test when that folder is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


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
    from chatgentitle.config import TrainConfig
    from chatgentitle.train import train

    root = tmp_path_factory.mktemp("gen")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(paper_row(i)) + "\n" for i in range(8)))
    cfg = TrainConfig(base_model=str(tiny_model_dir), data=str(data), output_dir=str(root / "run"),
                      batch_size=4, micro_batch_size=4, max_steps=2, val_set_size=0, cutoff_len=64,
                      dtype="fp32", prompt_template="compact", save_steps=100)
    return train(cfg)


SERVER_KEY = "s3cret"


@pytest.fixture(scope="session")
def tiny_generator(run_dir):
    """A real TitleGenerator on the tiny run dir (fp32: exact)."""
    from chatgentitle.generate import TitleGenerator

    return TitleGenerator.load(run_dir, dtype="fp32")


@pytest.fixture(scope="session")
def tiny_server(tiny_generator):
    """The real `serve` app around the tiny generator on 127.0.0.1, API key SERVER_KEY; yields .../v1."""
    from chatgentitle.api import create_app

    with serving(create_app(tiny_generator, api_key=SERVER_KEY)) as url:
        yield url + "/v1"


@contextlib.contextmanager
def serving(app):
    """Run an ASGI app with uvicorn on a free 127.0.0.1 port for the block; yields its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def paper_row(i: int, **overrides) -> dict:
    """One paper in the snapshot schema."""
    row = {
        "id": f"2501.{i:05d}", "submitter": None, "authors": "A. Author, B. Author",
        "title": f"Robust graph neural networks number {i}",
        "comments": None, "journal-ref": None, "doi": None, "report-no": None,
        "categories": "cs.LG cs.AI", "license": None,
        "abstract": f"We propose a novel method {i} for learning graph neural networks. " * 3,
        "versions": [], "update_date": f"2025-{1 + i % 12:02d}-15", "authors_parsed": [],
    }
    row.update(overrides)
    return row


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


class FakeGenerator:
    """Stands in for TitleGenerator where the model is not the point: deterministic titles.

    With a delay it is a slow model that, like the real one, stops early when should_stop says so
    (checked every 10 ms, as the real one checks between decoding steps)."""

    name = "fake"
    instruction = SEED_INSTRUCTION

    def __init__(self, delay_seconds: float = 0.0):
        self.delay_seconds = delay_seconds
        self.calls: list[tuple[int, object]] = []  # (batch size, options)
        self.stopped_early = 0

    def generate(self, abstracts, options=None, instruction=None, should_stop=None, rendered=False):
        import time

        from chatgentitle.generate import GenerationOptions

        options = options or GenerationOptions()
        self.calls.append((len(abstracts), options))
        end = time.monotonic() + self.delay_seconds
        while time.monotonic() < end:
            if should_stop and should_stop():
                self.stopped_early += 1
                break
            time.sleep(0.01)
        out = []
        for abstract in abstracts:
            head = " ".join(abstract.split()[:3]).title()
            out.append([f"{head} Candidate {k}"[: options.max_new_tokens * 8] for k in range(options.num_candidates)])
        return out

    def __call__(self, abstracts, options=None, instruction=None):
        return [c[0] for c in self.generate(abstracts, options, instruction)]

    def count_tokens(self, text, as_prompt=False):
        return len(text.split()) + (10 if as_prompt else 0)

    def stream(self, abstract, options=None, instruction=None):
        title = self([abstract], options, instruction)[0]
        for i in range(1, len(title.split()) + 1):
            yield " ".join(title.split()[:i])


@pytest.fixture
def fake_generator():
    return FakeGenerator()
