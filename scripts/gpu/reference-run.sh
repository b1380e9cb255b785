#!/usr/bin/env bash
# The GPU reference run (device machine or a GPU CI runner): random-weight models in the seven real
# shapes, real LongBench-v2 prompts at 8k, 32k and 128k through the suite (speed and memory only).
# Phases, each fitting a 10-minute device call on one H200:
#   bash scripts/gpu/reference-run.sh setup    # carry .whl: installs mamba-ssm + causal-conv1d wheels,
#                                              # then the prefill checks (no tokenizer or data needed)
#   bash scripts/gpu/reference-run.sh suite-a  # carry .carry: Llama-3.1-8B, Qwen2.5-7B, Mamba-2.8B, Codestral
#   bash scripts/gpu/reference-run.sh suite-b  # carry .carry: Jamba-Reasoning-3B, Nemotron-H-8B, Zamba2-7B
#   bash scripts/gpu/reference-run.sh suites   # both at once, suite-a on GPU 0 and suite-b on GPU 1
#                                              # (a two-GPU machine; each figure is still one GPU's)
# Past 128k (issues 16, 17): LongBench-v2 has few items that long (the .carry subset: none past ~300k
# tokens), so RULER's needle task, which needs no data, prices every length; each model within a deadline:
#   CTX=256k,512k,1m BENCHES="benches/test_longbench_v2.py benches/test_ruler.py" \
#     LC_K="longbench_v2 or niah_single_1" MODEL_TIMEOUT=280 bash scripts/gpu/reference-run.sh suite-a
# Fill .carry and .whl first with scripts/gpu/prepare-carry.sh (they do not fit one call together).
# Each checkpoint is written, used and deleted in turn (seven of them would not fit the disk).
set -uo pipefail
cd "$(dirname "$0")/../.."
phase=${1:?phase: setup, suite-a or suite-b}
OUT=${OUT:-results/gpu-reference}
CKPT=${LC_CKPT:-/tmp/lc-ckpt} RUNS=${LC_RUNS:-/tmp/lc-runs-$phase} TOK=${LC_TOKENIZERS:-.carry/tokenizers}
if [ "$CKPT" != /tmp/lc-ckpt ] && [ "$phase" != setup ]; then  # the specs' sources name that folder
  echo "reference-run.sh: LC_CKPT=$CKPT, but the reference specs load from /tmp/lc-ckpt: unset LC_CKPT" >&2; exit 2
fi
mkdir -p "$OUT" "$CKPT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
DATA=${LC_DATA:-.carry/lb2_long.jsonl.xz}
CTX=${CTX:-8k,32k,128k}
LIMIT=${LIMIT:-1}
BENCHES=${BENCHES:-benches/test_longbench_v2.py}  # past 128k, add benches/test_ruler.py with LC_K (below)

make_ckpt() {  # make_ckpt SHAPE TOKENIZER
  python3 -c "
from pathlib import Path; from lcplugin.models.random_models import make
make('$1', Path('$CKPT/$1'), Path('$TOK/$2'), device='${MAKE_DEVICE:-cuda}')" 2>&1 | grep -v Warning | tail -3
}

suite() {  # suite SHAPE TOKENIZER: one model through the suite, then its checkpoint is deleted
  local t0=$SECONDS
  make_ckpt "$1" "$2"
  echo "checkpoint $1: $((SECONDS - t0)) s"
  local select=(); [ -n "${LC_K:-}" ] && select=(-k "$LC_K")
  # the deadline interrupts as Ctrl-C does (SIGINT): the tests done so far keep their summary
  # shellcheck disable=SC2086  # BENCHES and LC_ARGS are lists of words
  timeout -s INT -k 30 "${MODEL_TIMEOUT:-3600}" python3 -m pytest $BENCHES "${select[@]}" -p no:cacheprovider -rs \
    --lc-specs "${SPECS:-benches/reference/specs}" \
    --lc-models "$1-random" --lc-ctx "$CTX" --lc-limit "$LIMIT" --lc-data "longbench_v2=$DATA" \
    --lc-sampling greedy --lc-results "$RUNS" --lc-baselines "$RUNS/baselines" ${LC_ARGS:-} 2>&1 \
    | grep -v -i warning | tail -"${TAIL:-12}"
  rm -rf "${CKPT:?}/$1"
}

collect() {  # one JSON of every test summary of this phase
  python3 - "$OUT/summaries-$phase.json" "$RUNS" <<'PY'
import json, pathlib, sys
tests = []
for f in sorted(pathlib.Path(sys.argv[2]).glob("*/summary.json")):
    data = json.loads(f.read_text())
    tests += [{"run": f.parent.name, "device": data["run"].get("device"), **t} for t in data.get("tests", [])]
pathlib.Path(sys.argv[1]).write_text(json.dumps(tests, indent=1, default=str))
print(len(tests), "test summaries")
PY
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
run_models() {  # run_models SHAPE:TOKENIZER...  (MODELS overrides the phase's list, e.g. for a CPU check)
  for pair in ${MODELS:-$*}; do suite "${pair%%:*}" "${pair##*:}"; collect; done  # collected as it goes
}
case "$phase" in
  setup)
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
    python3 -m pip install -q --no-deps --no-index .whl/*.whl 2>&1 | tail -2
    python3 -c "import mamba_ssm, causal_conv1d, selective_scan_cuda; print('mamba-ssm', mamba_ssm.__version__)"
    # the checks share the GPUs of the machine: one per GPU at a time
    gpus=$(nvidia-smi -L 2>/dev/null | wc -l); gpus=$((gpus > 0 ? gpus : 1)); i=0
    for check in ${CHECKS:-scripts/gpu/check_*.py}; do
      CUDA_VISIBLE_DEVICES=$((i % gpus)) timeout 300 python3 "$check" "$OUT/$(basename "$check" .py).json" \
        > "$OUT/$(basename "$check" .py).log" 2>&1 &
      i=$((i + 1)); [ $((i % gpus)) -eq 0 ] && wait
    done
    wait
    for log in "$OUT"/check_*.log; do echo "== $log"; grep -v -i warning "$log" | tail -20; done
    ;;
  suite-a) run_models llama-3.1-8b:llama3.1 qwen2.5-7b:qwen2 mamba-2.8b-hf:gpt-neox-20b mamba-codestral-7b:mistral-v3 ;;
  suite-b) run_models jamba-reasoning-3b:mistral-v3 nemotron-h-8b:mistral-v3 zamba2-7b:mistral-v3 ;;
  suites)
    CUDA_VISIBLE_DEVICES=0 bash "$0" suite-a > "$OUT/suite-a.log" 2>&1 &
    CUDA_VISIBLE_DEVICES=1 bash "$0" suite-b > "$OUT/suite-b.log" 2>&1 &
    wait
    tail -n 30 "$OUT"/suite-*.log
    ;;
esac
