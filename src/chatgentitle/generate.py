"""TitleGenerator: the one object that loads a model and writes titles.

    from chatgentitle import TitleGenerator
    generator = TitleGenerator.load()                 # the packaged default model
    generator = TitleGenerator.load("runs/cs-lora")   # base + adapter from a run dir
    generator(["We propose ..."])                     # -> ["A title"]

The CLI, batch files, REST API, web UI and `eval` all go through it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Protocol

from chatgentitle.config import DEFAULT_BASE, GenerationOptions
from chatgentitle.modeling import ModelError
from chatgentitle.prompt import PromptTemplate, clean_title, encode_prompt
from chatgentitle.ranking import Candidate, Ranker, has_repeated_bigram, words
from chatgentitle.run import RunDir


def default_adapter_dir() -> Path | None:
    """The adapter shipped inside the package, if this install has one."""
    folder = Path(str(resources.files("chatgentitle") / "default_adapter"))
    return folder if (folder / "adapter_config.json").is_file() else None


class TitleSource(Protocol):
    """What writes titles: TitleGenerator, the tests' stand-in, any future backend. Front ends use
    `titles()` below, never a backend's internals."""

    name: str
    instruction: str
    """The instruction of its prompt (what the web UI's Instruction box starts with)."""

    def generate(self, abstracts: list[str], options: GenerationOptions | None = None,
                 instruction: str | None = None, should_stop: Callable[[], bool] | None = None,
                 rendered: bool = False) -> list[list[str]]:
        """Distinct candidate titles per abstract, best first; `rendered`: the texts are whole prompts
        already (what OpenAI completions clients send), not abstracts."""

    def stream(self, abstract: str, options: GenerationOptions | None = None,
               instruction: str | None = None) -> Iterator[str]:
        """One title as it grows (greedy or sampling)."""

    def count_tokens(self, text: str, as_prompt: bool = False) -> int:
        """Tokens of a title, or of the whole prompt made from an abstract (as_prompt), for usage counts."""


def titles(source: TitleSource, abstracts: list[str], options: GenerationOptions | None = None,
           ranker: Ranker | None = None, instruction: str | None = None,
           should_stop: Callable[[], bool] | None = None, rendered: bool = False) -> list[list[Candidate]]:
    """The one titling step of every front end: candidates from the source, ranked by `ranker` when
    there are several to choose from or known titles to check; the first of each list is the title."""
    out = []
    found_all = source.generate(abstracts, options, instruction, should_stop=should_stop, rendered=rendered)
    for abstract, found in zip(abstracts, found_all, strict=True):
        if ranker and (len(found) > 1 or ranker.known is not None):
            out.append(ranker.rank(abstract, found))
        else:
            out.append([Candidate(title, words=len(words(title))) for title in found])
    return out


def pick_titles(texts: list[str], num_candidates: int) -> list[str]:
    """Distinct cleaned titles from decoded candidates (best first), at most num_candidates, never none."""
    seen, titles = set(), []
    for text in texts:
        title = clean_title(text)
        key = " ".join(title.lower().split())
        if title and key not in seen:
            seen.add(key)
            titles.append(title)
    # beam search can loop ("L-RAPM: L-RAPM: ..."); a later beam that does not is preferred
    titles.sort(key=has_repeated_bigram)  # stable: the model's order otherwise
    return titles[:num_candidates] or [""]


