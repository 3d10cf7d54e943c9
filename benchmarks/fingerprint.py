"""A fingerprint of what the package writes, to compare before and after a change that must not change it:
the packaged default's titles for the packaged samples and 8 recent validation papers under greedy, 4 beams,
seeded sampling and the consensus (fp32), and `prepare`'s output files for a slice of the shared data.

    python benchmarks/fingerprint.py > before.json   # ... change ...
    python benchmarks/fingerprint.py > after.json && cmp before.json after.json
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from common import SHARED_DATA

from chatgentitle.data.records import sample_papers
from chatgentitle.decoding.options import GenerationOptions
from chatgentitle.titling.generator import TitleGenerator

MODES = {  # sampling through transformers' generate draws from torch's global generator: seeded below
    "greedy": GenerationOptions(num_beams=1), "beams": GenerationOptions(),
         "sample": GenerationOptions(do_sample=True), "consensus": GenerationOptions(consensus=32)}


def titles(val: Path, modes=tuple(MODES)) -> dict:
    with open(val) as handle:
        papers = sample_papers() + [json.loads(line) for line in itertools.islice(handle, 8)]
    generator = TitleGenerator.load(dtype="fp32")
    abstracts = [p["abstract"] for p in papers]
    found = {}
    for mode in modes:
        torch.manual_seed(0)
        found[mode] = generator(abstracts, MODES[mode])
    return found


def prepared() -> dict:
    """sha256 of each file `prepare` writes from the shared data's first 20,000 lines."""
    with tempfile.TemporaryDirectory() as tmp:
        slice_file = Path(tmp) / "slice.jsonl"
        with gzip.open(SHARED_DATA, "rt") as source, open(slice_file, "w") as out:
            out.writelines(itertools.islice(source, 20_000))
        out_dir = Path(tmp) / "out"
        subprocess.run([sys.executable, "-m", "chatgentitle", "prepare", str(slice_file), "--out", str(out_dir),
                        "--val-size", "200", "--test-size", "200", "--format", "jsonl,alpaca"], check=True,
                       capture_output=True)
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out_dir.iterdir())
                if p.name != "stats.json"}


if __name__ == "__main__":
    modes = sys.argv[1:] or list(MODES)  # e.g. `sample` alone
    val = Path("data/recent/val.jsonl")
    print(json.dumps({"prepare": prepared() if modes == list(MODES) else None, "titles": titles(val, modes)},
                     indent=1, ensure_ascii=False))
