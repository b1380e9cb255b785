#!/usr/bin/env bash
# vLLM on the GPU (issue 15): random-weight checkpoints in the seven real shapes, transformers'
# layout, through the suite's vllm engine: LongBench-v2 generation and PG-19 scoring at 8k, 32k and
# 128k (speed and memory only), then the cross-engine check against hf on the same checkpoint.
# On the device, after scripts/gpu/vllm-install.sh has installed vLLM on the same warm machine,
# carrying .carry (scripts/gpu/prepare-carry.sh fills it):
#   bash scripts/gpu/vllm-run.sh llama-3.1-8b-vllm:llama-3.1-8b:llama3.1 [SPEC:SHAPE:TOKENIZER ...]
# Each model: checkpoint written, suite run, agreement check, checkpoint deleted (disk). Figures and
# logs under $OUT. AGREE_CTX (default 8k,32k; "" skips), SUITE (0 skips), CTX, LIMIT, PG19_WINDOWS choose the work.
# AGREE_ROPE: rope parameters (JSON) for both engines in the agreement check, e.g. Qwen's YaRN, which the suite
# applies only past 32k: '{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}'.
# KEEP_CKPT=1 keeps the checkpoint for the next run (and reuses one already there): the same weights side by side.
# vLLM is loaded once per model at max_model_len MAX_LEN (131072) (compiled and captured once, not per context).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-results/gpu-vllm}
CKPT=${LC_CKPT:-/tmp/lc-ckpt} RUNS=${LC_RUNS:-/tmp/lc-runs-vllm} TOK=${LC_TOKENIZERS:-.carry/tokenizers}
DATA=${LC_DATA:-.carry/lb2_long.jsonl.xz} BOOKS=${LC_BOOKS:-/tmp/lc-books}
CTX=${CTX:-8k,32k,128k} LIMIT=${LIMIT:-1} AGREE_CTX=${AGREE_CTX-8k,32k}
if [ "$CKPT" != /tmp/lc-ckpt ] && [ "${SUITE:-1}" = 1 ]; then  # the specs' sources name that folder
  echo "vllm-run.sh: LC_CKPT=$CKPT, but the specs load from /tmp/lc-ckpt: unset LC_CKPT (or SUITE=0)" >&2; exit 2
fi
mkdir -p "$OUT" "$CKPT" "$BOOKS"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# PG-19 needs books of at least the context: the long LongBench-v2 documents stand in (cost only)
python3 - "$DATA" "$BOOKS" <<'PY'
import json, lzma, pathlib, sys
out = pathlib.Path(sys.argv[2])
with lzma.open(sys.argv[1], "rt") as fh:
    for i, line in enumerate(fh):
        (out / f"doc-{i}.txt").write_text(json.loads(line)["context"], encoding="utf-8")
print("books:", len(list(out.glob("*.txt"))))
PY

one() {  # one SPEC SHAPE TOKENIZER
  local spec=$1 shape=$2 tok=$3 t0=$SECONDS
  [ "${KEEP_CKPT:-0}" = 1 ] && [ -f "$CKPT/$shape/config.json" ] || python3 -c "
from pathlib import Path; from lcplugin.models.random_models import make
make('$shape', Path('$CKPT/$shape'), Path('$TOK/$tok'), device='${MAKE_DEVICE:-cuda}')" 2>&1 | grep -v Warning | tail -3
  echo "== $spec: checkpoint $((SECONDS - t0)) s"
  if [ "${SUITE:-1}" = 1 ]; then  # SUITE=0: the agreement check alone
    python3 -m pytest benches/test_longbench_v2.py benches/test_pg19.py -p no:cacheprovider -rs \
      --lc-specs "${SPECS:-benches/reference/specs-vllm}" --lc-models "$spec" --lc-ctx "$CTX" --lc-limit "$LIMIT" \
      --lc-data "longbench_v2=$DATA" --lc-data "pg19=$BOOKS" --lc-pg19-windows "${PG19_WINDOWS:-2}" \
      --lc-engine-arg "max_model_len=${MAX_LEN:-131072}" --lc-sampling greedy --lc-results "$RUNS" \
      --lc-baselines "$RUNS/baselines" ${LC_ARGS:-} > "$OUT/suite-$spec.log" 2>&1
    grep -v -i warning "$OUT/suite-$spec.log" | grep -A 12 "lcplugin summary" | cut -c1-200
    grep -E "passed|failed|error" "$OUT/suite-$spec.log" | tail -2
    echo "== $spec: suite done at $((SECONDS - t0)) s"
    if grep -q -E "[0-9]+ (failed|errors?)" "$OUT/suite-$spec.log"; then  # the root cause is in the worker's log
      for w in "$RUNS"/*/logs/worker-"$spec"-*.log; do  # whole: vLLM names its backends at the start, in WARNINGs too
        [ -f "$w" ] && gzip -c "$w" > "$OUT/worker-$(basename "$w").gz"
      done
    fi
  fi
  if [ -n "$AGREE_CTX" ]; then
    timeout 420 python3 scripts/gpu/check_vllm_agreement.py "$CKPT/$shape" "$OUT/agree-$spec.json" \
      --ctx "$AGREE_CTX" --text "$BOOKS/doc-0.txt" ${AGREE_ROPE:+--rope "$AGREE_ROPE"} > "$OUT/agree-$spec.log" 2>&1
    grep '^{' "$OUT/agree-$spec.log" | cut -c1-400
    echo "== $spec: agreement done at $((SECONDS - t0)) s"
  fi
  [ "${KEEP_CKPT:-0}" = 1 ] || rm -rf "${CKPT:?}/$shape"
  python3 - "$OUT/vllm-summaries.json" "$RUNS" <<'PY'
import json, pathlib, sys
tests = []
for f in sorted(pathlib.Path(sys.argv[2]).glob("*/summary.json")):
    data = json.loads(f.read_text())
    tests += [{"run": f.parent.name, "device": data["run"].get("device"), **t} for t in data.get("tests", [])]
pathlib.Path(sys.argv[1]).write_text(json.dumps(tests, indent=1, default=str))
PY
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
for triple in "$@"; do
  IFS=: read -r spec shape tok <<< "$triple"
  one "$spec" "$shape" "$tok"
done
