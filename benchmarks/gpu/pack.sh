#!/usr/bin/env bash
# Packs what the GPU machine lacks into .gpu/ (ignored), in two loads that each fit the device
# tool's 64 MiB per call with the repository: .gpu/a (first half of the SmolLM2 GGUF, small
# wheels, bitsandbytes with its CUDA 13.0 library only) and .gpu/b (the rest of the GGUF, data,
# Gemma 3 270M's config). Needs: .venv, data/recent from `prepare` (see configs/), ../shared.
set -euo pipefail
cd "$(dirname "$0")/../.."
PAPERS=${PAPERS:-20000}
rm -rf .gpu && mkdir -p .gpu/a/wheels .gpu/b/data .gpu/b/gemma3-270m /tmp/gpu-pack
grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >> .git/info/exclude
py=".venv/bin/python"
dl() { $py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
       --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
       --platform manylinux2014_x86_64 -d /tmp/gpu-pack "$@" 2>&1 | grep -v WARN || true; }
dl orjson msgspec isal platformdirs tenacity gguf bitsandbytes==0.50.2
cp /tmp/gpu-pack/{orjson,msgspec,isal,platformdirs,tenacity,gguf}-*.whl .gpu/a/wheels/
# bitsandbytes: python files and the one library torch cu130 loads (the wheel carries 20 others)
rm -rf /tmp/gpu-pack/bnb && mkdir /tmp/gpu-pack/bnb
(cd /tmp/gpu-pack/bnb && unzip -q ../bitsandbytes-0.50.2-*.whl && find bitsandbytes -name '*.so' ! -name '*cuda130.so' -delete)
tar -C /tmp/gpu-pack/bnb -czf .gpu/a/bitsandbytes.tgz bitsandbytes
# the packaged base, split in two
gguf=$($py -c "from chatgentitle.modeling import _packaged_gguf; print(_packaged_gguf('smollm2-135m'))")
split -n 2 -d -a 1 "$gguf" /tmp/gpu-pack/gguf.
mv /tmp/gpu-pack/gguf.0 .gpu/a/gguf.0 && mv /tmp/gpu-pack/gguf.1 .gpu/b/gguf.1
# data: recent papers (2025 - March 2026) in hash order, title + abstract; abstracts cut at 1,100
# characters (about the 210 tokens that cutoff_len 256 leaves them), and the first 200 of val
$py - "$PAPERS" <<'PY'
import json, lzma, sys
from chatgentitle.records import read_papers
from pathlib import Path
n = int(sys.argv[1])
def cut(text, limit=1100):
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0]
with lzma.open(".gpu/b/data/train.jsonl.xz", "wt", preset=9) as out:
    for i, line in enumerate(open("data/gpu-mix/train.jsonl")):
        if i == n:
            break
        row = json.loads(line)
        out.write(json.dumps({"id": row["id"], "title": row["title"], "abstract": cut(row["abstract"])}) + "\n")
with lzma.open(".gpu/b/data/val.jsonl.xz", "wt", preset=9) as out:
    for i, line in enumerate(open("data/recent/val.jsonl")):
        if i == 200:
            break
        row = json.loads(line)
        out.write(json.dumps({"id": row["id"], "title": row["title"], "abstract": row["abstract"]}) + "\n")
PY
cp "${GEMMA_CONFIG:-/tmp/gemmaconfig/config.json}" .gpu/b/gemma3-270m/config.json
du -sb .gpu/a .gpu/b
