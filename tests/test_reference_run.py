"""The GPU reference run's script works before device time is spent on it: its suite phase, run on CPU
with a small shape in place of the real ones, writes a checkpoint, runs it through the suite, deletes
it and collects every test summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, shared


@pytest.mark.slow
def test_suite_phase_runs_a_shape_through_the_suite_and_collects_its_summary(tmp_path: Path) -> None:
    tokenizer = shared("tokenizers", "mistral-v3")
    data = shared("longbench_v2", "sample18.jsonl")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "OMP_NUM_THREADS")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # its python3 is ours
    env.update(OUT=str(tmp_path / "out"), MODELS="smollm2-135m:mistral-v3", SPECS="benches/reference/specs-cpu",
               CTX="1k", LIMIT="1", MAKE_DEVICE="cpu", LC_TOKENIZERS=str(tokenizer.parent), LC_DATA=str(data),
               LC_RUNS=str(tmp_path / "runs"), BENCHES="benches/test_longbench_v2.py benches/test_ruler.py",
               LC_K="longbench_v2 or niah_single_1")
    out = subprocess.run(["bash", "scripts/gpu/reference-run.sh", "suite-a"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    tests = json.loads((tmp_path / "out" / "summaries-suite-a.json").read_text())
    assert sorted((t["benchmark"], t["model"], t["ctx"]) for t in tests) == [
        ("longbench_v2", "smollm2-135m-random", 1024), ("ruler_niah_single_1", "smollm2-135m-random", 1024)]
    assert all(t["prefill_tok_s"] > 0 and t["decode_tok_s"] > 0 for t in tests)
    assert not Path("/tmp/lc-ckpt/smollm2-135m").exists()  # deleted once used (the spec's source)
