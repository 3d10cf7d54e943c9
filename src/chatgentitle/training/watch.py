"""What a training run watches and leaves beside itself: the ROUGE-L probe of an eval step, metrics.jsonl
rows (loss, eval loss, lr, real tokens/s; the stop at a non-finite loss), progress lines, loss.png."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from chatgentitle.data.index import KnownNeighbours
from chatgentitle.data.prompt import PromptTemplate
from chatgentitle.model.run_dir import RunDir
from chatgentitle.progress import Progress
from chatgentitle.training.config import TrainConfig


class RougeProbe:
    """Greedy titles for the first N validation papers and their mean ROUGE-L against the real titles
    (with the prompt template's instruction): the task's metric at each eval step."""

    def __init__(self, examples, template: PromptTemplate, tokenizer, cfg: TrainConfig, dtype):
        self.abstracts = [e.abstract for e in examples[: cfg.eval_rouge]]
        self.titles = [e.title for e in examples[: cfg.eval_rouge]]
        self.related = KnownNeighbours({e.abstract: e.related for e in examples[: cfg.eval_rouge]})
        self.template, self.tokenizer, self.cutoff_len, self.dtype = template, tokenizer, cfg.cutoff_len, dtype

    def __call__(self, model) -> float:
        from chatgentitle.decoding.options import GenerationOptions
        from chatgentitle.evaluation.metrics import score_pairs
        from chatgentitle.titling.generator import TitleGenerator

        generator = TitleGenerator(model, self.tokenizer, self.template, self.cutoff_len)
        generator.guide = self.related
        greedy = GenerationOptions(num_beams=1, consensus=0)
        model.eval()
        try:
            with torch.autocast(generator.device.type, self.dtype, enabled=self.dtype != torch.float32):
                found = [t[0] for i in range(0, len(self.abstracts), 16)
                         for t in generator.generate(self.abstracts[i: i + 16], greedy)]
        finally:
            model.train()
        scores = score_pairs(found, self.titles, self.abstracts)
        return round(sum(s.rougeL for s in scores) / len(scores), 3)


class MetricsLogger(TrainerCallback):
    """Appends loss, eval loss, lr and real tokens/s to the run's metrics.jsonl, and stops the run at
    the first loss or gradient norm that is not finite (`diverged_at` says where)."""

    def __init__(self, run: RunDir):
        self.run = run
        self.started = time.perf_counter()
        self.last = (self.started, 0)
        self.diverged_at: int | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        if not all(math.isfinite(logs[key]) for key in ("loss", "grad_norm") if key in logs):
            # every later step would be NaN too: stop now, every rank alike (the values are all-reduced)
            self.diverged_at = self.diverged_at or state.global_step
            control.should_training_stop = True
        if not state.is_world_process_zero:
            return
        now, tokens = time.perf_counter(), state.num_input_tokens_seen
        row = {"step": state.global_step, "epoch": round(state.epoch or 0, 4),
               "elapsed_s": round(now - self.started, 3), **logs}
        if "loss" in logs and now > self.last[0]:
            # real (non-padding) tokens since the previous training log, per second
            row["tokens_per_second"] = round((tokens - self.last[1]) / (now - self.last[0]), 1)
            self.last = (now, tokens)
        self.run.log(row)


class ProgressLines(TrainerCallback):
    """Steps done, rate and ETA as lines in a log; on a terminal Trainer shows its own bar instead."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress = Progress(state.max_steps, "steps", "train", show=state.is_world_process_zero,
                                 initial=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.update(1)

    def on_train_end(self, args, state, control, **kwargs):
        self.progress.close()


def plot_losses(run: RunDir) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = run.read_metrics()
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("loss", "train"), ("eval_loss", "validation")):
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            ax.plot(*zip(*points, strict=True), marker="." if key == "eval_loss" else None, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (title tokens)")
    lines = list(ax.lines)
    rouge = [(r["step"], r["eval_rougeL"]) for r in rows if "eval_rougeL" in r]
    if rouge:
        right = ax.twinx()
        lines += right.plot(*zip(*rouge, strict=True), color="tab:green", marker="o", label="validation ROUGE-L")
        right.set_ylabel("ROUGE-L (greedy titles)")
    kept = run.kept_step(rows)
    if kept:
        lines.append(ax.axvline(kept["step"], color="grey", linestyle="--", label=f"kept: step {kept['step']}"))
    if lines:
        ax.legend(handles=lines, fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run.loss_plot, dpi=100)
    plt.close(fig)
    return run.loss_plot
