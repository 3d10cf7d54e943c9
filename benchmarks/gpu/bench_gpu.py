"""On one GPU, in one call: a long run of the default recipe on every recent paper the time allows
(a new ensemble member), its training throughput, titling on CUDA, and 8-/4-bit QLoRA on SmolLM2.

Run on the GPU machine by benchmarks/gpu/run.sh; on a CPU with a tiny model to check the script:
    python benchmarks/gpu/bench_gpu.py --train .gpu/b/train.jsonl.xz --val .gpu/c/val.jsonl.xz \
        --base /tmp/tiny --out /tmp/o --budget 20 --deadline 120

Every step runs `python -m chatgentitle train` (or the generator) in its own process under a time
limit, so one failure does not stop the rest; results.json and table.md are written after each step,
and a step that would not end before --deadline is skipped. Throughput is measured between the
second and the last log step (CUDA start-up and the first step's allocations excluded).
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

# The default model's recipe (configs/smollm2-135m-lora-recent.yaml) with GPU-sized batches.
OURS = ["--prompt-template", "compact", "--dtype", "auto", "--lora-r", "16", "--lora-alpha", "32",
        "--lora-dropout", "0", "--lora-target-modules", "all-linear", "--learning-rate", "1e-3",
        "--cutoff-len", "256"]
QUIET = ["--save-steps", "100000", "--eval-steps", "100000", "--val-set-size", "0", "--warmup-steps", "0"]
RUNS = Path(os.environ.get("TMPDIR", "/tmp")) / "gpu-bench" / "runs"  # only a few files go back
STARTED = time.monotonic()


def log(*parts):
    print(time.strftime("%H:%M:%S"), f"[{time.monotonic() - STARTED:.0f} s]", *parts, flush=True)


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
    result = {"name": name, "status": status, "wall_s": round(time.perf_counter() - began, 1),
              "run_dir": str(run_dir)}
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return result
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [r for r in rows if "loss" in r and "elapsed_s" in r]
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    result.update(loss_first=steps[0]["loss"] if steps else None, loss_last=steps[-1]["loss"] if steps else None,
                  eval_losses=evals)
    if "summary" not in rows[-1]:
        return result
    summary, batch = rows[-1]["summary"], rows[-1]["config"]["batch_size"]
    if len(steps) >= 3:
        first, last = steps[1], steps[-1]
        seconds = last["elapsed_s"] - first["elapsed_s"]
        result["papers_per_s"] = round((last["step"] - first["step"]) * batch / seconds, 1)
        # tokens per step are not logged one by one: the run's mean tokens per paper times papers/s
        tokens_per_paper = summary["tokens_seen"] / (summary["optimizer_steps"] * batch)
        result["tokens_per_s"] = round(result["papers_per_s"] * tokens_per_paper)
    result.update(steps=summary["optimizer_steps"], papers=summary["train_examples"],
                  peak_gpu_mb=summary.get("peak_gpu_memory_mb"), eval_loss=summary.get("final_eval_loss"))
    return result


def generate_check(name: str, run_dir: str, abstracts: list[str], out: Path, limit: float,
                   options: str, quantize: str | None = None) -> dict:
    """Load base + adapter (optionally 8/4-bit), title the abstracts in batches of 16, time it."""
    code = f"""
import json, sys, time, torch
from chatgentitle.titling.generator import GenerationOptions, TitleGenerator
abstracts = json.loads(sys.stdin.read())
gen = TitleGenerator.load({run_dir!r}, quantize={quantize!r})
options = GenerationOptions({options})
gen(abstracts[:16], options)  # warm-up
if torch.cuda.is_available():
    torch.cuda.synchronize()
began = time.perf_counter()
titles = []
for i in range(0, len(abstracts), 16):
    titles += gen(abstracts[i:i + 16], options)
seconds = time.perf_counter() - began
peak = round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None
print("RESULT " + json.dumps({{"titles_per_s": round(len(titles) / seconds, 2), "device": str(gen.device),
                              "peak_gpu_mb": peak, "titles": titles[:3]}}))
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


def bring_back(run_dir: Path, out: Path) -> str | None:
    """The run's adapter (fp32, in 15 MiB parts: the tool takes 16 MiB a file) and its files, or the
    newest checkpoint's adapter when the run did not finish."""
    source = run_dir
    if not (run_dir / "adapter_model.safetensors").is_file():
        checkpoints = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        if not checkpoints:
            return None
        source = checkpoints[-1]
    subprocess.run(["split", "-b", "15M", "-d", "-a", "1", str(source / "adapter_model.safetensors"),
                    str(out / "adapter_model.safetensors.")], check=True)
    files = [f for f in ("adapter_config.json", "prompt.json", "config.yaml", "metrics.jsonl", "loss.png")
             if (run_dir / f).is_file()]
    subprocess.run(["tar", "-cf", str(out / "long-run.tar"), "-C", str(run_dir), *files], check=False)
    return source.name


