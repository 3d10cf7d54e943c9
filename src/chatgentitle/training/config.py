"""TrainConfig: LoRA fine-tuning, with alpaca-lora's option names and meanings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from chatgentitle.config import DEFAULT_BASE, check_precision, split_csv
from chatgentitle.data.prompt import TRAIN_TEMPLATE
from chatgentitle.errors import OptionError


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
    """Compute dtype: auto (bf16 on a GPU that has it, or a CPU where it measures faster), bf16, fp16 or fp32."""
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
