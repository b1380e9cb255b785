"""The suite-versus-raw timing script (benches/reference/raw_timing.py) runs on CPU too.

The GPU reference run measures the suite's overhead as raw / suite ratios over the same prompts; a
broken script would only show on the device, whose time is scarce. Here it runs on a tiny model
against a real suite run of the same LongBench-v2 items, and its ratios must join that run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO, only_run_summary, shared

SPEC = """name = "tiny-llama-fixed"
source = "builtin:tiny-llama"
family = "transformer"
engine = "hf"
max_context = "4k"
dtype = "float32"
engine_args = { ignore_eos = true }
"""


@pytest.mark.slow
def test_raw_timing_joins_the_suite_run_of_the_same_prompts(run_benches, tmp_path):
    data = shared("longbench_v2", "sample18.jsonl")
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "tiny-llama-fixed.toml").write_text(SPEC)
    out = run_benches("--lc-specs", str(specs), "--lc-models", "tiny-llama-fixed", "--lc-ctx", "1k,2k",
                      "--lc-limit", "2", "--lc-data", f"longbench_v2={data}", "--lc-sampling", "greedy",
                      "-k", "longbench_v2")
    assert out.returncode == 0, out.stdout[-3000:]
    summary_path = next(p for p in run_benches.results.iterdir() if p.is_dir()) / "summary.json"
    suite = {t["ctx"]: t for t in only_run_summary(run_benches.results)["tests"]}
    raw_path = tmp_path / "raw.json"
    done = subprocess.run(
        [sys.executable, "benches/reference/raw_timing.py", "--specs", str(specs), "--data", str(data),
         "--ctx", "1k,2k", "--limit", "2", "--suite", str(summary_path), "--out", str(raw_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(raw_path.read_text())
    assert [r["ctx"] for r in rows] == [1024, 2048]
    for row in rows:
        assert row["items"] == suite[row["ctx"]]["n"] == 2 and "suite_mismatch" not in row
        assert row["prefill_tok_s"] > 0 and row["decode_tok_s"] > 0
        for figure in ("prefill", "decode"):
            ratio = row[f"suite_over_raw_{figure}"]
            assert ratio == pytest.approx(suite[row["ctx"]][f"{figure}_tok_s"] / row[f"{figure}_tok_s"])
