"""LoRA fine-tuning on abstract -> title pairs.

Run as: chatgentitle train --data data/train.jsonl --output-dir runs/cs-lora
   or:  accelerate launch -m chatgentitle train --config configs/smollm2-135m-lora.yaml  (many GPUs)

The loop is transformers' Trainer: it brings bf16 autocast (CPU and GPU), gradient
accumulation, DDP/FSDP/DeepSpeed under accelerate or torchrun, and checkpoints that restore
optimizer, scheduler, RNG and data position. What is ours: the data, the prompt masking, the
length-grouped batches and logits on the title only (the data and batches: training/examples.py; what a
run watches and writes beside itself: training/watch.py). `train` reads top to bottom as its steps: model,
data, arguments, fit, save (the run dir's files: model/run_dir.py).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments, set_seed

from chatgentitle.data.prompt import IGNORE_INDEX, PromptTemplate
from chatgentitle.errors import ChatGenTitleError
from chatgentitle.model.loading import load_base, pick_device, resolve_dtype
from chatgentitle.model.run_dir import RunDir
from chatgentitle.progress import Progress
from chatgentitle.training.config import TrainConfig
from chatgentitle.training.examples import TitleCollator, encode_all, select_examples
from chatgentitle.training.watch import MetricsLogger, ProgressLines, RougeProbe, plot_losses


class TrainError(ChatGenTitleError, ValueError):
    """A training option that cannot work, e.g. an init adapter of another shape."""


def title_logps(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probability of each labelled token, 0 elsewhere; how many are labelled), per row.

    Logits only from the first labelled column on: with the prompt masked that is the title, ~10%
    of the tokens, so the vocabulary projection (49k x 576 for SmolLM2) shrinks 10x.
    """
    labels = inputs["labels"]
    length = labels.shape[1]
    labelled = labels != IGNORE_INDEX
    first = int(labelled.float().argmax(dim=1)[labelled.any(dim=1)].min()) if labelled.any() else 0
    span = min(length - max(first, 1), length - 1)
    model_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
    logits = model(**model_inputs, logits_to_keep=span + 1).logits[:, :-1, :].float()  # column t predicts t + 1
    targets = labels[:, length - span:].to(logits.device)
    logps = -torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none",
    ).view(targets.shape)
    return logps, (targets != IGNORE_INDEX).sum(dim=1)


