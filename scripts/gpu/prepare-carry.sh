#!/usr/bin/env bash
# Fill .carry/ (git-ignored) with what the device run needs from ../shared: the tokenizers and a
# small LongBench-v2 subset of long items (every prompt is cut at 8k, 32k and 128k); and .whl/ with
# the prebuilt mamba-ssm and causal-conv1d wheels for the H200 image (../shared/wheels, README there).
# Run here, before a device call that carries .carry and .whl.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .carry/tokenizers .whl
for t in llama3.1 gpt-neox-20b mistral-v3 qwen2; do cp -r ../shared/data/tokenizers/$t .carry/tokenizers/; done
cp ../shared/wheels/h200-py312-torch2.11-cu130/*.whl .whl/
python3 - <<'PY'
import json, lzma
rows = []
with lzma.open("../shared/data/longbench_v2/full480.jsonl.xz", "rt") as fh:
    for line in fh:
        item = json.loads(line)
        if 700_000 < len(item["context"]) < 1_200_000:  # well over 128k tokens, not the largest
            rows.append(line)
        if len(rows) == 3:
            break
with lzma.open(".carry/lb2_long.jsonl.xz", "wt") as out:
    out.writelines(rows)
print("items:", len(rows))
PY
# .carry (18 MB) and .whl (61 MB) exceed one call's 64 MiB together; xz packs .carry into 4 MB, so a
# call can carry .whl and .pack at once (unpack there: tar -xJf .pack/carry.tar.xz -C DIR)
mkdir -p .pack && tar -cJf .pack/carry.tar.xz .carry
du -sh .carry .whl .pack
