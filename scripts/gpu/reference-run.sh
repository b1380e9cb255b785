#!/usr/bin/env bash
# The GPU reference run (device machine or a GPU CI runner): random-weight models of real shapes,
# LongBench-v2 prompts at 8k, 32k and 128k through the suite, then the same prompts through the raw
# libraries, so the suite's overhead is a measured ratio. Phases, so each fits a 10-minute call:
#   bash scripts/gpu/reference-run.sh hf      # builds mamba-ssm in the background; Llama-3.1-8B shape
#   bash scripts/gpu/reference-run.sh mamba   # waits for the build; Mamba-2.8B, Codestral, Nemotron-H
# Needs .carry/ (tokenizers, data subset: see scripts/gpu/prepare-carry.sh) and .sdist/, .whl/.
set -uo pipefail
cd "$(dirname "$0")/../.."
phase=${1:?phase: hf or mamba}
OUT=${OUT:-results/gpu-reference}
mkdir -p "$OUT" /tmp/lc-ckpt
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
[ -d /tmp/site/einops ] || python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
DATA=.carry/lb2_long.jsonl.xz
CTX=${CTX:-8k,32k,128k}
LIMIT=${LIMIT:-2}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

make() {  # make SHAPE TOKENIZER
  [ -f "/tmp/lc-ckpt/$1/config.json" ] || python3 -c "
from pathlib import Path; from lcplugin.random_models import make
make('$1', Path('/tmp/lc-ckpt/$1'), Path('.carry/tokenizers/$2'))" 2>&1 | tail -3
}

suite() {  # suite MODEL...
  local models; models=$(IFS=,; echo "$*")
  python3 -m pytest benches/test_longbench_v2.py -p no:cacheprovider -rs --lc-specs benches/reference/specs \
    --lc-models "$models" --lc-ctx "$CTX" --lc-limit "$LIMIT" --lc-data "longbench_v2=$DATA" \
    --lc-sampling greedy --lc-results "$OUT/runs" --lc-baselines /tmp/lc-baselines \
    --benchmark-json "$OUT/benchmark-$phase.json" 2>&1 | tee "$OUT/pytest-$phase.log" | tail -40
}

raw() {  # raw MODEL: the same prompts without the suite; ratios joined from the newest suite run
  local latest join=()
  latest=$(ls -td "$OUT"/runs/*/ 2>/dev/null | head -1)
  [ -f "${latest}summary.json" ] && join=(--suite "${latest}summary.json")
  timeout 420 python3 benches/reference/raw_timing.py --data "$DATA" --ctx "$CTX" --limit "$LIMIT" \
    --models "$1" "${join[@]}" --out "$OUT/raw-$1.json" 2>&1 | grep -v Warning | tail -8
}

case "$phase" in
  hf)
    if ! python3 -c "import mamba_ssm" 2>/dev/null; then
      setsid nohup bash scripts/gpu/build-mamba.sh > /tmp/lc-build.log 2>&1 < /dev/null &
    fi
    make llama-3.1-8b llama3.1
    suite llama-3.1-8b-random
    raw llama-3.1-8b-random
    ;;
  mamba)
    if ! python3 -c "import mamba_ssm, selective_scan_cuda" 2>/dev/null; then
      if pgrep -f build-mamba.sh >/dev/null; then  # a build started by phase hf: wait for it
        while pgrep -f build-mamba.sh >/dev/null; do sleep 5; done
      else
        timeout 1200 bash scripts/gpu/build-mamba.sh > /tmp/lc-build.log 2>&1
      fi
    fi
    tail -3 /tmp/lc-build.log
    python3 -c "import mamba_ssm, selective_scan_cuda" || { echo "mamba-ssm did not build"; exit 1; }
    make mamba-2.8b gpt-neox-20b
    make mamba-codestral-7b mistral-v3
    suite mamba-2.8b-random mamba-codestral-7b-random
    raw mamba-2.8b-random
    if [ "${HYBRID:-0}" = 1 ]; then make nemotron-h-8b mistral-v3; suite nemotron-h-8b-random; fi
    ;;
esac
cp /tmp/lc-build.log "$OUT/build.log" 2>/dev/null || true
ls -la "$OUT"
