"""Joining shards: run folders made on different nodes (one model each, say) into one run.

The unit of work past one host is one model's tests (``--lc-models NAME``), run by any scheduler
(a Slurm job array, Ray) with the same options; ``python -m lcplugin merge`` then joins the run
folders. Runs whose settings differ are refused (their figures are not comparable), and so is a
test present in two shards (one of them would silently win).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import LcError
from .store import atomic_write_json, summary_slot


def merge_runs(runs: Sequence[Path], out: Path) -> dict[str, Any]:
    docs = []
    for run in runs:
        try:
            docs.append((run, json.loads((run / "summary.json").read_text(encoding="utf-8"))))
        except (OSError, json.JSONDecodeError) as exc:
            raise LcError(f"merge: {run / 'summary.json'} cannot be read ({exc}); pass run folders") from None
    hashes = {doc["run"].get("settings_hash") for _, doc in docs}
    if len(hashes) != 1:
        detail = ", ".join(f"{run.name}: {doc['run'].get('settings_hash')}" for run, doc in docs)
        raise LcError(f"merge: the runs were made with different settings ({detail}); merge only shards of one run")
    tests: dict[str, dict[str, Any]] = {}
    owner: dict[str, Path] = {}
    for run, doc in docs:
        for t in doc.get("tests", []):
            key = summary_slot(t["benchmark"], t["model"], t["ctx"])
            if key in tests:
                raise LcError(f"merge: test {key} is in both {owner[key]} and {run}; remove it from one shard")
            tests[key], owner[key] = t, run
    out.mkdir(parents=True, exist_ok=True)
    for run, _ in docs:
        for sub in ("records", "logs"):
            if (run / sub).is_dir():
                shutil.copytree(run / sub, out / sub, dirs_exist_ok=True)
    meta = {**docs[0][1]["run"], "run_id": out.name, "merged_from": [str(run) for run, _ in docs],
            "merged": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    summary = {"run": meta, "tests": list(tests.values())}
    atomic_write_json(out / "summary.json", summary)
    return summary
