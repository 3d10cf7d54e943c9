"""ChatGenTitle: titles for research papers from their abstracts.

The library behind the `chatgentitle` command. Importing it is cheap; torch and
transformers load only when a model is used.

Subpackages, in the order data flows; each imports only from those before it (tests/test_imports.py):
- config, errors, flags, progress: what every part shares (field docs and bounds, the one error
  class, flags derived from configs, progress bars);
- data: records (Paper, JSON lines, atomic writes), prepare (snapshot -> splits), store (SQLite),
  prompt (the one prompt module of training and inference);
- crawl: http (the one polite HTTP client), formats (OAI-PMH, Atom, RSS), harvest;
- model: loading (base models, GGUF conversion, adapters), run_dir (a run's files);
- decoding: options (GenerationOptions and its mode), search (beam search, sampling, consensus),
  steps, shared_prefix, steering (phrases, a length);
- titling: generator (TitleGenerator, titles(): the one titling path), ranking, remote (OpenAI-compatible
  engines), sources (which one a command uses), files (batch files);
- evaluation: metrics, report (`chatgentitle eval`); training: config, examples, watch, loop;
- export: hf, gguf_file; serving: jobs (queues, deadlines), api, openai_routes, web, app (`serve`);
- cli on top.
"""

__version__ = "0.5.3"


def __getattr__(name):
    # TitleGenerator pulls in torch, so it loads on first use, not on import.
    if name == "TitleGenerator":
        from chatgentitle.titling.generator import TitleGenerator

        return TitleGenerator
    if name == "GenerationOptions":
        from chatgentitle.decoding.options import GenerationOptions

        return GenerationOptions
    raise AttributeError(name)
