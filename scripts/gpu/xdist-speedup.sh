#!/usr/bin/env bash
# Issue 11.5: whole-command wall time of `pytest benches -n 1` against `-n 2` (and `-n 4`) on a balanced
# matrix: four models of equal cost (copies of one spec under four names, one checkpoint), LongBench-v2
# at 8k and 32k, LIMIT items each. In an order that favours no count (issue 19): first a warm-up run,
# not counted, that writes the checkpoint and fills the token cache, then ORDER (default: the counts up
# and back down, "1 2 2 1" or "1 2 4 4 2 1"). Prints and writes $OUT/xdist-speedup.json: per -n, every
# run's wall time and their median (the speed-up is the medians' ratio), the sum of engine loads and of
# test times, and run.engine_loads (each model must load once in every run).
#   GPUs:  bash scripts/gpu/xdist-speedup.sh            # NS defaults to "1 2", "1 2 4" with 4+ GPUs
#   CPU check (tests/test_xdist.py runs it): TEMPLATE=lcplugin/specs/tiny-llama.toml CTX=1k LIMIT=1 NS="1 2" \
#          ORDER="2 1" DATA= bash scripts/gpu/xdist-speedup.sh
# Needs, on a GPU machine, .carry/ (scripts/gpu/prepare-carry.sh) for the tokenizer and the data subset.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-results/xdist-speedup}
TEMPLATE=${TEMPLATE:-benches/reference/specs/llama-3.1-8b-random.toml}
CTX=${CTX:-8k,32k}
LIMIT=${LIMIT:-3}
DATA=${DATA-.carry/lb2_long.jsonl.xz}
PY=${PY:-python3}
SPECS=${SPECS:-/tmp/lc-xdist-specs}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
gpus=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU ' || true)
if [ -z "${NS:-}" ]; then NS="1 2"; [ "$gpus" -ge 4 ] && NS="1 2 4"; fi
ORDER=${ORDER:-"$NS $(echo "$NS" | tr ' ' '\n' | tac | tr '\n' ' ')"}
WARMUP=${WARMUP:-1}
mkdir -p "$OUT" "$SPECS"
if [ "$TEMPLATE" = benches/reference/specs/llama-3.1-8b-random.toml ] && [ ! -f /tmp/lc-ckpt/llama-3.1-8b/config.json ]; then
  $PY -c "from pathlib import Path; from lcplugin.models.random_models import make
make('llama-3.1-8b', Path('/tmp/lc-ckpt/llama-3.1-8b'), Path('.carry/tokenizers/llama3.1'))" 2>&1 | tail -3
fi
models=()
for m in ${NAMES:-a b c d}; do  # four names, one checkpoint: equal work, four engine loads (NAMES: fewer, for a check)
  sed -E "s/^name = .*/name = \"xdist-$m\"/" "$TEMPLATE" > "$SPECS/xdist-$m.toml"
  models+=("xdist-$m")
done
rm -f "$OUT/walls.txt.tmp"
data=(); [ -n "$DATA" ] && data=(--lc-data "longbench_v2=$DATA")
run() {  # run N FOLDER: one whole command, timed from outside
  rm -rf "$2"
  $PY -m pytest benches/test_longbench_v2.py -p no:cacheprovider -q --lc-specs "$SPECS" \
    --lc-models "$(IFS=,; echo "${models[*]}")" --lc-ctx "$CTX" --lc-limit "$LIMIT" "${data[@]}" \
    --lc-sampling greedy --lc-results "$2" --lc-baselines /tmp/lc-xdist-baselines -n "$1" \
    > "$2.log" 2>&1 || { tail -30 "$2.log"; exit 1; }
}
if [ "$WARMUP" = 1 ]; then  # not counted: the first run pays the token cache and the page cache
  set -- $NS; run "$1" "$OUT/runs-warmup"; echo "warm-up (-n $1, not counted) done"
fi
i=0
for n in $ORDER; do
  i=$((i + 1))
  start=$(date +%s.%N)
  run "$n" "$OUT/runs-$i-n$n"
  echo "$n $i $start $(date +%s.%N)" >> "$OUT/walls.txt.tmp"
  echo "run $i: -n $n $(tail -1 "$OUT/runs-$i-n$n.log")"
done
mv "$OUT/walls.txt.tmp" "$OUT/walls.txt"
$PY - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
import statistics

rows = {}
for line in (out / "walls.txt").read_text().split("\n"):
    if not line.strip():
        continue
    n, i, start, end = line.split()
    summary = json.loads(next((out / f"runs-{i}-n{n}").glob("*/summary.json")).read_text())
    loads = summary["run"].get("engine_loads", [])
    row = rows.setdefault(n, {"walls": [], "runs": []})
    row["walls"].append(float(end) - float(start))
    row["runs"].append({"run": int(i), "wall_s": float(end) - float(start), "tests": len(summary["tests"]),
                        "load_s": sum(x["load_s"] for x in loads),
                        "test_s": sum(t["wall_s"] for t in summary["tests"]), "engine_loads": loads,
                        "workers": sorted({t["worker"] for t in summary["tests"]})})
for row in rows.values():
    row["wall_s"] = statistics.median(row["walls"])
base = rows.get("1", {}).get("wall_s")
for row in rows.values():
    row["speedup"] = base / row["wall_s"] if base else None
(out / "xdist-speedup.json").write_text(json.dumps(rows, indent=2))
print(json.dumps({n: {"median_wall_s": r["wall_s"], "walls": r["walls"], "speedup": r["speedup"]} for n, r in rows.items()}))
PYEOF
