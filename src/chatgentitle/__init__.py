"""ChatGenTitle: titles for research papers from their abstracts.

The library behind the `chatgentitle` command. Importing it is cheap; torch and
transformers load only when a model is used.

Module map, in the order data flows:
- data: records (Paper, JSON lines, atomic writes), prepare (snapshot -> splits), crawl (OAI-PMH,
  API, RSS) and store (SQLite paper store);
- model: prompt (the one template module, training and inference), config (TrainConfig, field
  docs), modeling (base models, GGUF), train (LoRA fine-tuning);
- titles: generate (TitleGenerator, GenerationOptions), beam (shared-prefill beam search),
  ranking (candidate scores);
- front ends: cli, batch (files), api (REST), web (Gradio);
- evaluation: metrics, report (`chatgentitle eval`).
"""

__version__ = "0.1.0"


def __getattr__(name):
    # TitleGenerator pulls in torch, so it loads on first use, not on import.
    if name in ("TitleGenerator", "GenerationOptions"):
        from chatgentitle import generate

        return getattr(generate, name)
    raise AttributeError(name)
