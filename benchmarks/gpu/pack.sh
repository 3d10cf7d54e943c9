#!/usr/bin/env bash
# Packs what the GPU machine lacks into .gpu/ (ignored), in three loads that each fit the device
# tool's 64 MiB per call beside the repository (with the packaged adapters left out of it, see
# run.sh): .gpu/a (wheels, bitsandbytes with its CUDA 13.0 library only, a third of the SmolLM2
# GGUF), .gpu/b and .gpu/c (the other thirds, the recent papers in two halves, 200 val papers).
# Needs: .venv, data/recent from `prepare` (see configs/smollm2-135m-lora-recent.yaml).
set -euo pipefail
cd "$(dirname "$0")/../.."
PAPERS=${PAPERS:-0}  # 0: every paper of data/recent/train.jsonl
rm -rf .gpu && mkdir -p .gpu/a/wheels .gpu/b .gpu/c /tmp/gpu-pack
grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >> .git/info/exclude
py=".venv/bin/python"
dl() { $py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
       --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
       --platform manylinux2014_x86_64 -d /tmp/gpu-pack "$@" 2>&1 | grep -v WARN || true; }
# the image has torch, accelerate, tokenizers; ours pins newer transformers/peft than it holds
dl orjson msgspec isal platformdirs tenacity gguf==0.19.0 bitsandbytes==0.50.2 transformers==5.24.0 peft==0.21.2 \
   nltk absl-py
$py -m pip wheel -q --no-deps -w /tmp/gpu-pack rouge-score==0.1.2 2>&1 | grep -v WARN || true  # sdist only
cp /tmp/gpu-pack/{orjson,msgspec,isal,platformdirs,tenacity,gguf,transformers,peft,nltk,rouge_score}-*.whl \
   .gpu/a/wheels/
# bitsandbytes: python files and the one library torch cu130 loads (the wheel carries 20 others)
rm -rf /tmp/gpu-pack/bnb && mkdir /tmp/gpu-pack/bnb
(cd /tmp/gpu-pack/bnb && unzip -q ../bitsandbytes-0.50.2-*.whl && find bitsandbytes -name '*.so' ! -name '*cuda130.so' -delete)
tar -C /tmp/gpu-pack/bnb -czf .gpu/a/bitsandbytes.tgz bitsandbytes
# the packaged base, split in three
gguf=$($py -c "from chatgentitle.modeling import _packaged_gguf; print(_packaged_gguf('smollm2-135m'))")
split -n 3 -d -a 1 "$gguf" /tmp/gpu-pack/gguf.
mv /tmp/gpu-pack/gguf.0 .gpu/a/ && mv /tmp/gpu-pack/gguf.1 .gpu/b/ && mv /tmp/gpu-pack/gguf.2 .gpu/c/
sha256sum "$gguf" | cut -d' ' -f1 > .gpu/c/gguf.sha256
# data: recent papers (2025 - March 2026) in prepare's hash order, title + abstract, abstracts cut
# at 1,100 characters (about the 210 tokens that cutoff_len 256 leaves them), in two halves; and
# the first 200 of val
$py - "$PAPERS" <<'PY'
import json, lzma, sys
n = int(sys.argv[1])
def cut(text, limit=1100):
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0]
rows = []
for i, line in enumerate(open("data/recent/train.jsonl")):
    if n and i == n:
        break
    row = json.loads(line)
    rows.append(json.dumps({"id": row["id"], "title": row["title"], "abstract": cut(row["abstract"])}) + "\n")
half = len(rows) // 2
for load, part in (("b", rows[:half]), ("c", rows[half:])):
    with lzma.open(f".gpu/{load}/train.jsonl.xz", "wt", preset=9) as out:
        out.writelines(part)
with lzma.open(".gpu/c/val.jsonl.xz", "wt", preset=9) as out:
    for i, line in enumerate(open("data/recent/val.jsonl")):
        if i == 200:
            break
        row = json.loads(line)
        out.write(json.dumps({"id": row["id"], "title": row["title"], "abstract": row["abstract"]}) + "\n")
print(f"{len(rows)} training papers")
PY
du -sb .gpu/a .gpu/b .gpu/c
