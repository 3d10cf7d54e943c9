"""The consensus decoding before and after its speed-ups, same process, same papers.

Run as: python benchmarks/bench_consensus.py [--before e3fa661] [--data data/recent/test600.jsonl]
            [--papers 24] [--dtype bf16 --dtype fp32]

"Before" is decoding.py as it was at the given commit (read with `git show`), "now" the installed one;
both decode the packaged default (two adapters, 4 beams + 32 samples each) in batches of 8, one after
the other, in each dtype (fp32 stands in for a CPU without AVX512-bf16). Prints titles/s and how many
titles the two choose alike (the speed-ups change which samples are drawn, not how they are drawn).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generate import rouge_l  # noqa: E402
from common import table  # noqa: E402


def decoding_at(commit: str):
    """decoding.py of `commit`, imported as its own module."""
    source = subprocess.run(["git", "show", f"{commit}:src/chatgentitle/decoding.py"], check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "decoding_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("decoding_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="e3fa661")
    parser.add_argument("--data", default="data/recent/test600.jsonl")
    parser.add_argument("--papers", type=int, default=24)
    parser.add_argument("--dtype", action="append")
    args = parser.parse_args()

    import chatgentitle.decoding.search as decoding
    from chatgentitle.decoding.options import GenerationOptions
    from chatgentitle.titling.generator import TitleGenerator

    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines()[: args.papers]]
    abstracts, references = [r["abstract"] for r in rows], [r["title"] for r in rows]
    versions = {"before": decoding_at(args.before).decode, "now": decoding.decode}
    options = GenerationOptions()  # the default: consensus over both adapters
    results, found = [], {}
    for dtype in args.dtype or ["bf16", "fp32"]:
        generator = TitleGenerator.load(None, dtype=dtype)
        generator(abstracts[:1], options=options)  # loads the ensemble member, warms up
        for name, decode in versions.items():
            decoding.decode = decode  # TitleGenerator looks decode up at each call
            began, titles = time.perf_counter(), []
            for i in range(0, len(abstracts), 8):
                titles += generator(abstracts[i:i + 8], options=options)
            seconds = time.perf_counter() - began
            found[(dtype, name)] = titles
            results.append([dtype, name, len(abstracts) / seconds, seconds, rouge_l(titles, references)])
        decoding.decode = versions["now"]
        same = sum(a == b for a, b in zip(found[(dtype, "before")], found[(dtype, "now")], strict=True))
        results[-1].append(f"{same} of {len(abstracts)}")
        del generator
    print(f"{len(abstracts)} papers of {args.data}, batches of 8, the packaged default's consensus")
    print(table(["dtype", "consensus", "titles/s", "seconds", "ROUGE-L", "same title as before"],
                [r + [""] * (6 - len(r)) for r in results]))


if __name__ == "__main__":
    main()