def read_xz_jsonl(paths: list[Path]) -> list[dict]:
    rows = []
    for path in paths:
        with lzma.open(path, "rt") as handle:
            rows += [json.loads(line) for line in handle if line.strip()]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=Path, nargs="+", required=True, help="training papers, .jsonl.xz")
    parser.add_argument("--val", type=Path, required=True, help="validation papers, .jsonl.xz")
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=64, help="papers per step of the long run (one micro-batch)")
    parser.add_argument("--budget", type=float, default=270, help="seconds of the long run's training")
    parser.add_argument("--epochs", type=float, default=2, help="cap on the long run's passes over the papers")
    parser.add_argument("--deadline", type=float, default=480, help="seconds for the whole script")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = RUNS.parent
    work.mkdir(parents=True, exist_ok=True)
    train_rows, val_rows = read_xz_jsonl(args.train), read_xz_jsonl([args.val])
    for name, rows in (("train", train_rows), ("val", val_rows)):
        (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = ["--base-model", args.base, "--data", str(work / "train.jsonl")]
    batch = ["--batch-size", str(args.batch), "--micro-batch-size", str(args.batch)]
    results: list[dict] = []

    def record(result: dict) -> dict:
        log(json.dumps(result))
        results.append(result)
        (out / "results.json").write_text(json.dumps(results, indent=1))
        write_table(results, out / "table.md")
        return result

    def left() -> float:
        return args.deadline - (time.monotonic() - STARTED)

    # 1. throughput of the long run's settings, which sizes it: 12 steps
    calib = record(train("smollm2 ours", [*base, *OURS, *batch, *QUIET, "--max-steps", "12", "--logging-steps", "1",
                                          "--max-examples", str(12 * args.batch)], out, 150))

    # 2. the long run: the default recipe from a fresh LoRA on as many recent papers as the budget allows
    rate = calib.get("papers_per_s") or 100.0
    steps = max(10, int(min(args.epochs * len(train_rows), args.budget * rate) // args.batch))
    papers = min(len(train_rows), steps * args.batch)
    log(f"long run: {steps} steps of {args.batch} over {papers} papers at ~{rate} papers/s")
    long_run = record(train("smollm2 long run", [
        *base, *OURS, *batch, "--val-data", str(work / "val.jsonl"), "--max-steps", str(steps),
        "--max-examples", str(papers), "--warmup-steps", "30", "--logging-steps", "10",
        "--eval-steps", str(max(steps // 4, 1)), "--save-steps", str(max(steps // 4, 1))],
        out, max(60.0, left() - 60)))
    long_dir = Path(long_run["run_dir"])
    record({"name": "brought back", "status": bring_back(long_dir, out)})  # the run dir or a checkpoint

    # 3. titling on CUDA with the new adapter: 4 beams and the default consensus decoding
    abstracts = [r["abstract"] for r in val_rows[:64]]
    if (long_dir / "adapter_model.safetensors").is_file():
        for label, options in (("4 beams", "num_beams=4, consensus=0"), ("consensus 32", "")):
            if left() > 60:
                record(generate_check(f"generate long run, {label}", str(long_dir), abstracts, out,
                                      min(120, left() - 10), options))

    # 4. 8-bit and 4-bit next to bf16 on SmolLM2 at the same settings: train, save, reload, generate
    short = [*base, *OURS, *QUIET, "--max-steps", "20", "--logging-steps", "1", "--max-examples", "320",
             "--micro-batch-size", "16", "--batch-size", "16"]
    for quantize in ("8bit", "4bit", None):
        if left() < 90:
            break
        label = quantize or "bf16"
        run = record(train(f"smollm2 {label}", [*short, *(["--quantize", quantize] if quantize else [])], out,
                           min(120, left() - 30)))
        if run["status"] == 0 and left() > 40:
            record(generate_check(f"generate {label} reload", run["run_dir"], abstracts[:32], out,
                                  min(90, left() - 10), "num_beams=1, consensus=0", quantize=quantize))
    print((out / "table.md").read_text())


def write_table(results: list[dict], path: Path) -> None:
    keys = ["name", "status", "steps", "papers", "papers_per_s", "tokens_per_s", "peak_gpu_mb", "loss_first",
            "loss_last", "eval_loss", "titles_per_s", "wall_s"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in results:
        lines.append("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
