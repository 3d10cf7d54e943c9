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
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from importlib import resources
from pathlib import Path

from chatgentitle.config import DEFAULT_BASE
from chatgentitle.data.index import PaperIndex
from chatgentitle.data.prompt import (
    PROMPT_TOKENS,
    SERVED_TEMPLATE,
    ZERO_SHOT_TEMPLATE,
    PromptTemplate,
    clean_title,
    encode_prompt,
    prompt_room,
    word_count,
)
from chatgentitle.decoding.options import DecodingMode, GenerationOptions
from chatgentitle.errors import OptionError
from chatgentitle.model.loading import ModelError
from chatgentitle.model.run_dir import RunDir
from chatgentitle.titling.contract import TitleSource, check_supported
from chatgentitle.titling.ranking import (
    Candidate,
    Ranker,
    Titled,
    Verdict,
    consensus_titles,
    normalise_title,
    pick_titles,
    spread,
)


def default_adapter_dir() -> Path | None:
    """The adapter shipped inside the package, if this install has one."""
    folder = Path(str(resources.files("chatgentitle") / "default_adapter"))
    return folder if (folder / "adapter_config.json").is_file() else None


VERDICT_POOL = 4  # judging a title searches as for 4 candidates: a pool of up to 16 titles (8 beams, 8 samples)


def titles(source: TitleSource, abstracts: list[str], options: GenerationOptions | None = None,
           ranker: Ranker | None = None, instruction: str | None = None,
           should_stop: Callable[[], bool] | None = None, yours: str | None = None,
           related: tuple[PaperIndex, int] | None = None) -> list[Titled]:
    """The one titling step of every front end: candidates from the source, ranked by `ranker` when
    there are several to choose from or known titles to check; the first of each list is the title.
    `yours`: the author's title for one abstract, judged against the whole pool a wider search produced
    (VERDICT_POOL); the candidates shown come from that pool. `related`: (index, k), the k published
    papers closest to each abstract (never the paper itself, nor one titled as `yours`)."""
    if yours is not None and len(abstracts) != 1:
        raise OptionError("an author's title is judged for one abstract at a time")
    options = options or source.defaults
    check_supported(source, options, judging=yours is not None)
    wide = replace(options, num_candidates=max(options.num_candidates, VERDICT_POOL)) if yours is not None else options
    found = source.generate(abstracts, wide, instruction, should_stop=should_stop)
    shown = [Titled(candidates(abstract, pool, ranker, options.num_candidates))
             for abstract, pool in zip(abstracts, found, strict=True)]
    if yours is not None:
        shown[0].verdict = judge(source, abstracts[0], shown[0].candidates, found[0], yours, ranker, instruction)
    if related:
        index, k = related
        for result, abstract in zip(shown, abstracts, strict=True):
            result.related = index.nearest(abstract, k, title=yours)
    return shown


def candidates(abstract: str, found: list[str], ranker: Ranker | None = None, shown: int | None = None
               ) -> list[Candidate]:
    """`shown` of the found titles (a source's pool, best first) as candidates, ranked when there is
    something to rank. The first is the best-ranked of the source's `shown` first titles; each next one
    is the best-ranked of the rest after discounting its likeness (ROUGE-L) to those already chosen
    (maximal marginal relevance), so that the list spreads over real alternatives (ranking.ORDER)."""
    shown = shown or len(found)
    ranked = _ranked(abstract, found, ranker)  # a title's rank score does not depend on the others
    if len(found) <= shown:
        return ranked
    first = next(c for c in ranked if c.title in found[:shown])
    return spread(first, [c for c in ranked if c is not first], shown)


def _ranked(abstract: str, found: list[str], ranker: Ranker | None) -> list[Candidate]:
    """Found titles as candidates, ranked when there is something to rank."""
    if ranker and (len(found) > 1 or ranker.known is not None):
        return ranker.rank(abstract, found)
    return [Candidate(title, words=word_count(title)) for title in found]


