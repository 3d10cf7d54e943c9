#!/usr/bin/env bash
# Packs what the GPU machine lacks into .gpu/ (ignored), in three loads that each fit the device tool's
# 64 MiB per call beside the repository (the packaged adapters' weights and reports/ left out of it, see
# run.sh): .gpu/a (wheels, a third of the SmolLM2 GGUF), .gpu/b (the second third, the packaged
# adapter's weights), .gpu/c (the last third, the papers of scripts/field_splits.py).
# Needs: .venv, data/recent and data/fields (scripts/field_splits.py says how).
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .gpu && mkdir -p .gpu/a/wheels .gpu/b .gpu/c /tmp/gpu-pack
mkdir -p .git/info && touch .git/info/exclude
grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >> .git/info/exclude
py=".venv/bin/python"
dl() { $py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
       --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
       --platform manylinux2014_x86_64 -d /tmp/gpu-pack "$@" 2>&1 | grep -v WARN || true; }
# the image has torch, accelerate, tokenizers; ours pins newer transformers/peft than it holds
dl orjson msgspec isal platformdirs tenacity gguf==0.19.0 transformers==5.25.0 peft==0.21.2 nltk
$py -m pip wheel -q --no-deps -w /tmp/gpu-pack rouge-score==0.1.2 2>&1 | grep -v WARN || true  # sdist only
cp /tmp/gpu-pack/{orjson,msgspec,isal,platformdirs,tenacity,gguf,transformers,peft,nltk,rouge_score}-*.whl \
   .gpu/a/wheels/
# the packaged base, split in three
gguf=$($py -c "from chatgentitle.model.loading import _packaged_gguf; print(_packaged_gguf('smollm2-135m'))")
split -n 3 -d -a 1 "$gguf" /tmp/gpu-pack/gguf.
mv /tmp/gpu-pack/gguf.0 .gpu/a/ && mv /tmp/gpu-pack/gguf.1 .gpu/b/ && mv /tmp/gpu-pack/gguf.2 .gpu/c/
sha256sum "$gguf" | cut -d' ' -f1 > .gpu/c/gguf.sha256
cp src/chatgentitle/default_adapter/adapter_model.safetensors .gpu/b/
# papers: validation sets whole; the training mix's abstracts cut at 1,100 characters (about the 210
# tokens that cutoff_len 256 leaves them)
$py - <<'PY'
import json, lzma
def cut(text, limit=1100):
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0]
for name, source, shorten in (("val", "data/recent/val.jsonl", False), ("fields", "data/fields/val.jsonl", False),
                              ("pool", "data/fields/pool.jsonl", False), ("mix", "data/fields/mix.jsonl", True)):
    with open(source) as rows, lzma.open(f".gpu/c/{name}.jsonl.xz", "wt", preset=9) as out:
        for line in rows:
            row = json.loads(line)
            abstract = cut(row["abstract"]) if shorten else row["abstract"]
            out.write(json.dumps({"id": row["id"], "title": row["title"], "abstract": abstract,
                                  "categories": row["categories"]}) + "\n")
PY
du -sb .gpu/a .gpu/b .gpu/c
