"""Int8 matmuls for decoding on the CPU: quality and speed against fp32, same adapter, same papers.

Run as: python benchmarks/int8_decoding.py [--data data/recent/val-last600.jsonl] [--papers 600]
            [--options num_beams=1] [--options consensus=32]

The experiment behind docs/search.md ("Int8 weights for a CPU without bf16"); not part of the package,
because it did not pay: -0.69 ROUGE-L with 4 beams on 600 validation papers for 1.1-1.3x the speed.
Run it with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 to stand in
for a CPU without AVX512.

Each Linear layer's weight is kept in int8 with one scale per output channel; at each call the input is
quantised with one scale per row (token), the product runs in int32 (`torch._int_mm`: oneDNN's 8-bit
kernels) and is scaled back to fp32. A few input channels carry far larger values than the rest, and a
row's one scale would follow them; as in SmoothQuant (Xiao et al. 2023, arXiv 2211.10438) part of each
channel's range moves into the weight's (input / s, weight * s, s from the layer's inputs on the three
packaged sample papers). The output layer stays in fp32 (quantised, it cost the most agreement).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from functools import partial
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generate import timed_batches  # noqa: E402

SMOOTHING = 0.5  # SmoothQuant's alpha: how much of the inputs' range moves into the weights


def int8_rows(x: torch.Tensor, shift: int = 0, dtype=torch.int8) -> tuple[torch.Tensor, torch.Tensor]:
    """x (rows, n) in 8 bits with one scale per row (symmetric, absmax): x ≈ (q - shift) * scale."""
    scale = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127
    return (x / scale).round_().add_(shift).to(dtype), scale


class Int8Linear(nn.Module):
    """The int8 copy of a Linear layer for inference (fp32 in and out), smoothed by its inputs' range
    per channel (`input_max`) when given."""

    def __init__(self, linear: nn.Linear, input_max: torch.Tensor | None = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        smooth = None
        if input_max is not None:
            smooth = (input_max.clamp(min=1e-5) ** SMOOTHING
                      / weight.abs().amax(dim=0).clamp(min=1e-5) ** (1 - SMOOTHING)).clamp(min=1e-5)
            weight = weight * smooth
        self.register_buffer("input_scale", None if smooth is None else 1 / smooth)
        weight, scale = int8_rows(weight)  # a row per output channel
        self.register_buffer("weight_int8", weight.t().contiguous())  # (in, out), as _int_mm takes it
        self.register_buffer("weight_scale", scale.t().contiguous())  # (1, out)
        # inputs go in as uint8 (int8 + 128): x86 has uint8 x int8 instructions (AVX2's vpmaddubsw, VNNI),
        # and oneDNN's int8 x int8 path without AVX512 was 3-6x slower than fp32. The shift is taken back
        # exactly: 128 x each output channel's weight sum.
        self.register_buffer("shift", 128 * weight.sum(dim=1, dtype=torch.int32)[None])  # (1, out)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float()
        rows, scale = int8_rows(flat if self.input_scale is None else flat * self.input_scale, 128, torch.uint8)
        out = (torch._int_mm(rows, self.weight_int8) - self.shift) * (scale * self.weight_scale)
        if self.bias is not None:
            out += self.bias
        return out.view(*x.shape[:-1], self.out_features)


@torch.inference_mode()
def input_ranges(model: nn.Module, calibration: list[list[int]]) -> dict[str, torch.Tensor]:
    """The largest |input| per input channel of each Linear layer over the calibration token ids."""
    found = {}

    def record(name):
        def hook(module, args, output):
            x = args[0].reshape(-1, args[0].shape[-1]).abs().amax(dim=0).float()
            found[name] = torch.maximum(found[name], x) if name in found else x
        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in model.named_modules()
             if type(module) is nn.Linear]
    try:
        for ids in calibration:
            model(torch.tensor([ids]))
    finally:
        for hook in hooks:
            hook.remove()
    return found


def quantize_int8(model: nn.Module, calibration: list[list[int]],
                  keep: tuple[str, ...] = ("lm_head",)) -> nn.Module:
    """The model (in fp32) with its Linear layers in int8, but those named in `keep`; in place. The output
    layer stays in fp32 by default: quantised, it cost more agreement with fp32 than any other layer."""
    model.float()
    ranges = input_ranges(model, calibration)
    for prefix, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and name not in keep:
                setattr(parent, name, Int8Linear(child, ranges.get(f"{prefix}.{name}" if prefix else name)))
    return model


def calibration(generator) -> list[list[int]]:
    """The packaged sample papers' prompts and real titles, as token ids."""
    from chatgentitle.data.prompt import encode_prompt
    from chatgentitle.data.records import sample_papers

    tokenizer = generator.tokenizer
    return [encode_prompt(generator.template, tokenizer, paper["abstract"], None, generator.max_prompt_tokens)
            + tokenizer(paper["title"], add_special_tokens=False)["input_ids"] for paper in sample_papers()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/recent/val-last600.jsonl")
    parser.add_argument("--papers", type=int, default=600)
    parser.add_argument("--options", action="append", help="decoding as OPTION=VALUE[,...] (default: 4 beams)")
    args = parser.parse_args()

    from chatgentitle.decoding.options import GenerationOptions
    from chatgentitle.evaluation.metrics import bootstrap_ci, score_pairs
    from chatgentitle.titling.generator import TitleGenerator

    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines()[: args.papers]]
    abstracts, references = [r["abstract"] for r in rows], [r["title"] for r in rows]
    exact = TitleGenerator.load(None, dtype="fp32")
    loaded = TitleGenerator.load(None, dtype="fp32")  # a second copy: quantize_int8 works in place
    ids = calibration(loaded)
    int8 = TitleGenerator(quantize_int8(loaded.model, ids), loaded.tokenizer, loaded.template,
                          loaded.max_prompt_tokens, name="int8",
                          members=[quantize_int8(member, ids) for member in loaded.members])
    print(f"{len(rows)} papers of {args.data}, batches of 8, the packaged default, fp32 against int8")
    for pairs in args.options or [""]:
        options = GenerationOptions(**GenerationOptions.overrides([p for p in pairs.split(",") if p]))
        found = {}
        for name, generator in (("fp32", exact), ("int8", int8)):
            titles, rate = timed_batches(partial(generator.__call__, options=options), abstracts, 8)
            found[name] = (titles, [s.rougeL for s in score_pairs(titles, references, abstracts)], rate)
        (fp32, fp32_scores, fp32_rate), (titles, scores, rate) = found["fp32"], found["int8"]
        low, high = bootstrap_ci([b - a for a, b in zip(fp32_scores, scores, strict=True)])
        same = sum(a == b for a, b in zip(fp32, titles, strict=True))
        print(f"{options.mode.value} ({pairs or 'defaults'}): fp32 {statistics.fmean(fp32_scores):.2f} ROUGE-L, "
              f"{fp32_rate:.2f} titles/s; int8 {statistics.fmean(scores):.2f}, {rate:.2f} titles/s "
              f"({rate / fp32_rate:.2f}x); int8 - fp32 {statistics.fmean(scores) - statistics.fmean(fp32_scores):+.2f} "
              f"[{low:+.2f}, {high:+.2f}]; same title {same} of {len(rows)}")


if __name__ == "__main__":
    main()
