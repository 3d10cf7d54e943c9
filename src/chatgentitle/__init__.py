"""ChatGenTitle: titles for research papers from their abstracts.

The library behind the `chatgentitle` command. Importing it is cheap; torch and
transformers load only when a model is used.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # TitleGenerator pulls in torch, so it loads on first use, not on import.
    if name in ("TitleGenerator", "GenerationOptions"):
        from chatgentitle import generate

        return getattr(generate, name)
    raise AttributeError(name)
