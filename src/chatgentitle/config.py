"""Typed configs: the option dataclasses (TrainConfig, GenerationOptions), readable from YAML.

A YAML file gives the values, command-line flags override them, and the resolved config is
saved next to the outputs (`config.yaml` in every run dir).
"""

from __future__ import annotations

import ast
import enum
import inspect
import textwrap
import typing
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path

import yaml

from chatgentitle.errors import OptionError
from chatgentitle.prompt import TRAIN_TEMPLATE

DTYPES = ("auto", "bf16", "fp16", "fp32")  # auto: bf16 where the CPU/GPU computes it natively (modeling)
QUANTIZATIONS = ("8bit", "4bit")  # bitsandbytes, CUDA only
DEFAULT_BASE = "smollm2-135m"  # SmolLM2-135M-Instruct, packaged as a GGUF wheel (modeling.BUILTIN_BASES)


@cache
def field_docs(cls) -> dict[str, str]:
    """The docstring under each field of a dataclass (what the CLI, the API schema and the web UI show)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def split_csv(value: str | None) -> tuple[str, ...]:
    """A comma-separated flag's values ("cs.AI, cs.CL" -> ("cs.AI", "cs.CL")); the one splitter of them."""
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def check_precision(dtype: str, quantize: str | None) -> None:
    """OptionError unless dtype is one of DTYPES and quantize None or one of QUANTIZATIONS."""
    if dtype not in DTYPES:
        raise OptionError(f"dtype must be {', '.join(DTYPES)}, not {dtype!r}")
    if quantize not in (None, *QUANTIZATIONS):
        raise OptionError(f"quantize must be {' or '.join(QUANTIZATIONS)}, not {quantize!r}")


def bounds(cls, name: str) -> tuple:
    """The (low, high) bound of a dataclass field: what every front end derives its limits from."""
    return cls.__dataclass_fields__[name].metadata["range"]


def phrase_limits(cls, name: str) -> tuple[int, int]:
    """(most phrases, most characters per phrase) of a phrases field."""
    return cls.__dataclass_fields__[name].metadata["phrases"]


def _bounded(default, low, high):
    """A field whose value must lie in [low, high] (or be None when that is its default): the bound every
    front end enforces and shows."""
    return field(default=default, metadata={"range": (low, high)})


def _phrases(most: int, chars: int):
    """A field of up to `most` phrases of 1 to `chars` characters each (a repeatable flag, a JSON array)."""
    return field(default=(), metadata={"phrases": (most, chars)})


class DecodingMode(enum.Enum):
    """How a GenerationOptions value is decoded (transformers' GenerationConfig.get_generation_mode())."""

    GREEDY = "greedy"
    SAMPLE = "sample"
    BEAM_SEARCH = "beam_search"  # the shared-prefill search (decoding.beam_search)
    CONSTRAINED_BEAM_SEARCH = "constrained_beam_search"  # with no_repeat_ngram_size: transformers' search
    CONSENSUS = "consensus"  # beams + samples of every model, the candidate that agrees most
    STEERED = "steered_beam_search"  # phrases that must appear, a target length (steering.steered_search)

    @property
    def uses_members(self) -> bool:
        """Whether an ensemble run's other members take part (and so must be in memory)."""
        return self is DecodingMode.CONSENSUS


_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
BEST_TITLES = 32  # consensus samples per model for the best titles (`label`'s default; docs/search.md)


