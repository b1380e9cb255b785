#!/usr/bin/env bash
# Two lists of models through scripts/gpu/vllm-run.sh at once, one per GPU (each figure is one GPU's),
# within a deadline, then everything under $OUT packed into one archive (a device call brings back
# at most 8 files):
#   DEADLINE=540 bash scripts/gpu/vllm-par.sh "SPEC:SHAPE:TOK ..." "SPEC:SHAPE:TOK ..." [tag]
# With one GPU the second list runs after the first on the same GPU.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-results/gpu-vllm}; tag=${3:-run}
mkdir -p "$OUT"
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
list0=($1) list1=($2)
if [ "$gpus" -ge 2 ]; then
  CUDA_VISIBLE_DEVICES=0 OUT="$OUT/$tag-gpu0" LC_RUNS="/tmp/lc-runs-$tag-0" LC_BOOKS=/tmp/lc-books-0 \
    timeout "${DEADLINE:-540}" bash scripts/gpu/vllm-run.sh "${list0[@]}" > "$OUT/$tag-gpu0.out" 2>&1 &
  CUDA_VISIBLE_DEVICES=1 OUT="$OUT/$tag-gpu1" LC_RUNS="/tmp/lc-runs-$tag-1" LC_BOOKS=/tmp/lc-books-1 \
    timeout "${DEADLINE:-540}" bash scripts/gpu/vllm-run.sh "${list1[@]}" > "$OUT/$tag-gpu1.out" 2>&1 &
  wait
else
  OUT="$OUT/$tag-gpu0" LC_RUNS="/tmp/lc-runs-$tag-0" timeout "${DEADLINE:-540}" \
    bash scripts/gpu/vllm-run.sh "${list0[@]}" "${list1[@]}" > "$OUT/$tag-gpu0.out" 2>&1
fi
cat "$OUT"/"$tag"-gpu*.out | grep -v -i -e warning -e "it/s]" | cut -c1-220 | tail -60
tar czf "$OUT/$tag.tgz" -C "$OUT" $(cd "$OUT" && ls -d "$tag"-gpu*) && ls -la "$OUT/$tag.tgz"
rm -rf "${OUT:?}/$tag"-gpu*
