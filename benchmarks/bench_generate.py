"""Titles/s: batched TitleGenerator vs the seed project's generate.py style, and p50 latency.

Run as: python benchmarks/bench_generate.py [--model RUN_DIR] [--papers 64]

Same base model + adapter and the same real abstracts (recent papers from ../shared):
- seed style: fp32, adapter unmerged (PeftModel), one abstract at a time, beams 4, the whole
  sequence decoded and the title cut at "### Response:" (alpaca-lora's generate.py);
- ours: TitleGenerator (bf16 where the CPU has it, adapter merged), batches of 16, greedy;
- single-title latency: ours, one abstract per call, greedy, median over the papers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import recent_papers, table  # noqa: E402


def seed_style(run_dir, abstracts, max_new_tokens):
    """alpaca-lora generate.py: fp32 PeftModel, one prompt at a time, beams 4, split on the marker."""
    import torch
    from peft import PeftModel

    from chatgentitle.generate import describe_run
    from chatgentitle.modeling import load_base
    from chatgentitle.prompt import PromptTemplate

    # the run's own prompt, so that only decoding, batching and dtype differ
    base, template, _ = describe_run(run_dir) if run_dir else ("smollm2-135m", PromptTemplate.load("alpaca"), 0)
    model, tokenizer = load_base(base, dtype=torch.float32)
    if run_dir:
        model = PeftModel.from_pretrained(model, run_dir)
    model.eval()
    titles = []
    for abstract in abstracts:
        inputs = tokenizer(template.render(abstract), return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, num_beams=4, max_new_tokens=max_new_tokens)
        titles.append(tokenizer.decode(out[0]).split("### Response:")[-1].strip())
    return titles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="run dir (default: the packaged adapter)")
    parser.add_argument("--papers", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--num-beams", type=int, default=1, help="1: greedy (the table in docs/benchmarks.md)")
    args = parser.parse_args()

    from chatgentitle.generate import GenerationOptions, TitleGenerator, default_adapter_dir

    abstracts = [p.abstract for p in recent_papers(args.papers)]
    run_dir = Path(args.model) if args.model else default_adapter_dir()
    generator = TitleGenerator.load(run_dir)
    options = GenerationOptions(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
    generator(abstracts[:2], options)  # warm-up
    began = time.perf_counter()
    for i in range(0, len(abstracts), args.batch_size):
        generator(abstracts[i:i + args.batch_size], options)
    ours = len(abstracts) / (time.perf_counter() - began)
    latencies = []
    for abstract in abstracts[:16]:
        t0 = time.perf_counter()
        generator([abstract], options)
        latencies.append(time.perf_counter() - t0)
    del generator
    began = time.perf_counter()
    seed_style(run_dir, abstracts, args.max_new_tokens)
    seed = len(abstracts) / (time.perf_counter() - began)
    print(table(["generation", "abstracts", "titles/s", "vs seed"], [
        ["seed generate.py style (fp32, one at a time, beams 4)", len(abstracts), seed, "1.0×"],
        [f"TitleGenerator (batch {args.batch_size}, greedy, merged, auto dtype)", len(abstracts), ours,
         f"{ours / seed:.1f}×"],
    ]))
    print(f"\nsingle-title latency (greedy, batch 1): p50 {statistics.median(latencies):.2f} s, "
          f"max {max(latencies):.2f} s over {len(latencies)} abstracts")


if __name__ == "__main__":
    main()