def judge(source: TitleSource, abstract: str, shown: list[Candidate], pool: list[str], yours: str,
          ranker: Ranker | None = None, instruction: str | None = None) -> Verdict:
    """The verdict on the author's title against the whole pool; the shown candidates get their
    log-probabilities too (one prefill for all)."""
    yours = " ".join(yours.split())
    if not yours:
        raise OptionError("the title to judge is empty")
    mine = ranker.rank(abstract, [yours])[0] if ranker else Candidate(yours, words=word_count(yours))
    same = normalise_title(yours)  # the search may have written the author's title itself: it is not a rival
    others = [t for t in dict.fromkeys([*pool, *(c.title for c in shown)]) if normalise_title(t) != same]
    scored = dict(zip([*others, yours], source.log_probs(abstract, [*others, yours], instruction), strict=True))
    for candidate in [*shown, mine]:
        candidate.log_prob = round(scored.get(candidate.title, scored[yours]), 4)
    return Verdict.judge(mine, [Candidate(t, log_prob=round(scored[t], 4)) for t in others], source.verdict_scale)


def _ready(model, device: str, quantize: str | None):
    """On its device, in eval mode, with the attention that lets beam search share prompts."""
    if not quantize:
        model = model.to(device)
    model.eval()
    if model.config._attn_implementation == "sdpa":  # sdpa, and shared prompts in beam search
        from chatgentitle.decoding.shared_prefix import register_shared_attention

        model.set_attn_implementation(register_shared_attention())
    return model


def _made_by(base_model: str, adapter: Path | None, template: PromptTemplate, prompt_tokens: int, dtype: str,
             quantize: str | None = None, merge: bool = False) -> dict:
    """A loaded model's `made_by`: what its titles depend on (merging changes the arithmetic's rounding).
    The dtype as asked: "auto" is resolved once per host (model.loading.bf16_pays_off), so a busy moment
    cannot make a resumed file look like another model's."""
    return {"base": str(base_model), "adapter": RunDir(adapter).weights_digest() if adapter else None,
            "template": template.record(), "prompt_tokens": prompt_tokens,
            "dtype": dtype, "quantize": quantize, "merge": merge}


def _members_of(adapter: Path, base_model: str) -> list[Path]:
    """The ensemble members' adapter dirs of a run dir (checked now: loading them waits for a consensus)."""
    found = []
    for member in RunDir(adapter).members():
        if member.describe().base_model != base_model:
            raise ModelError(f"{member.path}: an ensemble member needs the run's base model, {base_model}")
        found.append(member.path)
    return found


def _load_members(folders: list[Path], base_model: str, dtype, device: str, quantize: str | None = None,
                  merge: bool = True) -> list:
    """Ensemble members, each merged into its own copy of the base model."""
    from chatgentitle.model.loading import load_base, with_adapter

    members = []
    for folder in folders:
        model, _ = load_base(base_model, dtype=dtype, quantize=quantize)
        model = with_adapter(model, folder)
        members.append(_ready(model.merge_and_unload() if merge and not quantize else model, device, quantize))
    return members


