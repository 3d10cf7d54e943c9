"""The prompt: one module for training and inference.

A PromptTemplate renders (instruction, abstract) into prompt text; `encode_prompt` turns it
into token ids and `encode_example` appends the title and EOS, masking the prompt. Training
and generation call the same `encode_prompt`, so the ids the model sees at inference are
exactly those it was trained on. The template is saved as `prompt.json` in every run dir.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from chatgentitle.errors import OptionError

SEED_INSTRUCTION = (
    "If you are an expert in writing papers, please generate a good paper title for this paper "
    "based on other authors' descriptions of their abstracts."
)
PROMPT_FILE = "prompt.json"
# The defaults, each said once. A template is a name (templates/*.json) or a file.
TRAIN_TEMPLATE = "alpaca"  # `train`'s, and a run dir's without prompt.json: alpaca-lora's prompt
SERVED_TEMPLATE = "compact"  # the packaged adapter's: what an engine serving it (remote) expects
ZERO_SHOT_TEMPLATE = "chat"  # a base model without an adapter answers in its own chat template
PROMPT_TOKENS = 512  # the prompt's room when a run dir does not give its cutoff_len


def prompt_room(cutoff_len: int) -> int:
    """Tokens a prompt may take at inference for a model trained with this cutoff_len (at least 64, so
    that an abstract always has room beside the instruction)."""
    return max(64, cutoff_len)
IGNORE_INDEX = -100  # label value that the loss skips (torch CrossEntropyLoss default)


@dataclass(frozen=True)
class PromptTemplate:
    """Prompt text as data (alpaca-lora's templates/*.json shape, plus a chat flag)."""

    name: str
    prompt_input: str
    """Text with {instruction} and {input} (the abstract)."""
    prompt_no_input: str
    """Text with {instruction} only, for an empty abstract."""
    description: str = ""
    chat: bool = False
    """Wrap the rendered text as one user message in the tokenizer's chat template."""
    title_prefix: str = ""
    """Text put before the title when it is encoded (e.g. a space after 'Title:')."""
    instruction: str = SEED_INSTRUCTION
    """The instruction used when the caller gives none."""
    related: int = 0
    """How many related papers' titles (a paper index's nearest) the model reads before the abstract, in
    {related}; 0: none. A model trained with them also saw examples without any, so it titles without an index."""
    related_prompt: str = "Titles of similar papers (similarity):\n{titles}\n\n"
    """What {related} becomes when there are related papers: {titles} is one line per paper."""

    @classmethod
    def load(cls, name_or_path: str | Path) -> PromptTemplate:
        """A packaged template by name (alpaca, compact, chat), a JSON file, or a run dir."""
        path = Path(name_or_path)
        if path.is_dir():
            path = path / PROMPT_FILE
        if path.is_file():
            return cls(**json.loads(path.read_text()))
        packaged = resources.files("chatgentitle") / "templates" / f"{name_or_path}.json"
        if not packaged.is_file():
            names = ", ".join(available_templates())
            raise OptionError(f"unknown prompt template {str(name_or_path)!r} (packaged: {names})")
        return cls(**json.loads(packaged.read_text()))

    def record(self) -> dict:
        """The template as a made-by record holds it (a template that reads no related titles is recorded as
        before they existed, so earlier files still match)."""
        fields = asdict(self)
        if not self.related:
            del fields["related"], fields["related_prompt"]
        return fields

    def save(self, run_dir: Path) -> Path:
        path = Path(run_dir) / PROMPT_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    def related_papers(self, guide, abstract: str) -> list:
        """The papers whose titles this template shows for an abstract: `guide`'s nearest (a paper index, or
        None), as many as the template reads."""
        return guide.nearest(abstract, self.related) if guide is not None and self.related else []

    def around_abstract(self) -> tuple[str, str]:
        """The prompt text before and after the abstract, {instruction} still in it, for engines that render it
        themselves (a GGUF chat template, an Ollama Modelfile): they have no paper index, so no related
        titles (a model trained with them also learnt to title without)."""
        before, _, after = self.prompt_input.replace("{related}", "").partition("{input}")
        return before, after

    def render(self, abstract: str, instruction: str | None = None, related: Sequence = ()) -> str:
        """The prompt text (before any chat template) for one abstract. `related`: the closest published
        papers (data.index.Neighbour: title, similarity), closest first; only a template with {related}
        shows them, at most `self.related`."""
        instruction = instruction or self.instruction
        shown = related[: self.related]
        block = self.related_prompt.format(titles="\n".join(f"- {n.title} ({n.similarity:.2f})" for n in shown)
                                           ) if shown else ""
        if abstract.strip():
            return self.prompt_input.format(instruction=instruction, input=abstract.strip(), related=block)
        return self.prompt_no_input.format(instruction=instruction, related=block)


def available_templates() -> list[str]:
    folder = resources.files("chatgentitle") / "templates"
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def _prompt_ids(template: PromptTemplate, tokenizer, abstract: str, instruction: str | None,
                related: Sequence = ()) -> list[int]:
    text = template.render(abstract, instruction, related)
    if template.chat:
        if not getattr(tokenizer, "chat_template", None):
            raise OptionError("the 'chat' prompt template needs a tokenizer with a chat template")
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        # the chat template already wrote BOS and the role markers as text
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(text)["input_ids"]


def encode_prompt(
    template: PromptTemplate,
    tokenizer,
    abstract: str,
    instruction: str | None = None,
    max_tokens: int | None = None,
    related: Sequence = (),
) -> list[int]:
    """Token ids of the prompt; the abstract (never the instruction or the related titles) is cut to fit
    max_tokens."""
    ids = _prompt_ids(template, tokenizer, abstract, instruction, related)
    if max_tokens is None or len(ids) <= max_tokens:
        return ids
    abstract_ids = tokenizer(abstract, add_special_tokens=False)["input_ids"]
    # Cutting k abstract tokens shortens the prompt by about k; re-encode to be exact,
    # dropping a few more each round because tokens can merge at the cut.
    excess = len(ids) - max_tokens
    while len(ids) > max_tokens and abstract_ids:
        abstract_ids = abstract_ids[: max(0, len(abstract_ids) - excess)]
        ids = _prompt_ids(template, tokenizer, tokenizer.decode(abstract_ids), instruction, related)
        excess = max(1, len(ids) - max_tokens)
    return ids[:max_tokens]


def encode_example(
    template: PromptTemplate,
    tokenizer,
    abstract: str,
    title: str,
    cutoff_len: int,
    instruction: str | None = None,
    train_on_inputs: bool = False,
    related: Sequence = (),
) -> dict[str, list[int]]:
    """input_ids / attention_mask / labels for one training example.

    Prompt and title are encoded separately and concatenated; the title always ends with EOS.
    When the pair is longer than cutoff_len the abstract is shortened, never the title.
    """
    if tokenizer.eos_token_id is None:
        raise OptionError("the tokenizer has no EOS token")
    title_ids = tokenizer(template.title_prefix + title.strip(), add_special_tokens=False)["input_ids"]
    title_ids = title_ids[: max(1, cutoff_len // 2) - 1] + [tokenizer.eos_token_id]
    prompt_ids = encode_prompt(template, tokenizer, abstract, instruction, cutoff_len - len(title_ids), related)
    input_ids = prompt_ids + title_ids
    labels = list(input_ids) if train_on_inputs else [IGNORE_INDEX] * len(prompt_ids) + title_ids
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


_PREFIX = re.compile(r"^\s*(title|paper title|suggested title)\s*[:\-]\s*", re.IGNORECASE)


_WORD = re.compile(r"[\w$\\^{}]+", re.UNICODE)
ARTICLES = frozenset({"a", "an", "the"})


def words(text: str) -> list[str]:
    """Lower-case word tokens (for overlaps and keys; counting words is word_count's)."""
    return _WORD.findall(text.lower())


def normalise_title(title: str) -> str:
    """What two titles that are 'the same' share: they differ only in case, articles, hyphens or
    punctuation. The one definition (duplicate candidates, known papers, eval's exact matches, a paper
    and its related papers)."""
    return " ".join(w for w in words(title) if w not in ARTICLES)


def word_count(title: str) -> int:
    """Words in a title as a reader counts them: runs between spaces that hold a letter or digit
    ("Plug-and-Play" is one word, a lone ":" none). The one count behind --words, the candidates' words
    and eval's lengths."""
    return sum(any(c.isalnum() for c in part) for part in title.split())


def clean_title(text: str) -> str:
    """Tidy a decoded completion into a title: first line, no 'Title:' prefix, quotes or final period."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    title = _PREFIX.sub("", lines[0] if lines else "").strip()
    if len(title) > 1 and title[0] == title[-1] and title[0] in "\"'*`":
        title = title.strip(title[0]).strip()
    if title.endswith(".") and not title.endswith("..."):
        title = title[:-1].rstrip()
    return " ".join(title.split())