@dataclass
class GenerationOptions:
    """How titles are decoded; every field takes effect. The bounds keep one request's work bounded
    (beams x candidates x new tokens); the API answers 422 outside them, the CLI and web UI use them."""

    max_new_tokens: int = _bounded(40, 1, 64)
    """Upper bound on generated tokens per title."""
    num_beams: int = _bounded(4, 1, 8)
    """Beam search width (1: greedy, or sampling with do_sample). 4, as the seed project decoded: better
    titles than greedy decoding at about twice the time (docs/search.md, Decoding)."""
    do_sample: bool = False
    """Sample instead of beam/greedy decoding (num_beams is then not used)."""
    temperature: float = _bounded(0.7, 0.01, 2.0)
    """Sampling temperature (with do_sample)."""
    top_p: float = _bounded(0.9, 0.01, 1.0)
    """Nucleus sampling: keep the smallest set of tokens with this much probability (with do_sample)."""
    top_k: int = _bounded(50, 0, 200)
    """Sample among the k most likely tokens (0: all; with do_sample)."""
    repetition_penalty: float = _bounded(1.1, 0.5, 2.0)
    """>1 discourages repeated tokens (titles that say the same thing twice)."""
    length_penalty: float = _bounded(1.0, 0.0, 2.0)
    """Beam search: a finished title's score is its log-probability / length**length_penalty; below 1
    favours shorter titles, above 1 longer ones."""
    consensus: int = _bounded(0, 0, 64)
    """Draw this many samples per model besides the beams and return the candidate that agrees most (mean
    ROUGE-L) with all of them (minimum Bayes risk); with an ensemble run every member takes part. 32
    (BEST_TITLES) is `label`'s teacher; several times slower than beams, and on today's default within
    noise of them (docs/search.md, Decoding). 0: the most likely beam. Not used with do_sample or
    no_repeat_ngram_size (those decode as they say)."""
    no_repeat_ngram_size: int = _bounded(0, 0, 8)
    """Never repeat a sequence of this many tokens within a title (0: off)."""
    num_candidates: int = _bounded(1, 1, 8)
    """Distinct titles to return per abstract (beam search or sampling provide them)."""
    include: tuple[str, ...] = _phrases(5, 100)
    """Phrases every title must contain, as whole words (case-insensitive; written as given), by
    lexically constrained beam search. Up to 5 phrases of up to 100 characters that fit in
    max_new_tokens together."""
    words: int | None = _bounded(None, 3, 30)
    """Target title length in words (soft: titles closer to it score better in the beam search)."""

    @classmethod
    def overrides(cls, pairs: list[str]) -> dict:
        """Fields from "name=value" texts (eval's and bench_default's NAME=RUN_DIR,num_beams=1,...)."""
        types, found = typing.get_type_hints(cls), {}
        for pair in pairs:
            name, _, value = pair.partition("=")
            if name not in types or not value:
                raise OptionError(f"{pair!r}: give OPTION=VALUE with one of {', '.join(types)}")
            kind = types[name]
            try:
                found[name] = _BOOLS[value.lower()] if kind is bool else kind(value)
            except (KeyError, ValueError):
                raise OptionError(f"{pair!r}: {name} takes a {kind.__name__}") from None
        return found

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if "range" in f.metadata and not (value is None and f.default is None):
                low, high = f.metadata["range"]
                if not low <= value <= high:
                    raise OptionError(f"{f.name} must be between {low} and {high}")
        self.include = tuple(self.include)
        most, chars = phrase_limits(type(self), "include")
        if len(self.include) > most:
            raise OptionError(f"include: at most {most} phrases, {len(self.include)} given")
        for phrase in self.include:
            if not phrase.strip() or len(phrase) > chars:
                raise OptionError(f"include: a phrase has 1 to {chars} characters, {phrase[:20]!r} has {len(phrase)}")
        if (self.include or self.words) and (self.do_sample or self.no_repeat_ngram_size or self.consensus):
            raise OptionError("include and words steer the beam search: not with do_sample, "
                              "no_repeat_ngram_size or consensus")

    @property
    def mode(self) -> DecodingMode:
        """The one place that turns these options into a way of decoding; every front end asks it."""
        if self.do_sample:
            return DecodingMode.SAMPLE
        if self.include or self.words:
            return DecodingMode.STEERED
        if self.no_repeat_ngram_size:
            return DecodingMode.CONSTRAINED_BEAM_SEARCH if self.beams > 1 else DecodingMode.GREEDY
        if self.consensus:
            return DecodingMode.CONSENSUS
        return DecodingMode.BEAM_SEARCH if self.beams > 1 else DecodingMode.GREEDY

    @property
    def streams(self) -> bool:
        """Whether the title can be shown as it grows: one candidate, decoded token by token."""
        return self.mode in (DecodingMode.GREEDY, DecodingMode.SAMPLE) and self.num_candidates == 1

    @property
    def pool(self) -> int:
        """Titles decoded to show num_candidates of them. For several, four times as many: near-copies are
        dropped and the shown ones spread over the pool (generate.candidates); beam search fills it with 2n
        beams and 2n samples (decoding.decode), sampling with 4n samples."""
        return 4 * self.num_candidates if self.num_candidates > 1 else 1

    @property
    def beams(self) -> int:
        """Beam width without sampling: several candidates come from 2n beams."""
        return max(self.num_beams, self.pool // 2)

    def generate_kwargs(self) -> dict:
        """transformers' generate() arguments (greedy, sampling, beams with no_repeat_ngram_size)."""
        wanted = self.pool
        kwargs = {"max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty,
                  "do_sample": self.do_sample, "num_beams": self.num_beams}
        if self.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        if not self.do_sample and self.num_beams > 1:
            kwargs["length_penalty"] = self.length_penalty
        if self.do_sample:  # plain sampling: the (default) beam width does not apply
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, num_beams=1)
        else:
            kwargs["num_beams"] = self.beams
        beams = kwargs["num_beams"]
        # every beam comes back: the best one that does not repeat itself is chosen (see generate)
        kwargs["num_return_sequences"] = wanted if beams == 1 else beams
        return kwargs