class TitleGenerator:
    """Base model (+ LoRA adapter) + prompt template -> titles."""

    defaults = GenerationOptions()
    fixed: tuple[str, ...] = ()  # every option decodes as it says
    judges = True
    verdict_scale: list[float] | None = None  # the adapter's, when it ships one (RunDir.verdict_scale)
    guide = None  # what finds the related papers a template that reads them gets (data.index.PaperIndex)

    def __init__(self, model, tokenizer, template: PromptTemplate, max_prompt_tokens: int = PROMPT_TOKENS,
                 name: str = "model", adapter: str | None = None, lock: threading.Lock | None = None,
                 members: Callable[[], list] | list | tuple = (), made_by: dict | None = None):
        self.model = model
        self._members = members  # a list, or what loads it on first use (only a consensus needs them)
        self.tokenizer = tokenizer
        self.template = template
        self.max_prompt_tokens = max_prompt_tokens
        self.name = name
        self.adapter = adapter
        """The PEFT adapter to activate before decoding, when several share one base model (load_many)."""
        self.lock = lock or threading.Lock()  # shared by the generators of one model: one decodes at a time
        self.device = next(model.parameters()).device
        self.made_by = made_by or {"model": name, "template": template.record()}

    @property
    def members(self) -> list:
        """More models over the same tokenizer and prompt (an ensemble run's): their beams and samples join
        the consensus. Loaded the first time a consensus asks for them."""
        if callable(self._members):
            self._members = self._members()
        return list(self._members)

    @property
    def instruction(self) -> str:
        return self.template.instruction

    def count_tokens(self, text: str, as_prompt: bool = False) -> int:
        if as_prompt:
            return len(self._prompt(text, None))
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @staticmethod
    def default_template() -> PromptTemplate:
        """The packaged default adapter's prompt (what a server of that adapter expects)."""
        folder = default_adapter_dir()
        return RunDir(folder).describe().template if folder else PromptTemplate.load(SERVED_TEMPLATE)

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
        from chatgentitle.model.loading import load_base, pick_device, resolve_dtype, with_adapter

        adapter = Path(run_dir) if run_dir else (None if base_model else default_adapter_dir())
        cutoff = PROMPT_TOKENS
        if adapter:
            info = RunDir(adapter).describe()
            template, cutoff = info.template, info.cutoff_len
            base_model = base_model or info.base_model
        else:
            base_model = base_model or DEFAULT_BASE
            template = PromptTemplate.load(prompt_template or ZERO_SHOT_TEMPLATE)
        if prompt_template and adapter:
            template = PromptTemplate.load(prompt_template)
        device = pick_device(device)
        torch_dtype = resolve_dtype(dtype, device)
        model, tokenizer = load_base(base_model, dtype=torch_dtype, quantize=quantize)
        if template.chat and not getattr(tokenizer, "chat_template", None):  # say so now, not mid-batch
            raise ModelError(f"{base_model} has no chat template for the {template.name!r} prompt: "
                             "give --prompt-template compact or alpaca")
        members = ()
        if adapter:
            model = with_adapter(model, adapter)
            if merge and not quantize:  # one matmul per layer instead of two: faster decoding
                model = model.merge_and_unload()
            members = partial(_load_members, _members_of(adapter, base_model), base_model, torch_dtype, device,
                              quantize, merge)
        model = _ready(model, device, quantize)
        # the packaged default adapter answers as "chatgentitle" (its model id in the OpenAI API)
        name = Path(run_dir).name if run_dir else ("chatgentitle" if adapter else f"{base_model} (zero-shot)")
        made_by = _made_by(base_model, adapter, template, prompt_room(cutoff), dtype,
                           quantize=quantize, merge=merge and not quantize)
        generator = cls(model, tokenizer, template, max_prompt_tokens=prompt_room(cutoff), name=name,
                        members=members, made_by=made_by)
        generator.verdict_scale = RunDir(adapter).verdict_scale() if adapter and not quantize else None
        return generator

    @classmethod
    def load_many(cls, runs: dict[str, str | Path | None], *, device: str = "auto",
                  dtype: str = "auto") -> list[TitleGenerator]:
        """Several adapters over one base model held once: a generator per adapter (by name; a run dir,
        or None for the packaged adapter), which activates its adapter before it decodes."""
        from chatgentitle.model.loading import load_base, pick_device, resolve_dtype, with_adapter

        dirs = {name: Path(path) if path else default_adapter_dir() for name, path in runs.items()}
        infos = {name: RunDir(folder).describe() for name, folder in dirs.items()}
        bases = sorted({info.base_model for info in infos.values()})
        if len(bases) != 1:
            raise ModelError(f"adapters served together need one base model, these have {', '.join(bases)}")
        device = pick_device(device)
        asked, dtype = dtype, resolve_dtype(dtype, device)
        model, tokenizer = load_base(bases[0], dtype=dtype)
        for name, folder in dirs.items():  # unmerged: each request picks its adapter
            model = with_adapter(model, folder, name)
        model, lock = _ready(model, device, None), threading.Lock()
        return [cls(model, tokenizer, infos[name].template, prompt_room(infos[name].cutoff_len), name=name,
                    adapter=name, lock=lock,
                    members=partial(_load_members, _members_of(dirs[name], bases[0]), bases[0], dtype, device),
                    made_by=_made_by(bases[0], dirs[name], infos[name].template, prompt_room(infos[name].cutoff_len),
                                     asked))
                for name in dirs]

    # ------------------------------------------------------------------ generation
    def generate(self, abstracts: list[str], options: GenerationOptions | None = None, instruction: str | None = None,
                 should_stop: Callable[[], bool] | None = None) -> list[list[str]]:
        """Distinct candidate titles for each abstract, best first (decoding.decode, then the choice its
        mode makes: consensus, or the model's order with titles that repeat a pair of words last).
        `should_stop` is asked between decoding steps: when it says yes, decoding ends there (the
        titles so far come back; the API uses it past a deadline)."""
        return self._titles([self._prompt(a, instruction) for a in abstracts], options or GenerationOptions(),
                            should_stop)

    def complete(self, prompts: list[str], options: GenerationOptions | None = None,
                 should_stop: Callable[[], bool] | None = None) -> list[list[str]]:
        """Titles for whole prompts (OpenAI completions), encoded as they are; their end is kept, where
        the title starts."""
        encoded = [self.tokenizer(text)["input_ids"][-self.max_prompt_tokens:] for text in prompts]
        options = options or GenerationOptions()
        return [found[:options.num_candidates] for found in self._titles(encoded, options, should_stop)]

    def stream(self, abstract: str, options: GenerationOptions | None = None, instruction: str | None = None,
               should_stop: Callable[[], bool] | None = None) -> Iterator[str]:
        """Yield the title as it grows, token by token (options that stream: greedy or sampling)."""
        from chatgentitle.decoding.search import stream

        options = replace(options or GenerationOptions(), num_candidates=1)
        if not options.streams:
            raise OptionError(f"{options.mode.value} decoding does not stream")
        prompt = self._prompt(abstract, instruction)
        text = ""
        for piece in stream(self.model, self.tokenizer, *self._tensors([prompt]), options, should_stop,
                            hold=self._holding_model):
            text += piece
            if "\n" in text.strip():  # a title is one line
                break
            yield clean_title(text)

    def __call__(self, abstracts: list[str], options: GenerationOptions | None = None,
                 instruction: str | None = None) -> list[str]:
        """One title per abstract."""
        options = replace(options or GenerationOptions(), num_candidates=1)
        return [titles[0] for titles in self.generate(abstracts, options, instruction)]

    def log_probs(self, abstract: str, titles: list[str], instruction: str | None = None) -> list[float]:
        """Each title's mean log-probability per token (EOS included) after this abstract's prompt, as the
        model was trained to write it: the scale on which `--title` compares the author's title."""
        from chatgentitle.decoding.search import title_log_probs

        prompt = self._prompt(abstract, instruction)
        encoded = [self.tokenizer(self.template.title_prefix + t.strip(), add_special_tokens=False)["input_ids"]
                   + [self.tokenizer.eos_token_id] for t in titles]
        with self._holding_model():
            return title_log_probs(self.model, prompt, encoded, self.tokenizer.pad_token_id)

    def encode(self, abstracts: list[str], instruction: str | None = None):
        """The left-padded input ids and attention mask of these abstracts' prompts (what decoding.decode
        takes); each abstract is shortened so that its prompt fits max_prompt_tokens."""
        return self._tensors([self._prompt(a, instruction) for a in abstracts])

    def _prompt(self, abstract: str, instruction: str | None) -> list[int]:
        """One abstract's prompt ids, shortened to fit max_prompt_tokens; with the titles of its closest papers
        when the template reads them and there is a guide."""
        return encode_prompt(self.template, self.tokenizer, abstract, instruction, self.max_prompt_tokens,
                             self.template.related_papers(self.guide, abstract))

    def _titles(self, prompts: list[list[int]], options: GenerationOptions, should_stop) -> list[list[str]]:
        from chatgentitle.decoding.search import decode

        if not prompts:
            return []
        models = [self.model, *(self.members if options.mode.uses_members else ())]
        with self._holding_model():
            texts = decode(models, self.tokenizer, *self._tensors(prompts), options, should_stop)
        if options.mode is DecodingMode.CONSENSUS:
            return [consensus_titles(found, options.num_candidates) for found in texts]
        picked = [pick_titles(found, options.pool, options.include) for found in texts]
        if options.include and [""] in picked and not (should_stop and should_stop()):
            raise OptionError(f"no title of at most {options.max_new_tokens} tokens holds every phrase of include: "
                              "give a larger max_new_tokens, or fewer or shorter phrases")
        return picked

    def _tensors(self, prompts: list[list[int]]):
        """Left-padded input ids and attention mask: every prompt ends at the column where decoding starts."""
        import torch

        width, pad = max(map(len, prompts)), self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        return input_ids, attention_mask

    @contextmanager
    def _holding_model(self):
        """The model to ourselves, with our adapter active (generators of load_many share one model)."""
        with self.lock:
            if self.adapter:
                self.model.set_adapter(self.adapter)
            yield
