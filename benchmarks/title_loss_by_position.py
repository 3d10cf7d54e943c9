"""Where a title's loss goes: mean loss per title token by position (first tokens, later ones, EOS).

Run as: python benchmarks/title_loss_by_position.py --data data/recent/val200.jsonl RUN_DIR [RUN_DIR ...]

A lower validation loss did not always give better decoded titles (docs/search.md); this splits the
loss of each run by where the token sits in the title, with the run's own prompt and cutoff.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import table  # noqa: E402

BUCKETS = [("token 1", 0, 1), ("tokens 2-3", 1, 3), ("tokens 4-8", 3, 8), ("tokens 9+", 8, 999)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--data", default="data/recent/val200.jsonl")
    args = parser.parse_args()

    import torch

    from chatgentitle.data.prompt import IGNORE_INDEX, encode_example
    from chatgentitle.titling.generator import TitleGenerator

    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines()]
    results = []
    for run_dir in args.runs:
        generator = TitleGenerator.load(run_dir, dtype="fp32")
        sums = {name: [0.0, 0] for name, _, _ in [*BUCKETS, ("EOS", 0, 0), ("all", 0, 0)]}
        for row in rows:
            ex = encode_example(generator.template, generator.tokenizer, row["abstract"], row["title"],
                                generator.max_prompt_tokens)
            ids, labels = torch.tensor([ex["input_ids"]]), torch.tensor(ex["labels"][1:])
            with torch.inference_mode():
                logits = generator.model(input_ids=ids).logits[0, :-1].float()
            losses = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")
            title = losses[labels != IGNORE_INDEX].tolist()
            for name, start, end in BUCKETS:
                part = title[:-1][start:end]
                sums[name][0] += sum(part)
                sums[name][1] += len(part)
            sums["EOS"][0] += title[-1]
            sums["EOS"][1] += 1
            sums["all"][0] += sum(title)
            sums["all"][1] += len(title)
        results.append([run_dir, *(f"{s / max(n, 1):.3f}" for s, n in sums.values())])
        del generator
    print(table(["run", *(name for name, _, _ in BUCKETS), "EOS", "all title tokens"], results))


if __name__ == "__main__":
    main()
