"""The CUDA paths on one GPU, in one run: training throughput (ours vs the seed recipe, two bases),
8-/4-bit QLoRA, a long run of the default recipe on recent papers, batched generation.

Run on the GPU machine by benchmarks/gpu/run.sh; on a CPU with a tiny model to check the script:
    python benchmarks/gpu/bench_gpu.py --data .gpu/b --base /tmp/tiny --gemma-config none --out /tmp/o --budget 20

Every step runs `python -m chatgentitle train` (or the generator) in its own process under a time
limit, so one failure does not stop the rest; results.json and table.md are written after each step.
Throughput is measured between the second and the last log step (CUDA start-up and the first
step's allocations excluded): papers/s = papers in those steps / seconds, tokens/s = real tokens.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import subprocess
import sys
import time
from pathlib import Path

# The seed project's recipe on a GPU: alpaca-lora's finetune.py defaults (batch 128 of micro 4,
# fp16 mixed precision, r=8 on q/v, dropout 0.05, loss on the prompt too, no length grouping).
SEED = ["--prompt-template", "alpaca", "--train-on-inputs", "--dtype", "fp16", "--batch-size", "128",
        "--micro-batch-size", "4", "--no-group-by-length", "--lora-r", "8", "--lora-alpha", "16",
        "--lora-dropout", "0.05", "--lora-target-modules", "q_proj,v_proj", "--learning-rate", "3e-4"]
# Ours: the default model's recipe (configs/smollm2-135m-lora-recent.yaml), GPU-sized micro-batches.
OURS = ["--prompt-template", "compact", "--dtype", "auto", "--batch-size", "32", "--micro-batch-size", "32",
        "--lora-r", "16", "--lora-alpha", "32", "--lora-dropout", "0", "--lora-target-modules", "all-linear",
        "--learning-rate", "1e-3"]
RUNS = Path(os.environ.get("TMPDIR", "/tmp")) / "gpu-bench" / "runs"  # only a few files go back
COMMON = ["--cutoff-len", "256", "--save-steps", "100000", "--eval-steps", "100000", "--logging-steps", "1",
          "--warmup-steps", "0"]


def log(*parts):
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def train(name: str, args: list[str], out: Path, limit: float) -> dict:
    """One `chatgentitle train` in its own process; its throughput and memory from metrics.jsonl."""
    run_dir = RUNS / name.replace(" ", "-")
    began = time.perf_counter()
    cmd = [sys.executable, "-m", "chatgentitle", "train", *args, "--output-dir", str(run_dir)]
    with open(out / "logs.txt", "a") as logs:
        logs.write(f"\n### {name}: {' '.join(cmd)}\n")
        logs.flush()
        try:
            status = subprocess.run(cmd, stdout=logs, stderr=logs, timeout=limit).returncode
        except subprocess.TimeoutExpired:
            status = "timeout"
    result = {"name": name, "status": status, "wall_s": round(time.perf_counter() - began, 1)}
    metrics = run_dir / "metrics.jsonl"
    if status != 0 or not metrics.is_file():
        return result
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [r for r in rows if "loss" in r and "elapsed_s" in r]
    summary = rows[-1]["summary"]
    batch = rows[-1]["config"]["batch_size"]
    if len(steps) >= 3:
        first, last = steps[1], steps[-1]
        seconds = last["elapsed_s"] - first["elapsed_s"]
        share = (last["step"] - first["step"]) / summary["optimizer_steps"]
        result["papers_per_s"] = round((last["step"] - first["step"]) * batch / seconds, 1)
        # tokens per step are not logged one by one: the run's mean tokens per paper times papers/s
        tokens_per_paper = summary["tokens_seen"] / (summary["optimizer_steps"] * batch)
        result["tokens_per_s"] = round(result["papers_per_s"] * tokens_per_paper)
        result["measured_share"] = round(share, 2)
    result.update(loss_first=steps[0]["loss"] if steps else None, loss_last=steps[-1]["loss"] if steps else None,
                  steps=summary["optimizer_steps"], peak_gpu_mb=summary.get("peak_gpu_memory_mb"),
                  eval_loss=summary.get("final_eval_loss"), run_dir=str(run_dir))
    return result


def generate_check(name: str, run_dir: str, abstracts: list[str], out: Path, limit: float,
                   quantize: str | None = None, beams: int = 4) -> dict:
    """Load base + adapter (optionally 8/4-bit), title the abstracts in batches of 16, time it."""
    code = f"""
import json, sys, time, torch
from chatgentitle.generate import GenerationOptions, TitleGenerator
abstracts = json.loads(sys.stdin.read())
gen = TitleGenerator.load({run_dir!r}, quantize={quantize!r})
options = GenerationOptions(num_beams={beams})
gen(abstracts[:16], options)  # warm-up
if torch.cuda.is_available():
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
began = time.perf_counter()
titles = []
for i in range(0, len(abstracts), 16):
    titles += gen(abstracts[i:i + 16], options)
seconds = time.perf_counter() - began
peak = round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None
print("RESULT " + json.dumps({{"titles_per_s": round(len(titles) / seconds, 2), "device": str(gen.device),
                              "peak_gpu_mb": peak, "titles": titles[:4]}}))
