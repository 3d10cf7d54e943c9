"""On one GPU, in one call: titling speed, candidate pools for the ranker, and field-balanced adapters.

Run on the GPU machine by benchmarks/gpu/run.sh (data from benchmarks/gpu/pack.sh); on a CPU with a tiny
model to check the script:
    python benchmarks/gpu/fields_gpu.py --data .gpu/c --base /tmp/tiny --adapter runs/tiny --out /tmp/o \
        --deadline 120 --train-budget 20

1. Speed: the adapter's 4-beam titles (bf16, the shared-prefill search) at three batch sizes: titles/s and
   peak memory; greedy and 4-beam titles of 64 validation papers, to compare with the CPU.
2. Field-balanced adapters (scripts/field_splits.py's mix.jsonl), warm-started from --adapter, one
   `chatgentitle train` process per learning rate, beside step 3 on the same GPU.
3. Pools: every finished title of an 8-beam and a 4-beam search with the search's score, for the
   validation papers (val.jsonl: data/recent/val.jsonl, fields.jsonl: the field-stratified set), then
   8-beam pools for the ranker's training papers (pool.jsonl) until the trainings end.
4. Each new adapter's 4- and 8-beam pools for the validation papers; the adapters in bf16.
Everything lands in --out as it is made, so a run cut short still brings back what it did.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

STARTED = time.monotonic()
RECIPE = ["--prompt-template", "compact", "--lora-r", "16", "--lora-alpha", "32", "--lora-dropout", "0",
          "--lora-target-modules", "all-linear", "--cutoff-len", "256", "--num-epochs", "1", "--dtype", "auto",
          "--batch-size", "64", "--micro-batch-size", "64", "--warmup-steps", "20", "--logging-steps", "10",
          "--val-set-size", "0"]


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), f"[{time.monotonic() - STARTED:.0f} s]", *parts, flush=True)


def read(path: Path) -> list[dict]:
    opener = lzma.open if path.suffix == ".xz" else open
    with opener(path, "rt") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def pools(generator, papers: list[dict], beams: int, batch: int, until: float | None = None):
    """Every finished title of a `beams`-wide search per paper, with its score and token count; papers
    in order of abstract length within each call (less padding), `batch` at a time."""
    import torch

    from chatgentitle.decoding.options import GenerationOptions
    from chatgentitle.decoding.search import beam_search

    options, tokenizer = GenerationOptions(num_beams=beams), generator.tokenizer
    papers = sorted(papers, key=lambda p: len(p["abstract"]))
    for start in range(0, len(papers), batch):
        if until is not None and time.monotonic() > until:
            return
        chunk = papers[start:start + batch]
        ids, mask = generator.encode([p["abstract"] for p in chunk])
        found = beam_search(generator.model, ids, mask, num_beams=beams, max_new_tokens=options.max_new_tokens,
                            eos_token_id=tokenizer.eos_token_id, repetition_penalty=options.repetition_penalty,
                            length_penalty=options.length_penalty, with_scores=True)
        for paper, candidates in zip(chunk, found, strict=True):
            yield {"id": paper["id"], "beams": beams,
                   "candidates": [[tokenizer.decode(seq, skip_special_tokens=True), round(score, 5), len(seq)]
                                  for seq, score in candidates]}
        if torch.cuda.is_available():
            torch.cuda.synchronize()


def speed(generator, papers: list[dict], results: dict) -> None:
    import torch

    from chatgentitle.decoding.options import GenerationOptions

    cuda = torch.cuda.is_available()
    abstracts = [p["abstract"] for p in papers]
    generator(abstracts[:8], GenerationOptions())  # warm-up
    for batch in (16, 64, 256):
        n = min(len(abstracts), max(256, 2 * batch))
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        began = time.perf_counter()
        for i in range(0, n, batch):
            generator(abstracts[i:i + batch], GenerationOptions())
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - began
        results["speed"].append({"batch": batch, "papers": n, "titles_per_s": round(n / seconds, 1),
                                 "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None})
        log("speed", results["speed"][-1])
    check = abstracts[:64]
    results["agreement"] = {"ids": [p["id"] for p in papers[:64]],
                            "greedy": generator(check, GenerationOptions(num_beams=1)),
                            "beams": [t for i in range(0, 64, 16) for t in generator(check[i:i + 16])]}


def start_training(name: str, lr: str, args, work: Path) -> tuple[subprocess.Popen, Path]:
    run_dir = work / "runs" / name
    cmd = [sys.executable, "-m", "chatgentitle", "train", "--base-model", args.base, "--data", str(work / "mix.jsonl"),
           "--val-data", str(work / "val200.jsonl"), "--output-dir", str(run_dir), "--init-adapter", args.adapter,
           *RECIPE, "--learning-rate", lr, "--save-steps", "100", "--eval-steps", "100"]
    if args.train_steps:
        cmd += ["--max-steps", str(args.train_steps)]
    logs = open(args.out / f"train-{name}.txt", "w")
    return subprocess.Popen(cmd, stdout=logs, stderr=subprocess.STDOUT), run_dir


def finished_adapter(run_dir: Path, base: str) -> Path | None:
    """The run's adapter, or its newest checkpoint's when the run was stopped (described as the run is:
    base model, compact prompt, cutoff 256)."""
    if (run_dir / "adapter_model.safetensors").is_file():
        return run_dir
    checkpoints = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if not checkpoints or not (checkpoints[-1] / "adapter_model.safetensors").is_file():
        return None
    from chatgentitle.data.prompt import PromptTemplate

    PromptTemplate.load("compact").save(checkpoints[-1])
    (checkpoints[-1] / "config.yaml").write_text(f"base_model: {base}\nprompt_template: compact\ncutoff_len: 256\n")
    return checkpoints[-1]


def pack_adapter(name: str, run_dir: Path, source: Path, out: Path) -> Path:
    """The adapter in bf16 (half the bytes; the model decodes in bf16 or fp32 either way) with the run's
    description files, as one tar."""
    import torch
    from safetensors.torch import load_file, save_file

    folder = out.parent / f"pack-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    weights = load_file(source / "adapter_model.safetensors")
    save_file({k: v.to(torch.bfloat16) for k, v in weights.items()}, folder / "adapter_model.safetensors")
    tar_path = out / f"adapter-{name}.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(folder / "adapter_model.safetensors", arcname="adapter_model.safetensors")
        for file in ("adapter_config.json", "prompt.json", "config.yaml", "metrics.jsonl"):
            for where in (source, run_dir):
                if (where / file).is_file():
                    tar.add(where / file, arcname=file)
                    break
    return tar_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of val, fields, pool, mix .jsonl(.xz)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--adapter", default="default", help="the adapter to pool and to warm-start from")
    parser.add_argument("--lrs", default="2e-4,5e-4", help="learning rates of the field-balanced runs")
    parser.add_argument("--train-steps", type=int, default=400,
                        help="each run's optimizer steps of 64 papers (0: one epoch)")
    parser.add_argument("--train-budget", type=float, default=280, help="seconds the trainings may take")
    parser.add_argument("--batch", type=int, default=128, help="papers per search call in the pools")
    parser.add_argument("--deadline", type=float, default=540, help="seconds for the whole script")
    parser.add_argument("--train-only", action="store_true", help="no speed test, no pools of --adapter")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "fields-gpu"
    work.mkdir(parents=True, exist_ok=True)

    from chatgentitle.titling.generator import TitleGenerator

    def find(name):
        return next(p for p in (args.data / f"{name}.jsonl.xz", args.data / f"{name}.jsonl") if p.is_file())

    val, fields, pool = read(find("val")), read(find("fields")), read(find("pool"))
    held = {p["id"] for p in val} | {p["id"] for p in fields}
    assert not held & {p["id"] for p in pool}, "a validation paper among the ranker's pool papers"
    (work / "mix.jsonl").write_text("".join(json.dumps(p) + "\n" for p in read(find("mix"))))
    (work / "val200.jsonl").write_text("".join(json.dumps(p) + "\n" for p in val[:200]))
    results = {"speed": [], "steps": []}

    def save():
        (args.out / "results.json").write_text(json.dumps(results, indent=1))

    adapter = None if args.adapter == "default" else args.adapter
    generator = TitleGenerator.load(adapter)
    log("loaded", generator.name, generator.device, next(generator.model.parameters()).dtype)
    if not args.train_only:
        speed(generator, val, results)
        save()

    runs = {f"lr{lr}": start_training(f"lr{lr}", lr, args, work) for lr in args.lrs.split(",") if lr}
    trained_by = time.monotonic() + args.train_budget
    eval_papers = val + fields

    def pool_step(name: str, model, papers: list[dict], beams: int, file: str, until: float | None = None):
        """One model's pools, appended to `file` as a stream of its own (a cut run keeps the earlier ones)."""
        began, n = time.perf_counter(), 0
        with lzma.open(args.out / file, "at") as out:
            for row in pools(model, papers, beams, args.batch, until):
                out.write(json.dumps({"model": name, **row}) + "\n")
                n += 1
        results["steps"].append({"step": f"{name} {beams}-beam pools, {file}", "papers": n,
                                 "seconds": round(time.perf_counter() - began, 1)})
        log(results["steps"][-1])
        save()

    for beams in () if args.train_only else (4, 8):
        pool_step("default", generator, eval_papers, beams, "pools-eval.jsonl.xz")
    # the ranker's training pools until the trainings are due, in slices so that a cut run keeps most
    stop = min(trained_by, STARTED + args.deadline - 200) if runs else STARTED + args.deadline - 30
    for start in range(0, 0 if args.train_only else len(pool), 1024):
        if time.monotonic() > stop:
            break
        pool_step("default", generator, pool[start:start + 1024], 8, "pools-train.jsonl.xz", stop)
    del generator

    for name, (process, run_dir) in runs.items():
        try:
            process.wait(timeout=max(1.0, trained_by - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait()
        source = finished_adapter(run_dir, args.base)
        results["steps"].append({"step": f"train {name}", "status": process.returncode,
                                 "adapter": str(source) if source else None})
        log(results["steps"][-1])
        save()
        if source is None:
            continue
        pack_adapter(name, run_dir, source, args.out)
        model = TitleGenerator.load(source)
        for beams in (4, 8):
            if STARTED + args.deadline - time.monotonic() > 25:
                pool_step(name, model, eval_papers, beams, "pools-eval.jsonl.xz", STARTED + args.deadline - 15)
        del model
    log("done")
    print(json.dumps(results["speed"]), json.dumps(results["steps"]))


if __name__ == "__main__":
    main()