class TitleTrainer(Trainer):
    """Trainer whose loss looks at the titles only: cross-entropy on them, or the DPO loss (`dpo_beta`) on
    preference pairs (batches with reference log-probs); its evaluation adds the titles' ROUGE-L when it has
    a probe.

    DPO (Rafailov et al. 2023, arXiv 2305.18290) raises the log-probability of each preferred title over
    its rejected one, measured against the model the run started from, whose log-probabilities are
    computed once before training (`add_reference_logps`) — so the reference is the init adapter and no
    second model is held. TRL's DPOTrainer would take the bare base as the reference of a PEFT model and
    tokenize and cut prompts its own way; here the prompt masking and abstract shortening of
    supervised training apply unchanged. With `dpo_nll_weight` the preferred titles' cross-entropy is
    added (RPO, Pang et al. 2024, arXiv 2404.19733), so their likelihood does not fall with the rejected
    ones'. Validation rows without pairs get the cross-entropy loss.
    """

    rouge_probe: RougeProbe | None = None
    dpo_beta: float | None = None
    dpo_nll_weight: float = 0.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pair_stats: list[torch.Tensor] = []  # per micro batch: [accuracy, margin] of its pairs

    def evaluate(self, *args, **kwargs):
        metrics = super().evaluate(*args, **kwargs)
        if self.rouge_probe:
            # logged as a row of its own (the loss is logged inside evaluate); early stopping and
            # keep_best read it from the returned metrics
            rouge = {"eval_rougeL": self.rouge_probe(self.model)}
            self.log(rouge)
            metrics.update(rouge)
        return metrics

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logps, counts = title_logps(model, inputs)
        if "reference_logps" in inputs:
            loss = self.dpo_loss(logps.sum(dim=1), inputs["reference_logps"].to(logps.device))
            if self.dpo_nll_weight:  # the preferred titles' cross-entropy (their rows come first)
                pairs = len(inputs["reference_logps"])
                loss = loss - self.dpo_nll_weight * logps[:pairs].sum() / counts[:pairs].sum()
        else:
            loss = -logps.sum() / (num_items_in_batch if num_items_in_batch is not None else counts.sum())
        return (loss, {"loss": loss}) if return_outputs else loss  # evaluation asks for outputs; loss only

    def dpo_loss(self, logps: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Mean DPO loss of B pairs from the 2B rows' title log-probabilities (preferred rows first)."""
        pairs = len(reference)
        chosen, rejected = logps[:pairs] - reference[:, 0], logps[pairs:] - reference[:, 1]
        margin = self.dpo_beta * (chosen - rejected)  # the difference of DPO's implicit rewards
        self.pair_stats.append(torch.stack([(margin > 0).float().mean(), margin.mean()]).detach())
        return -torch.nn.functional.logsigmoid(margin).mean()

    def log(self, logs: dict, *args, **kwargs):
        if self.pair_stats and "loss" in logs:  # a training log: the pairs' means since the last one
            accuracy, margin = torch.stack(self.pair_stats).mean(dim=0).tolist()
            logs = logs | {"pair_accuracy": round(accuracy, 4), "reward_margin": round(margin, 4)}
            self.pair_stats.clear()
        super().log(logs, *args, **kwargs)


@torch.no_grad()
def add_reference_logps(model, features: list[dict], collator: TitleCollator, dtype, batch_size: int) -> None:
    """Each pair's title log-probabilities (preferred, rejected) under the model as it starts, once."""
    model.eval()
    device = next(model.parameters()).device
    by_length = sorted(features, key=lambda f: len(f["input_ids"]))  # batches of like length: little padding
    with Progress(len(features), "pairs", "reference log-probs") as shown:
        for start in range(0, len(features), batch_size):
            chunk = by_length[start:start + batch_size]
            batch = {k: v.to(device) for k, v in collator(chunk).items()}
            with torch.autocast(device.type, dtype, enabled=dtype != torch.float32):
                logps = title_logps(model, batch)[0].sum(dim=1).tolist()
            for i, feature in enumerate(chunk):
                feature["reference_logps"] = (logps[i], logps[len(chunk) + i])
            shown.update(len(chunk))
    model.train()


def load_adapter_weights(model, adapter_dir: str | Path) -> None:
    """Warm start: copy a saved adapter's LoRA weights into the fresh PEFT model."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(adapter_dir) / "adapter_model.safetensors"
    if not path.is_file():
        raise TrainError(f"{adapter_dir}: no adapter_model.safetensors (not a PEFT adapter dir)")
    try:
        result = set_peft_model_state_dict(model, load_file(path))
    except RuntimeError as error:  # shape mismatch: another rank
        first_line = str(error).splitlines()[0]
        raise TrainError(f"{adapter_dir}: adapter does not fit this LoRA config ({first_line})") from None
    if result.unexpected_keys:
        raise TrainError(f"{adapter_dir}: adapter has modules this LoRA config lacks, "
                         f"e.g. {result.unexpected_keys[0]}: use the same lora_target_modules")


# --------------------------------------------------------------------------- the steps of train()
def build_model(cfg: TrainConfig, dtype, device: str):
    """(PEFT model, tokenizer): the base with fresh (or warm-started) LoRA adapters."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    # Left-padded rows give fully masked query rows; on CUDA the memory-efficient SDPA backward
    # turned such batches into NaN gradients (H200; pytorch#178251), eager does not.
    attention = cfg.attention if cfg.attention != "auto" else ("eager" if device.startswith("cuda") else "sdpa")
    # Weights stay fp32 (LoRA needs fp32 master weights); bf16/fp16 is autocast by Trainer.
    model, tokenizer = load_base(cfg.base_model, quantize=cfg.quantize, dtype=dtype if cfg.quantize else None,
                                 attention=attention)
    if cfg.quantize:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    targets = "all-linear" if cfg.lora_target_modules == ["all-linear"] else cfg.lora_target_modules
    lora = LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=targets, bias="none", task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    if cfg.init_adapter:
        from chatgentitle.titling.generator import default_adapter_dir

        load_adapter_weights(model, default_adapter_dir() if cfg.init_adapter == "default" else cfg.init_adapter)
    return model, tokenizer


def training_arguments(cfg: TrainConfig, run: RunDir, device: str, dtype, validate: bool) -> TrainingArguments:
    world = int(os.environ.get("WORLD_SIZE", 1))  # set by torchrun / accelerate launch
    return TrainingArguments(
        output_dir=str(run.path),
        per_device_train_batch_size=cfg.micro_batch_size,
        per_device_eval_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=max(1, cfg.batch_size // (cfg.micro_batch_size * world)),
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps,
        lr_scheduler_type="cosine",
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=device == "cpu",
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if validate else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.eval_steps if cfg.keep_best else cfg.save_steps,  # the best step must have a checkpoint
        load_best_model_at_end=bool(cfg.keep_best),
        metric_for_best_model=_watched_metric(cfg),
        greater_is_better=cfg.keep_best == "rouge",
        save_total_limit=2,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,  # preference pairs carry their rejected title and reference log-probs
        dataloader_num_workers=cfg.num_workers,
        seed=cfg.seed,
        report_to="none",
        disable_tqdm=not sys.stderr.isatty(),  # in a log, ProgressLines writes a line every few percent
        ddp_find_unused_parameters=False if world > 1 else None,
    )


def _watched_metric(cfg: TrainConfig) -> str | None:
    """What keep_best and early stopping compare across eval steps (Trainer's metric_for_best_model)."""
    if cfg.keep_best == "rouge":
        return "rougeL"
    return "loss" if cfg.keep_best or cfg.early_stopping_patience else None


def fit(trainer: TitleTrainer, logger: MetricsLogger, cfg: TrainConfig, run: RunDir) -> float | None:
    """Train (resuming if asked); the final validation loss, if there is validation data."""
    resume = cfg.resume_from_checkpoint
    if resume == "last":
        resume = run.last_checkpoint()
    if not resume:
        run.start_metrics()
    trainer.train(resume_from_checkpoint=resume)
    if logger.diverged_at is not None:
        raise TrainError(f"training diverged at step {logger.diverged_at} (loss or gradient norm not finite; "
                         f"see {run.metrics}); no adapter was saved. Lower --learning-rate, raise "
                         "--warmup-steps or train with --dtype fp32")
    # Trainer has often just evaluated at the last step; otherwise evaluate now (collective under
    # DDP: every rank has the same log history, so all take the same branch; rank 0 writes).
    final_eval_loss = next((log["eval_loss"] for log in reversed(trainer.state.log_history)
                            if "eval_loss" in log and log.get("step") == trainer.state.global_step), None)
    if trainer.eval_dataset and final_eval_loss is None:
        final_eval_loss = trainer.evaluate()["eval_loss"]
    return final_eval_loss


def save_run(run: RunDir, trainer: TitleTrainer, template: PromptTemplate, cfg: TrainConfig,
             final_eval_loss: float | None) -> None:
    """Adapter, prompt, config, the summary line of metrics.jsonl and the loss plot."""
    run.save(trainer.model, template, cfg)
    summary = {"train_examples": len(trainer.train_dataset),
               "val_examples": len(trainer.eval_dataset) if trainer.eval_dataset else 0,
               "optimizer_steps": trainer.state.global_step, "tokens_seen": trainer.state.num_input_tokens_seen}
    if torch.cuda.is_available():  # this process's peak, what a GPU user sizes a card by
        summary["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    if trainer.args.load_best_model_at_end and trainer.state.best_model_checkpoint:
        metric = f"eval_{trainer.args.metric_for_best_model}"
        summary["kept"] = {"step": int(Path(trainer.state.best_model_checkpoint).name.split("-")[-1]),
                           metric: trainer.state.best_metric}
    if final_eval_loss is not None:
        summary["final_eval_loss"] = final_eval_loss
        summary["final_eval_perplexity"] = math.exp(final_eval_loss)
    run.log({"summary": summary, "config": asdict(cfg)})
    plot_losses(run)


def train(cfg: TrainConfig) -> Path:
    """Fine-tune a LoRA adapter as `cfg` says; returns the run dir."""
    run = RunDir(cfg.output_dir).create()
    set_seed(cfg.seed)
    template = PromptTemplate.load(cfg.prompt_template)
    train_examples, val_examples = select_examples(cfg)  # bad data fails before the model loads
    device = pick_device()
    dtype = resolve_dtype(cfg.dtype, device)
    model, tokenizer = build_model(cfg, dtype, device)
    collator = TitleCollator(tokenizer.pad_token_id)
    train_set = encode_all(train_examples, template, tokenizer, cfg, pairs=cfg.objective == "dpo")
    val_set = encode_all(val_examples, template, tokenizer, cfg) if val_examples else None
    if not val_set and (cfg.eval_rouge or cfg.keep_best or cfg.early_stopping_patience):
        raise TrainError("eval_rouge, keep_best and early_stopping_patience need validation data")
    logger = MetricsLogger(run)
    callbacks = [logger] if sys.stderr.isatty() else [logger, ProgressLines()]
    if cfg.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    trainer = TitleTrainer(
        model=model,
        args=training_arguments(cfg, run, device, dtype, validate=bool(val_set)),
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=collator,
        callbacks=callbacks,
    )
    if cfg.objective == "dpo":
        # the reference: the model as it starts (the init adapter, if any), on the device Trainer put it on
        add_reference_logps(trainer.model, train_set, collator, dtype, cfg.micro_batch_size)
        trainer.dpo_beta, trainer.dpo_nll_weight = cfg.dpo_beta, cfg.dpo_nll_weight
        trainer.loss_is_scaled_for_ga = False  # a mean over each micro batch's pairs: Trainer divides it
    if cfg.eval_rouge:
        trainer.rouge_probe = RougeProbe(val_examples, template, tokenizer, cfg, dtype)
    final_eval_loss = fit(trainer, logger, cfg, run)
    if trainer.is_world_process_zero():
        save_run(run, trainer, template, cfg, final_eval_loss)
    return run.path
