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


@pytest.mark.parametrize(("script", "env"), [("reference-run.sh", {}), ("vllm-run.sh", {}), ("vllm-run.sh", {"SUITE": "1"})])
def test_a_checkpoint_folder_the_specs_do_not_read_is_refused(tmp_path: Path, script: str, env: dict) -> None:
    # on the H200 (2026-11-30) LC_CKPT put the checkpoints where the reference specs do not look
    # (/tmp/lc-ckpt): every test of four models skipped "local model folder does not exist"
    run_env = {**os.environ, **env, "LC_CKPT": str(tmp_path / "ckpt"), "OUT": str(tmp_path / "out")}
    out = subprocess.run(["bash", f"scripts/gpu/{script}", "suite-a"], cwd=REPO, env=run_env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().endswith("unset LC_CKPT" if script == "reference-run.sh" else "unset LC_CKPT (or SUITE=0)")
    assert "/tmp/lc-ckpt" in out.stderr and not (tmp_path / "out").exists()
