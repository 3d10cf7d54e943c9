"""ChatGenTitle: titles for research papers from their abstracts.

The library behind the `chatgentitle` command. Importing it is cheap; torch and
transformers load only when a model is used.

Module map, in the order data flows:
- data: records (Paper, ArxivRecord, JSON lines, atomic writes), prepare (snapshot -> splits),
  http_client (the one HTTP client), arxiv_formats (OAI-PMH, Atom, RSS parsers), crawl, store (SQLite);
- model: prompt (the one template module, training and inference), config (TrainConfig,
  GenerationOptions and its decoding mode, field docs), modeling (base models, GGUF), run (the run
  dir), train (LoRA fine-tuning);
- titles: decoding (decodes a mode: beam search, sampling, consensus), generate (TitleGenerator,
  titles()), ranking (candidate scores, consensus choice), remote (OpenAI-compatible servers),
  sources (SourceSpec, load_source);
- front ends: batcher (bounded queue, deadlines), api (/v1/titles), openai_api, web (Gradio),
  server (serve), batch (files), flags and cli;
- evaluation: metrics, report (`chatgentitle eval`).
"""

__version__ = "0.5.3"


def __getattr__(name):
    # TitleGenerator pulls in torch, so it loads on first use, not on import.
    if name in ("TitleGenerator", "GenerationOptions"):
        from chatgentitle import generate

        return getattr(generate, name)
    raise AttributeError(name)