"""
    began = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(abstracts), capture_output=True,
                              text=True, timeout=limit)
        status = proc.returncode
        with open(out / "logs.txt", "a") as logs:
            logs.write(f"\n### {name}\n{proc.stderr[-4000:]}\n")
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        result = json.loads(lines[-1][7:]) if lines else {}
    except subprocess.TimeoutExpired:
        status, result = "timeout", {}
    return {"name": name, "status": status, "wall_s": round(time.perf_counter() - began, 1), **result}


def read_xz_jsonl(path: Path) -> list[dict]:
    with lzma.open(path, "rt") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with train.jsonl.xz and val.jsonl.xz")
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--gemma-config", default="none",
                        help="folder with Gemma 3 270M's config.json (random weights: throughput only), or none")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=210, help="seconds for the long run's training")
    parser.add_argument("--max-papers", type=int, default=0, help="cap on the long run's papers (0: all)")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "gpu-bench"
    work.mkdir(parents=True, exist_ok=True)
    train_rows = read_xz_jsonl(args.data / "train.jsonl.xz")
    val_rows = read_xz_jsonl(args.data / "val.jsonl.xz")
    if args.max_papers:
        train_rows = train_rows[: args.max_papers]
    for name, rows in (("train", train_rows), ("val", val_rows)):
        (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = ["--data", str(work / "train.jsonl")]
    results: list[dict] = []

    def record(result: dict) -> dict:
        log(json.dumps(result))
        results.append(result)
        (out / "results.json").write_text(json.dumps(results, indent=1))
        return result

    base = ["--base-model", args.base]
    # 1. throughput on the same papers: ours (24 steps of 32) vs the seed recipe (6 steps of 128)
    ours = record(train("smollm2 ours", [*base, *data, *OURS, *COMMON, "--val-set-size", "0",
                                         "--max-steps", "24"], out, 240))
    record(train("smollm2 seed recipe", [*base, *data, *SEED, *COMMON, "--val-set-size", "0",
                                         "--max-steps", "6"], out, 240))

    # 2. the long run: the default recipe on as many recent papers as the budget allows, one pass
    rate = ours.get("papers_per_s") or 50.0
    steps = max(10, min(len(train_rows) // 32, int(args.budget * rate / 32)))
    log(f"long run: {steps} steps of 32 at ~{rate} papers/s")
    record(train("smollm2 long run", [*base, *data, *OURS, "--cutoff-len", "256", "--val-data",
                                      str(work / "val.jsonl"), "--max-steps", str(steps),
                                      "--warmup-steps", "30", "--logging-steps", "10",
                                      "--eval-steps", str(max(steps // 4, 1)), "--save-steps", "100000"],
                 out, args.budget * 2 + 120))
    long_dir = RUNS / "smollm2-long-run"
    if (long_dir / "adapter_model.safetensors").is_file():  # brought back: the run files, weights in bf16
        import torch
        from safetensors.torch import load_file, save_file

        weights = load_file(long_dir / "adapter_model.safetensors")  # fp32: 20 MB, over the 16 MiB per file
        save_file({k: v.to(torch.bfloat16) for k, v in weights.items()}, out / "adapter_model.safetensors")
        subprocess.run(["tar", "-cf", str(out / "long-run.tar"), "-C", str(long_dir), "adapter_config.json",
                        "prompt.json", "config.yaml", "metrics.jsonl", "loss.png"], check=False)

    # 3. the larger base's throughput (Gemma 3 270M's architecture, random weights, our tokenizer)
    if args.gemma_config != "none":
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from chatgentitle.modeling import resolve_base

        gemma_dir = work / "gemma3-270m-random"
        config = AutoConfig.from_pretrained(args.gemma_config)
        AutoModelForCausalLM.from_config(config).save_pretrained(gemma_dir)
        AutoTokenizer.from_pretrained(resolve_base(args.base)).save_pretrained(gemma_dir)
        gemma = ["--base-model", str(gemma_dir)]
        record(train("gemma3-270m ours", [*gemma, *data, *OURS, *COMMON, "--val-set-size", "0",
                                          "--max-steps", "24"], out, 240))
        record(train("gemma3-270m seed recipe", [*gemma, *data, *SEED, *COMMON, "--val-set-size", "0",
                                                 "--max-steps", "6"], out, 240))

    # 4. 8-bit and 4-bit next to bf16 at the same settings: train, save, reload, generate
    import torch

    short = [*base, *data, *OURS, *COMMON, "--val-set-size", "0", "--max-steps", "30",
             "--micro-batch-size", "16", "--batch-size", "16"]
    abstracts = [r["abstract"] for r in val_rows[:64]]
    for quantize in ([None, "8bit", "4bit"] if torch.cuda.is_available() else [None]):
        label = quantize or "bf16"
        run = record(train(f"smollm2 {label}", [*short, *(["--quantize", quantize] if quantize else [])], out, 240))
        if run["status"] == 0:
            record(generate_check(f"generate {label} reload", run["run_dir"], abstracts[:32], out, 180,
                                  quantize=quantize, beams=1))

    # 5. batched generation with the new adapter: default decoding (4 beams) and greedy
    if (long_dir / "adapter_model.safetensors").is_file():
        val_abstracts = [r["abstract"] for r in val_rows[:200]]
        for beams in (4, 1):
            record(generate_check(f"generate long run, beams {beams}", str(long_dir), val_abstracts, out, 240,
                                  beams=beams))
    subprocess.run(f"tar -cf {out / 'metrics.tar'} */metrics.jsonl */config.yaml", shell=True, cwd=RUNS,
                   check=False)
    write_table(results, out / "table.md")
    print((out / "table.md").read_text())


def write_table(results: list[dict], path: Path) -> None:
    keys = ["name", "status", "steps", "papers_per_s", "tokens_per_s", "peak_gpu_mb", "loss_first", "loss_last",
            "eval_loss", "titles_per_s", "wall_s"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in results:
        lines.append("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