@dataclass
class TrainConfig:
    """LoRA fine-tuning, with alpaca-lora's option names and meanings."""

    base_model: str = DEFAULT_BASE
    """Base model: HF directory, GGUF file, hub id, or a built-in name (smollm2-135m)."""
    data: str = ""
    """Training data: JSONL from `prepare` (title/abstract) or alpaca JSON (instruction/input/output)."""
    val_data: str | None = None
    """Validation data in the same formats; without it, val_set_size examples are split off `data`."""
    output_dir: str = "runs/title-lora"
    """The run dir: adapter, prompt.json, config.yaml, metrics.jsonl, loss.png, checkpoints."""
    batch_size: int = 128
    """Examples per optimizer step (micro batches are accumulated up to it)."""
    micro_batch_size: int = 4
    """Examples per forward/backward pass."""
    num_epochs: float = 3
    """Passes over the training data (max_steps, when given, wins)."""
    learning_rate: float = 3e-4
    """Peak learning rate of the cosine schedule (after warmup_steps)."""
    cutoff_len: int = 256
    """Maximum tokens of prompt + title; the abstract is shortened to fit, never the title."""
    val_set_size: int = 2000
    """Examples held out from `data` for validation when val_data is not given (0: none)."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling: the update is multiplied by lora_alpha / lora_r."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA inputs; 0 is about 25% faster on CPU (random masks are costly there)."""
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    """Module names that get LoRA adapters; ["all-linear"] adapts every linear layer."""
    train_on_inputs: bool = False
    """Also compute the loss on the prompt (alpaca-lora's default; ours trains on the title only)."""
    group_by_length: bool = True
    """Batch examples of similar length together: much less padding, same examples."""
    resume_from_checkpoint: str | None = None
    """A checkpoint dir, or "last" for the newest complete checkpoint in output_dir."""
    init_adapter: str | None = None
    """Start from this PEFT adapter's weights (same rank and targets) instead of a fresh LoRA; "default":
    the packaged adapter (rank 16, all linear layers)."""
    objective: str = "sft"
    """sft: learn each row's title (cross-entropy); dpo: prefer each row's title to its `rejected` one
    (`chatgentitle label` writes both), relative to the model the run starts from (init_adapter)."""
    dpo_beta: float = 0.1
    """DPO: the weight of the log-probability ratios; higher keeps the model closer to where it started."""
    dpo_nll_weight: float = 0.0
    """DPO: add this times the preferred titles' cross-entropy (RPO), which keeps their likelihood up."""
    prompt_template: str = TRAIN_TEMPLATE
    """Packaged template name (alpaca, compact, chat) or a template JSON file; saved with the adapter."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run num_epochs)."""
    max_examples: int | None = None
    """Use only the first N training examples (after the validation split and --skip-examples)."""
    skip_examples: int = 0
    """Skip the first N training examples, e.g. those the --init-adapter run already trained on."""
    seed: int = 42
    """Seed of the LoRA initialisation, the validation split and the data order."""
    save_steps: int = 200
    """Save a resumable checkpoint every N optimizer steps."""
    eval_steps: int = 200
    """Compute the validation loss every N optimizer steps."""
    eval_rouge: int = 0
    """At every eval step also title the first N validation papers (greedy) and log their ROUGE-L
    (eval_rougeL in metrics.jsonl): the task's own metric, which the loss does not always follow."""
    keep_best: str | None = None
    """rouge or loss: the run dir's adapter is the best eval step's (named in metrics.jsonl's summary),
    not the last; checkpoints are then saved at eval steps."""
    early_stopping_patience: int = 0
    """Stop when keep_best's metric (loss if unset) has not improved for K evaluations (0: never)."""
    logging_steps: int = 10
    """Log loss, learning rate and real tokens/s to metrics.jsonl every N optimizer steps."""
    warmup_steps: int = 20
    """Optimizer steps of linear learning-rate warmup."""
    dtype: str = "auto"
    """Compute dtype: auto (bf16 where the CPU/GPU has it), bf16, fp16 or fp32."""
    quantize: str | None = None
    """Load the base model in 8bit or 4bit (QLoRA); CUDA only."""
    attention: str = "auto"
    """Attention kernel for training: sdpa, eager, or auto (eager on CUDA, whose memory-efficient SDPA
    backward gave NaN gradients on padded batches; sdpa elsewhere)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about 30% slower."""
    num_workers: int = 0
    """DataLoader worker processes."""

    def __post_init__(self):
        if self.micro_batch_size < 1 or self.batch_size < self.micro_batch_size:
            raise OptionError("batch_size must be >= micro_batch_size >= 1")
        if self.cutoff_len < 16:
            raise OptionError("cutoff_len must be at least 16 tokens")
        check_precision(self.dtype, self.quantize)
        if self.skip_examples < 0:
            raise OptionError("skip_examples must be >= 0")
        if self.keep_best not in (None, "rouge", "loss"):
            raise OptionError("keep_best must be rouge or loss")
        if self.keep_best == "rouge" and self.eval_rouge < 1:
            raise OptionError("keep_best rouge needs eval_rouge N (validation papers titled at each eval step)")
        if self.eval_rouge < 0 or self.early_stopping_patience < 0:
            raise OptionError("eval_rouge and early_stopping_patience must be >= 0")
        if self.objective not in ("sft", "dpo"):
            raise OptionError("objective must be sft or dpo")
        if self.dpo_beta <= 0 or self.dpo_nll_weight < 0:
            raise OptionError("dpo_beta must be > 0 and dpo_nll_weight >= 0")
        if self.attention not in ("auto", "sdpa", "eager"):
            raise OptionError("attention must be auto, sdpa or eager")
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = list(split_csv(self.lora_target_modules))

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> TrainConfig:
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as err:
            raise OptionError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
        if not isinstance(values, dict):
            raise OptionError(f"{path}: expected 'option: value' lines, found a {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise OptionError(f"{path}: unknown option(s) {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except TypeError as err:  # a value of the wrong kind, e.g. cutoff_len: "long"
            raise OptionError(f"{path}: {err}") from None

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(asdict(self), sort_keys=False))
