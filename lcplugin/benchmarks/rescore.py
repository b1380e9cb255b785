"""Re-scoring existing LongBench-v2 outputs with the official extractor.

Reads the official output format (``pred.py``: the item's fields plus ``response``) and the earlier
study's (the same plus its own ``pred``/``judge``, restarts appended to the file, and a document-free
re-prompt kept after ``\\n\\n[REPROMPT]\\n``). The last record per ``_id`` counts; only the text
before the re-prompt marker is the model's answer; the stored ``pred``/``judge`` are ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import require_fields
from .datafiles import read_records
from .longbench_v2 import extract_answer, official_buckets

REPROMPT = "\n\n[REPROMPT]\n"
REQUIRED = ("_id", "answer", "difficulty", "length", "response")


def last_per_id(path: Path) -> list[dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for where, raw in read_records(path, "rescore"):
        require_fields(raw, REQUIRED, where)
        latest.pop(str(raw["_id"]), None)  # re-insert so the order follows the last occurrence
        latest[str(raw["_id"])] = raw
    return list(latest.values())


def rescore_file(path: Path) -> dict[str, Any]:
    rows = []
    for raw in last_per_id(path):
        response = str(raw["response"] or "").split(REPROMPT, 1)[0]
        pred = extract_answer(response)
        rows.append({"correct": pred == raw["answer"], "null": pred is None,
                     "difficulty": raw["difficulty"], "length": raw["length"]})
    n = len(rows)
    table = official_buckets(rows)
    return {
        "file": str(path), "n": n,
        "accuracy": sum(r["correct"] for r in rows) / n if n else None,
        "null_rate": sum(r["null"] for r in rows) / n if n else None,
        **{k: table[k] for k in ("easy", "hard", "short", "medium", "long")},
    }


def format_table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'file':<48} {'n':>4} {'overall':>7} {'easy':>5} {'hard':>5} {'short':>5} {'medium':>6} {'long':>5} {'null%':>6}"]
    for r in results:
        overall = round(100 * r["accuracy"], 1) if r["accuracy"] is not None else float("nan")
        null = round(100 * r["null_rate"], 1) if r["null_rate"] is not None else float("nan")
        lines.append(f"{Path(r['file']).name[:48]:<48} {r['n']:>4} {overall:>7.1f} {r['easy']:>5.1f} {r['hard']:>5.1f} "
                     f"{r['short']:>5.1f} {r['medium']:>6.1f} {r['long']:>5.1f} {null:>6.1f}")
    return "\n".join(lines)