@cache
def _rouge_tokenizer():
    """rouge-score's stemming tokenizer, as `eval` scores ROUGE-L (built once: the stemmer is not free)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)._tokenizer.tokenize


def consensus_titles(texts: list[str], num_candidates: int) -> list[str]:
    """Distinct cleaned titles ordered by consensus, at most num_candidates: each title's mean ROUGE-L
    against every candidate (repeats count as often as they were drawn, itself included), i.e. minimum
    Bayes risk with the metric titles are judged by. Titles that repeat a pair of words still go last."""
    from collections import Counter

    from rouge_score.rouge_scorer import _score_lcs  # on pre-tokenized titles: each is tokenized once

    drawn = Counter()
    for text in texts:
        if title := clean_title(text):
            drawn[title] += 1
    if not drawn:
        return [""]
    tokenize = _rouge_tokenizer()
    tokens = {title: tokenize(title) for title in drawn}

    def agreement(title):
        return sum(count * _score_lcs(tokens[title], tokens[other]).fmeasure for other, count in drawn.items())

    return pick_titles(sorted(drawn, key=agreement, reverse=True), num_candidates)


def _ready(model, device: str, quantize: str | None):
    """On its device, in eval mode, with the attention that lets beam search share prompts."""
    if not quantize:
        model = model.to(device)
    model.eval()
    if model.config._attn_implementation == "sdpa":  # sdpa, and shared prompts in beam search
        from chatgentitle.beam import SHARED

        model.set_attn_implementation(SHARED)
    return model


def _load_members(adapter: Path, base_model: str, dtype, device: str, quantize: str | None = None,
                  merge: bool = True) -> list:
    """The ensemble members of a run dir, each merged into its own copy of the base model."""
    from peft import PeftModel

    from chatgentitle.modeling import load_base

    members = []
    for member in RunDir(adapter).members():
        if member.describe().base_model != base_model:
            raise ModelError(f"{member.path}: an ensemble member needs the run's base model, {base_model}")
        model, _ = load_base(base_model, dtype=dtype, quantize=quantize)
        model = PeftModel.from_pretrained(model, member.path)
        members.append(_ready(model.merge_and_unload() if merge and not quantize else model, device, quantize))
    return members


class _StopWhen:
    """A transformers stopping criterion that ends decoding for every row when asked to."""

    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.should_stop(), dtype=torch.bool, device=input_ids.device)


class TitleGenerator:
    """Base model (+ LoRA adapter) + prompt template -> titles."""

    def __init__(self, model, tokenizer, template: PromptTemplate, max_prompt_tokens: int = 512,
                 name: str = "model", adapter: str | None = None, lock: threading.Lock | None = None,
                 members: list | tuple = ()):
        self.model = model
        self.members = list(members)
        """More models over the same tokenizer and prompt (an ensemble run's): their beams and samples
        join the consensus when options.by_consensus."""
        self.tokenizer = tokenizer
        self.template = template
        self.max_prompt_tokens = max_prompt_tokens
        self.name = name
        self.adapter = adapter
        """The PEFT adapter to activate before decoding, when several share one base model (load_many)."""
        self.lock = lock or threading.Lock()  # shared by the generators of one model: one decodes at a time
        self.device = next(model.parameters()).device

    @property
    def instruction(self) -> str:
        return self.template.instruction

    def count_tokens(self, text: str, as_prompt: bool = False) -> int:
        if as_prompt:
            return len(encode_prompt(self.template, self.tokenizer, text, None, self.max_prompt_tokens))
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @staticmethod
    def default_template() -> PromptTemplate:
        """The packaged default adapter's prompt (what a server of that adapter expects)."""
        folder = default_adapter_dir()
        return RunDir(folder).describe().template if folder else PromptTemplate.load("compact")

    @classmethod
    def load(
        cls,
        run_dir: str | Path | None = None,
        *,
        base_model: str | None = None,
        prompt_template: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        quantize: str | None = None,
        merge: bool = True,
    ) -> TitleGenerator:
        """Load base + adapter from run_dir, the packaged default adapter, or a base model alone.

        With base_model and no run_dir the base model answers zero-shot (the `zero-shot` baseline).
        """
        from peft import PeftModel

        from chatgentitle.modeling import load_base, pick_device, resolve_dtype

        adapter = Path(run_dir) if run_dir else (None if base_model else default_adapter_dir())
        cutoff = 512
        if adapter:
            info = RunDir(adapter).describe()
            template, cutoff = info.template, info.cutoff_len
            base_model = base_model or info.base_model
        else:
            base_model = base_model or DEFAULT_BASE
            template = PromptTemplate.load(prompt_template or "chat")
        if prompt_template and adapter:
            template = PromptTemplate.load(prompt_template)
        device = pick_device(device)
        torch_dtype = resolve_dtype(dtype, device)
        model, tokenizer = load_base(base_model, dtype=torch_dtype, quantize=quantize)
        if template.chat and not getattr(tokenizer, "chat_template", None):  # say so now, not mid-batch
            raise ModelError(f"{base_model} has no chat template for the {template.name!r} prompt: "
                             "give --prompt-template compact or alpaca")
        members = []
        if adapter:
            model = PeftModel.from_pretrained(model, adapter)
            if merge and not quantize:  # one matmul per layer instead of two: faster decoding
                model = model.merge_and_unload()
            members = _load_members(adapter, base_model, torch_dtype, device, quantize, merge)
        model = _ready(model, device, quantize)
        # the packaged default adapter answers as "chatgentitle" (its model id in the OpenAI API)
        name = Path(run_dir).name if run_dir else ("chatgentitle" if adapter else f"{base_model} (zero-shot)")
        return cls(model, tokenizer, template, max_prompt_tokens=max(64, cutoff), name=name, members=members)

    @classmethod
    def load_many(cls, runs: dict[str, str | Path | None], *, device: str = "auto",
                  dtype: str = "auto") -> list[TitleGenerator]:
        """Several adapters over one base model held once: a generator per adapter (by name; a run dir,
        or None for the packaged adapter), which activates its adapter before it decodes."""
        from peft import PeftModel

        from chatgentitle.modeling import load_base, pick_device, resolve_dtype

        dirs = {name: Path(path) if path else default_adapter_dir() for name, path in runs.items()}
        infos = {name: RunDir(folder).describe() for name, folder in dirs.items()}
        bases = sorted({info.base_model for info in infos.values()})
        if len(bases) != 1:
            raise ModelError(f"adapters served together need one base model, these have {', '.join(bases)}")
        device = pick_device(device)
        dtype = resolve_dtype(dtype, device)
        model, tokenizer = load_base(bases[0], dtype=dtype)
        for name, folder in dirs.items():  # unmerged: each request picks its adapter
            if isinstance(model, PeftModel):
                model.load_adapter(folder, adapter_name=name)
            else:
                model = PeftModel.from_pretrained(model, folder, adapter_name=name)
        model, lock = _ready(model, device, None), threading.Lock()
        return [cls(model, tokenizer, infos[name].template, max(64, infos[name].cutoff_len), name=name,
                    adapter=name, lock=lock, members=_load_members(dirs[name], bases[0], dtype, device))
                for name in dirs]

    # ------------------------------------------------------------------ generation
    def _batch(self, abstracts: list[str], instruction: str | None, options: GenerationOptions,
               rendered: bool = False):
        import torch

        room = self.max_prompt_tokens  # the abstract is shortened so the prompt fits
        if rendered:  # whole prompts: keep their end, where the title starts
            prompts = [self.tokenizer(text)["input_ids"][-room:] for text in abstracts]
        else:
            prompts = [encode_prompt(self.template, self.tokenizer, a, instruction, room) for a in abstracts]
        width = max(map(len, prompts))
        pad = self.tokenizer.pad_token_id
        # left padding: every prompt ends at the same column, where generation starts
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attention_mask = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device
        )
        kwargs = options.generate_kwargs()
        kwargs.update(pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id)
        return input_ids, attention_mask, kwargs

    def generate(
        self,
        abstracts: list[str],
        options: GenerationOptions | None = None,
        instruction: str | None = None,
        should_stop: Callable[[], bool] | None = None,
        rendered: bool = False,
    ) -> list[list[str]]:
        """Distinct candidate titles for each abstract, best first: the model's order, except that titles
        which repeat a pair of words go last. `should_stop` is asked between decoding steps: when it
        says yes, decoding ends there (the titles so far come back; the API uses it past a deadline).
        `rendered`: the texts are whole prompts (OpenAI completions), encoded as they are."""
        options = options or GenerationOptions()
        if not abstracts:
            return []
        with self.lock:
            if self.adapter:
                self.model.set_adapter(self.adapter)
            texts = self._decode(abstracts, options, instruction, should_stop, rendered)
        choose = consensus_titles if options.by_consensus else pick_titles
        return [choose(candidates, options.num_candidates) for candidates in texts]

    def _decode(self, abstracts, options, instruction, should_stop, rendered=False) -> list[list[str]]:
        """Decoded candidates per abstract, best first (before cleaning)."""
        import torch

        input_ids, attention_mask, kwargs = self._batch(abstracts, instruction, options, rendered)
        if options.by_consensus:
            return self._pool(input_ids, attention_mask, options, should_stop)
        if options.beam_search and not options.no_repeat_ngram_size:  # one prefill per abstract
            beams = self._beams(self.model, input_ids, attention_mask, kwargs["num_beams"], options, should_stop)
            texts = [[self.tokenizer.decode(seq, skip_special_tokens=True) for seq in seqs] for seqs in beams]
        else:  # greedy, sampling, no_repeat_ngram_size: transformers' generate
            if should_stop:
                from transformers import StoppingCriteriaList

                kwargs["stopping_criteria"] = StoppingCriteriaList([_StopWhen(should_stop)])
            with torch.inference_mode():
                output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            # decode only the new tokens: no searching for a response marker
            flat = self.tokenizer.batch_decode(output[:, input_ids.shape[1]:], skip_special_tokens=True)
            per_abstract = len(flat) // len(abstracts)
            texts = [flat[i:i + per_abstract] for i in range(0, len(flat), per_abstract)]
        return texts

    def _pool(self, input_ids, attention_mask, options, should_stop) -> list[list[str]]:
        """Every model's beams and samples per abstract: what consensus_titles chooses from."""
        from chatgentitle.beam import sample

        pools = [[] for _ in range(input_ids.shape[0])]
        for model in (self.model, *self.members):
            beams = self._beams(model, input_ids, attention_mask, options.num_beams, options, should_stop)
            drawn = sample(model, input_ids, attention_mask, num_samples=options.consensus,
                           max_new_tokens=options.max_new_tokens, eos_token_id=self.tokenizer.eos_token_id,
                           should_stop=should_stop)
            for pool, found, more in zip(pools, beams, drawn, strict=True):
                pool.extend(self.tokenizer.decode(seq, skip_special_tokens=True) for seq in found + more)
        return pools

    def _beams(self, model, input_ids, attention_mask, num_beams: int, options, should_stop) -> list[list[list[int]]]:
        """The shared-prefill beam search with these options' penalties and limits."""
        from chatgentitle.beam import beam_search

        return beam_search(model, input_ids, attention_mask, num_beams=num_beams,
                           max_new_tokens=options.max_new_tokens, eos_token_id=self.tokenizer.eos_token_id,
                           repetition_penalty=options.repetition_penalty,
                           length_penalty=options.length_penalty, should_stop=should_stop)

    def __call__(self, abstracts: list[str], options: GenerationOptions | None = None,
                 instruction: str | None = None) -> list[str]:
        """One title per abstract."""
        options = replace(options or GenerationOptions(), num_candidates=1)
        return [titles[0] for titles in self.generate(abstracts, options, instruction)]

    def stream(self, abstract: str, options: GenerationOptions | None = None,
               instruction: str | None = None) -> Iterator[str]:
        """Yield the title as it grows, token by token (single candidate)."""
        import torch
        from transformers import TextIteratorStreamer

        options = replace(options or GenerationOptions(), num_candidates=1, num_beams=1)
        input_ids, attention_mask, kwargs = self._batch([abstract], instruction, options)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)

        def run():
            with self.lock, torch.inference_mode():
                if self.adapter:
                    self.model.set_adapter(self.adapter)
                self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                    streamer=streamer, **kwargs)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        text = ""
        for piece in streamer:
            text += piece
            if "\n" in text.strip():  # a title is one line
                break
            yield clean_title(text)
        thread.join()
