"""Generation speed of default models side by side: titles/s in batches and one title at a time.

Run as: python benchmarks/bench_default.py --model before=runs/stage2 --model now=default \
            [--data data/recent/val.jsonl] [--papers 200] [--latency-papers 32]

Each model is a run dir ("default": the packaged adapter) decoded with its own options
(NAME=RUN_DIR[,num_beams=4,consensus=0]; GenerationOptions' defaults otherwise) and loaded its own
way if asked (NAME=RUN_DIR,dtype=fp32: bf16 and fp32 side by side), on the same real papers, in this
one process, one model after the other: the ratios are what to read, not the absolute rates (2-core
CPU, nothing else running). ROUGE-L says what the speed buys.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generate import latencies, rouge_l, timed_batches  # noqa: E402
from common import table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", required=True,
                        help="NAME=RUN_DIR[,option=value...]: decoding, dtype, quantize")
    parser.add_argument("--data", default="data/recent/val.jsonl", help="JSONL with title and abstract")
    parser.add_argument("--papers", type=int, default=200)
    parser.add_argument("--latency-papers", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", default="auto", help="auto, bf16 or fp32 (a CPU without AVX512-bf16)")
    args = parser.parse_args()

    from chatgentitle.decoding.options import DecodingMode, GenerationOptions
    from chatgentitle.evaluation.report import parse_systems
    from chatgentitle.titling.sources import SourceSpec, load_source

    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines()[: args.papers]]
    abstracts, references = [r["abstract"] for r in rows], [r["title"] for r in rows]
    results = []
    for system in parse_systems(models=args.model, spec=SourceSpec(dtype=args.dtype)):
        generator, options = load_source(system.source), GenerationOptions(**system.options)
        decode = partial(generator.__call__, options=options)
        decode(abstracts[:2])  # warm-up
        titles, rate = timed_batches(decode, abstracts, args.batch_size)
        p50, p95 = latencies(decode, abstracts[: args.latency_papers])
        words = sum(len(t.split()) for t in titles) / len(titles)
        by_consensus = options.mode is DecodingMode.CONSENSUS
        members = f" × {1 + len(generator.members)} models" if by_consensus and generator.members else ""
        chosen = f", consensus with {options.consensus} samples{members}" if by_consensus else ""
        results.append([system.name, f"{options.num_beams} beams{chosen}, length penalty {options.length_penalty}",
                        generator.max_prompt_tokens, rate, f"{p50:.2f}", f"{p95:.2f}",
                        f"{rouge_l(titles, references):.1f}", f"{words:.1f}"])
        del generator
    print(table(["model", "decoding", "prompt tokens ≤", f"titles/s (batch {args.batch_size})",
                 "p50 s (one title)", "p95 s", "ROUGE-L", "words"], results))
    print(f"\n{len(abstracts)} papers from {args.data}, dtype {args.dtype}; latency over the first "
          f"{args.latency_papers}, one per call.")


if __name__ == "__main__":
    main()
