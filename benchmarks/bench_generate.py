"""Titles/s with 4 beams: the seed project's style, transformers' beam search, ours; latency; the floor.

Run as: python benchmarks/bench_generate.py [--data data/recent/val.jsonl] [--papers 200] [--seed-papers 48]

Same base model + adapter (the packaged default) and the same real recent papers, each variant in
this one run, all with the default decoding (4 beams, repetition penalty 1.1, up to 40 new tokens):
- seed style: fp32, adapter unmerged (PeftModel), one abstract at a time, transformers' beam search
  (alpaca-lora's generate.py), on the first --seed-papers papers (it is slow; a rate is a rate);
- before: TitleGenerator as it was, batches of 8, bf16, merged: transformers' generate(num_beams=4),
  which copies every prompt 4 times before encoding it;
- now: TitleGenerator, batches of 8: one prefill per abstract, the prompt cache shared by the beams;
- greedy: TitleGenerator, --num-beams 1, for scale.
Single-title latency (p50/p95) is one abstract per call. The floor is what the prefill alone allows:
measured prompt tokens/s (one forward pass over the batch) / mean prompt tokens. ROUGE-L of each
variant against the real titles says whether the titles stayed as good.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import table  # noqa: E402


def transformers_beams(generator, abstracts, options):
    """The decoding TitleGenerator used before: transformers' generate with num_beams."""
    import torch

    from chatgentitle.titling.ranking import pick_titles

    input_ids, attention_mask = generator.encode(abstracts)
    tokens = {"pad_token_id": generator.tokenizer.pad_token_id, "eos_token_id": generator.tokenizer.eos_token_id}
    kwargs = options.generate_kwargs() | tokens
    with torch.inference_mode():
        output = generator.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    flat = generator.tokenizer.batch_decode(output[:, input_ids.shape[1]:], skip_special_tokens=True)
    per = len(flat) // len(abstracts)
    return [pick_titles(flat[i:i + per], 1)[0] for i in range(0, len(flat), per)]


def consensus(generator, abstracts, options):
    """Minimum Bayes risk over the beams: the title with the highest mean ROUGE-L to the other beams'."""
    from rouge_score import rouge_scorer

    from chatgentitle.decoding.search import beam_search
    from chatgentitle.titling.ranking import pick_titles

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    input_ids, attention_mask = generator.encode(abstracts)
    chosen = []
    for seqs in beam_search(generator.model, input_ids, attention_mask, num_beams=options.num_beams,
                            max_new_tokens=options.max_new_tokens, eos_token_id=generator.tokenizer.eos_token_id,
                            repetition_penalty=options.repetition_penalty):
        titles = pick_titles([generator.tokenizer.decode(s, skip_special_tokens=True) for s in seqs], len(seqs))
        chosen.append(max(titles, key=lambda t: sum(scorer.score(o, t)["rougeL"].fmeasure for o in titles)))
    return chosen


def seed_style(run_dir, abstracts, max_new_tokens):
    """alpaca-lora generate.py: fp32 PeftModel, one prompt at a time, beams 4, split on the marker."""
    import torch
    from peft import PeftModel

    from chatgentitle.data.prompt import clean_title
    from chatgentitle.model.loading import load_base
    from chatgentitle.model.run_dir import RunDir

    info = RunDir(run_dir).describe()  # the run's own prompt: only decoding, batching, dtype differ
    template = info.template
    model, tokenizer = load_base(info.base_model, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, run_dir).eval()
    titles = []
    for abstract in abstracts:
        inputs = tokenizer(template.render(abstract), return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, num_beams=4, max_new_tokens=max_new_tokens)
        titles.append(clean_title(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)))
    return titles


def timed_batches(fn, abstracts, batch_size):
    began, titles = time.perf_counter(), []
    for i in range(0, len(abstracts), batch_size):
        titles += fn(abstracts[i:i + batch_size])
    return titles, len(abstracts) / (time.perf_counter() - began)


