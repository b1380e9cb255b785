"""Rescoring real outputs of the earlier study, checked against an independent computation."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lcplugin.benchmarks.rescore import rescore_file

from .conftest import REPO, shared


def _independent(path: Path) -> dict:
    """Written apart from lcplugin: dict keeps the last line per _id; the official two patterns."""
    last = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            last[row["_id"]] = row
    right = nulls = 0
    by: dict[str, list[int]] = {"easy": [], "hard": [], "short": [], "medium": [], "long": []}
    for row in last.values():
        text = row["response"].split("\n\n[REPROMPT]\n")[0].replace("*", "")
        found = re.findall(r"The correct answer is \(([A-D])\)", text) or re.findall(r"The correct answer is ([A-D])", text)
        ok = bool(found) and found[0] == row["answer"]
        nulls += not found
        right += ok
        by["easy" if row["difficulty"] == "easy" else "hard"].append(ok)
        by[row["length"] if row["length"] in ("short", "medium") else "long"].append(ok)
    n = len(last)
    return {"n": n, "accuracy": right / n, "null_rate": nulls / n,
            **{k: round(100 * sum(v) / len(v), 1) if v else 0.0 for k, v in by.items()}}


def test_rescore_cli_on_the_seed_results():
    files = sorted(shared("seed_results", "longbench_v2").glob("*.jsonl"))
    out = subprocess.run([sys.executable, "-m", "lcplugin", "rescore", *map(str, files), "--benchmark",
                          "longbench_v2", "--json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == len(files) == 7
    assert sum(r["n"] == 503 for r in rows) == 6  # zamba2 ran 160 items at 4k
    for row, path in zip(rows, files, strict=True):
        assert set(row) == {"file", "n", "accuracy", "null_rate", "easy", "hard", "short", "medium", "long"}
        expected = _independent(path)
        assert row["n"] == expected["n"]
        assert row["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
        assert row["null_rate"] == pytest.approx(expected["null_rate"], abs=1e-12)
        for key in ("easy", "hard", "short", "medium", "long"):
            assert row[key] == expected[key], (path.name, key)


def _item(i: str, response: str, answer: str = "B") -> dict:
    return {"_id": i, "answer": answer, "difficulty": "easy", "length": "short", "response": response}


def test_last_record_per_id_counts_and_reprompt_is_ignored(tmp_path):
    path = tmp_path / "out.jsonl"
    rows = [_item("a", "The correct answer is (A)"),  # superseded by the restart below
            _item("b", "I cannot tell.\n\n[REPROMPT]\nThe correct answer is (B)"),  # re-prompt ignored -> null
            _item("a", "The correct answer is (B)")]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = rescore_file(path)
    assert result["n"] == 2 and result["accuracy"] == 0.5 and result["null_rate"] == 0.5


def test_rescore_names_file_line_and_field(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text(json.dumps({"_id": "a", "answer": "A", "difficulty": "easy", "length": "short"}) + "\n")
    out = subprocess.run([sys.executable, "-m", "lcplugin", "rescore", str(path)], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert f"{path}:1: item lacks field(s) 'response'" in out.stderr and "Traceback" not in out.stderr
