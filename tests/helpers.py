"""What the tests share besides fixtures: a stand-in title source, a loopback server, paper rows."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest

from chatgentitle.data.prompt import SEED_INSTRUCTION

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = Path(__file__).parent / "data"
SERVER_KEY = "s3cret"

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


@contextlib.contextmanager
def serving(app, **settings):
    """Run an ASGI app with uvicorn on a free 127.0.0.1 port for the block (`settings`: more of uvicorn's
    Config); yields its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = {"host": "127.0.0.1", "port": port, "log_level": "warning"} | settings
    server = uvicorn.Server(uvicorn.Config(app, **settings))
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


class FakeGenerator:
    """Stands in for TitleGenerator where the model is not the point: deterministic titles.

    With a delay it is a slow model that, like the real one, stops early when should_stop says so
    (checked every 10 ms, as the real one checks between decoding steps)."""

    name = "fake"
    instruction = SEED_INSTRUCTION
    fixed: tuple[str, ...] = ()
    judges = True
    verdict_scale = None

    @property
    def defaults(self):
        from chatgentitle.decoding.options import GenerationOptions

        return GenerationOptions()

    def __init__(self, delay_seconds: float = 0.0, seconds_per_abstract: float = 0.0):
        self.delay_seconds = delay_seconds  # per call
        self.seconds_per_abstract = seconds_per_abstract
        self.made_by = {"model": self.name}
        self.calls: list[tuple[int, object]] = []  # (batch size, options)
        self.stopped_early = 0
        self.stopped = threading.Event()  # set when a generation stops early (tests wait on it, no clock)
        self.ran_to_the_end = threading.Event()  # set when a generation takes its whole delay

    def generate(self, abstracts, options=None, instruction=None, should_stop=None):
        import time

        from chatgentitle.titling.generator import GenerationOptions

        options = options or GenerationOptions()
        self.calls.append((len(abstracts), options))
        end = time.monotonic() + self.delay_seconds + self.seconds_per_abstract * len(abstracts)
        while time.monotonic() < end:
            if should_stop and should_stop():
                self.stopped_early += 1
                self.stopped.set()
                break
            time.sleep(0.01)
        else:
            self.ran_to_the_end.set()
        out = []
        for abstract in abstracts:
            head = " ".join(abstract.split()[:3]).title()
            out.append([f"{head} Candidate {k}"[: options.max_new_tokens * 8] for k in range(options.num_candidates)])
        return out

    def __call__(self, abstracts, options=None, instruction=None):
        return [c[0] for c in self.generate(abstracts, options, instruction)]

    def count_tokens(self, text, as_prompt=False):
        return len(text.split()) + (10 if as_prompt else 0)

    def log_probs(self, abstract, titles, instruction=None):
        return [-0.1 * len(title.split()) for title in titles]  # a longer title is less likely

    def complete(self, prompts, options=None, should_stop=None):
        return self.generate([p.split("Abstract:")[-1] for p in prompts], options, should_stop=should_stop)

    def stream(self, abstract, options=None, instruction=None, should_stop=None):
        title = self([abstract], options, instruction)[0]
        for i in range(1, len(title.split()) + 1):
            yield " ".join(title.split()[:i])


