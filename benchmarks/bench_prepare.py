"""prepare vs a pandas read_json(lines=True) pipeline: records/s and peak RSS.

Run as: python benchmarks/bench_prepare.py [--repeat-to 2200000]

Both do the same work on ../shared/data/arxiv-metadata-300k.jsonl.gz: parse, collapse
whitespace, drop withdrawn / too short / too long papers, drop duplicate ids and contents,
split 98/1/1 by id hash, write JSONL. Each runs in its own process so peak RSS is its own.
With --repeat-to N a file of N lines is made by repeating the input (gzip members
concatenated) to show that prepare's memory does not grow with the input.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "arxiv-metadata-300k.jsonl.gz"

PANDAS_PIPELINE = r"""
import hashlib, re, sys
import pandas as pd
src, out = sys.argv[1], sys.argv[2]
df = pd.read_json(src, lines=True, dtype=False, compression="gzip")
df = df[["id", "title", "abstract", "categories", "update_date"]].dropna(subset=["id", "title", "abstract"])
for col in ("title", "abstract"):
    df[col] = df[col].str.split().str.join(" ")
withdrawn = df["abstract"].str[:300].str.contains(r"this paper has been withdrawn|withdrawn by the author", case=False)
ok = (~withdrawn & df["abstract"].str.len().between(100, 5000) & df["title"].str.len().between(10, 300))
df = df[ok]
df["id"] = df["id"].str.replace(r"v\d+$", "", regex=True)
df = df.drop_duplicates("id")
key = (df["title"] + " || " + df["abstract"]).str.lower()
key = key.str.replace(r"[^\w$\\]+", " ", regex=True).str.split().str.join(" ")
df = df[~key.duplicated()]
def unit(i):
    return int.from_bytes(hashlib.blake2b(f"42\x1fsplit\x1f{i}".encode(), digest_size=8).digest(), "big") / 2**64
u = df["id"].map(unit)
for name, part in (("test", df[u < 0.01]), ("val", df[(u >= 0.01) & (u < 0.02)]), ("train", df[u >= 0.02])):
    part.to_json(f"{out}/{name}.jsonl", orient="records", lines=True, force_ascii=False)
print(len(df))
"""


def run(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (MB) of one child process."""
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)  # the rusage of this child alone
    if status:
        sys.exit(f"failed: {' '.join(cmd)}")
    return time.perf_counter() - began, usage.ru_maxrss // 1024  # ru_maxrss is in KB on Linux


def repeat(src: Path, lines: int, dst: Path) -> int:
    """Concatenate gzip members of src until `lines` lines (the last copy cut short)."""
    with gzip.open(src, "rb") as f:
        per_copy = sum(1 for _ in f)
    written = 0
    with open(dst, "wb") as out:
        while written + per_copy <= lines:
            with open(src, "rb") as f:
                shutil.copyfileobj(f, out)
            written += per_copy
        if written < lines:
            with gzip.open(src, "rb") as f, gzip.open(out, "wb") as tail:
                for i, line in enumerate(f):
                    if i >= lines - written:
                        break
                    tail.write(line)
            written = lines
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", type=Path, default=SHARED)
    parser.add_argument("--repeat-to", type=int, default=2_200_000, help="0 to skip the large run")
    parser.add_argument("--skip-pandas", action="store_true")
    args = parser.parse_args()
    if not args.input.is_file():
        sys.exit(f"skipped: {args.input} not present")
    with gzip.open(args.input, "rb") as f:
        n = sum(1 for _ in f)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cli = [sys.executable, "-m", "chatgentitle", "prepare"]
        seconds, peak = run([*cli, str(args.input), "--out", str(tmp / "ours")])
        rows.append(("chatgentitle prepare", n, seconds, peak))
        if not args.skip_pandas:
            (tmp / "pandas").mkdir()
            seconds, peak = run([sys.executable, "-c", PANDAS_PIPELINE, str(args.input), str(tmp / "pandas")])
            rows.append(("pandas read_json pipeline", n, seconds, peak))
        if args.repeat_to:
            big = tmp / "big.jsonl.gz"
            lines = repeat(args.input, args.repeat_to, big)
            seconds, peak = run([*cli, str(big), "--out", str(tmp / "big")])
            rows.append(("chatgentitle prepare (repeated input)", lines, seconds, peak))
    print("| pipeline | records | seconds | records/s | peak RSS (MB) |\n|---|---:|---:|---:|---:|")
    for name, records, seconds, peak in rows:
        print(f"| {name} | {records:,} | {seconds:.1f} | {records / seconds:,.0f} | {peak} |")
    print(json.dumps({"rows": rows, "maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))


if __name__ == "__main__":
    main()
