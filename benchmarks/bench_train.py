"""Training throughput: `chatgentitle train` vs the seed project's recipe, same examples and steps.

Run as: python benchmarks/bench_train.py [--examples 96] [--steps 6]

Both train SmolLM2-135M with LoRA on the same real papers (recent ones from ../shared) for the
same optimizer steps of 16 examples, each in its own process:
- seed recipe: alpaca template, train_on_inputs, fp32, padded micro-batches of 4, cutoff 256,
  r=8 on q/v (alpaca-lora's finetune.py as the seed project ran it);
- ours: compact template, loss and logits on the title only, bf16 autocast where the CPU has it,
  length-grouped left-padded micro-batches of 8, cutoff 256, r=16 on all linear layers, no LoRA
  dropout (its random masks cost ~25% of a CPU step).
Tokens/s counts real tokens (attention mask), never padding; peak RSS is the child's own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import recent_papers, table  # noqa: E402

COMMON = ["--base-model", "smollm2-135m", "--batch-size", "16", "--cutoff-len", "256", "--val-set-size", "0",
          "--save-steps", "100000", "--logging-steps", "1", "--warmup-steps", "0"]
RECIPES = {
    "seed recipe (alpaca, train_on_inputs, fp32, micro 4, r=8 q/v)": [
        "--prompt-template", "alpaca", "--train-on-inputs", "--dtype", "fp32", "--micro-batch-size", "4",
        "--no-group-by-length", "--lora-r", "8", "--lora-alpha", "16", "--lora-target-modules", "q_proj,v_proj"],
    "chatgentitle train (compact, title loss, bf16 auto, micro 8, r=16 all-linear, dropout 0)": [
        "--prompt-template", "compact", "--dtype", "auto", "--micro-batch-size", "8",
        "--lora-r", "16", "--lora-alpha", "32", "--lora-target-modules", "all-linear", "--lora-dropout", "0"],
}


def run(args: list[str], out: Path) -> dict:
    proc = subprocess.Popen([sys.executable, "-m", "chatgentitle", "train", *args, "--output-dir", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        sys.exit(f"training failed: {args}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    runtime = next(r["train_runtime"] for r in rows if "train_loss" in r)  # the end-of-training log
    summary = rows[-1]["summary"]
    return {"seconds": runtime, "tokens": summary["tokens_seen"], "steps": summary["optimizer_steps"],
            "peak_mb": usage.ru_maxrss // 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=96)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    papers = recent_papers(args.examples)
    rows, first = [], None
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.jsonl"
        data.write_text("".join(json.dumps({"id": p.id, "title": p.title, "abstract": p.abstract}) + "\n"
                                for p in papers))
        for name, extra in RECIPES.items():
            began = time.perf_counter()
            result = run([*COMMON, "--data", str(data), "--max-steps", str(args.steps), *extra], Path(tmp) / name[:4])
            examples_per_s = result["steps"] * 16 / result["seconds"]
            tokens_per_s = result["tokens"] / result["seconds"]
            first = first or examples_per_s
            rows.append([name, result["steps"], result["tokens"], tokens_per_s, examples_per_s,
                         f"{examples_per_s / first:.1f}×", result["peak_mb"], f"{time.perf_counter() - began:.0f}"])
    print(table(["recipe", "steps", "real tokens", "real tokens/s", "examples/s", "speed-up (examples/s)",
                 "peak RSS MB", "wall s (with load)"], rows))


if __name__ == "__main__":
    main()