def latencies(fn, abstracts):
    times = []
    for abstract in abstracts:
        began = time.perf_counter()
        fn([abstract])
        times.append(time.perf_counter() - began)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def rouge_l(predictions, references):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return 100 * statistics.mean(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references,
                                                                                       strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/recent/val.jsonl", help="JSONL with title and abstract")
    parser.add_argument("--papers", type=int, default=200)
    parser.add_argument("--seed-papers", type=int, default=48)
    parser.add_argument("--latency-papers", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    import torch

    from chatgentitle.titling.generator import GenerationOptions, TitleGenerator, default_adapter_dir

    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines()[: args.papers]]
    abstracts, references = [r["abstract"] for r in rows], [r["title"] for r in rows]
    generator = TitleGenerator.load()
    beams, greedy = GenerationOptions(), GenerationOptions(num_beams=1)
    before = partial(transformers_beams, generator, options=beams)
    now, fast_greedy = partial(generator.__call__, options=beams), partial(generator.__call__, options=greedy)
    mbr = partial(consensus, generator, options=beams)
    now(abstracts[:2]), before(abstracts[:2])  # warm-up

    # the floor: one forward pass over each batch of prompts, logits for the last position only
    prompt_tokens, prefill_seconds = 0, 0.0
    for i in range(0, len(abstracts), args.batch_size):
        input_ids, attention_mask = generator.encode(abstracts[i:i + args.batch_size])
        began = time.perf_counter()
        with torch.inference_mode():
            generator.model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1)
        prefill_seconds += time.perf_counter() - began
        prompt_tokens += int(attention_mask.sum())
    floor = prompt_tokens / prefill_seconds / (prompt_tokens / len(abstracts))

    results = {}
    for name, fn in (("before", before), ("now", now), ("mbr", mbr), ("greedy", fast_greedy)):
        titles, rate = timed_batches(fn, abstracts, args.batch_size)
        p50, p95 = latencies(fn, abstracts[: args.latency_papers])
        results[name] = (rate, p50, p95, rouge_l(titles, references))
    del generator, before, now, fast_greedy, mbr
    seed_n = args.seed_papers
    began = time.perf_counter()
    seed_titles = seed_style(default_adapter_dir(), abstracts[:seed_n], beams.max_new_tokens)
    seed_rate = seed_n / (time.perf_counter() - began)
    seed_rouge = rouge_l(seed_titles, references[:seed_n])

    base = results["before"][0]
    print(table(["decoding (4 beams unless said)", "papers", "titles/s (batch 8)", "vs before", "p50 s (one title)",
                 "p95 s", "ROUGE-L"], [
        ["seed style: fp32, unmerged, one at a time, transformers' beams", seed_n, seed_rate,
         f"{seed_rate / base:.2f}×", f"{1 / seed_rate:.2f} (mean)", "", f"{seed_rouge:.1f} (its {seed_n})"],
        ["before: transformers' generate(num_beams=4), bf16, merged", len(abstracts), *_row(results["before"], base)],
        ["now: one prefill per abstract, shared prompt cache", len(abstracts), *_row(results["now"], base)],
        ["now, the consensus of the 4 beams (MBR, ROUGE-L)", len(abstracts), *_row(results["mbr"], base)],
        ["greedy (num_beams 1)", len(abstracts), *_row(results["greedy"], base)],
    ]))
    print(f"\nfloor: prefill {prompt_tokens / prefill_seconds:,.0f} prompt tokens/s / "
          f"{prompt_tokens / len(abstracts):.0f} tokens per prompt = {floor:.2f} titles/s")


def _row(result, base):
    rate, p50, p95, rouge = result
    return [rate, f"{rate / base:.2f}×", f"{p50:.2f}", f"{p95:.2f}", f"{rouge:.1f}"]


if __name__ == "__main__":
    main()
