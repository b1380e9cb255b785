"""The matrix across processes: pytest-xdist workers, and shards merged after the fact.

The runs compared here are shared runs (tests/suite_runs.py): a shard is also another test's run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from .conftest import REPO
from .suite_runs import (
    LLAMA_1K,
    LLAMA_1K_GREEDY,
    MAMBA2_1K,
    MAMBA_1K,
    THREE_1K,
    XDIST_MODELS,
    XDIST_ONE,
    XDIST_TWO,
)

QUALITY = ("n", "correct", "nulls", "accuracy", "null_rate", "accuracy_ci95", "buckets", "truncated")
MODELS = XDIST_MODELS


def _by_test(summary):
    return {(t["benchmark"], t["model"], t["ctx"]): t for t in summary["tests"]}


def _one_load_per_model(summary, models):
    """Each model loaded once, on the worker that ran all its tests."""
    loads = summary["run"]["engine_loads"]
    assert sorted(load["model"] for load in loads) == sorted(models), loads
    assert all(load["load_s"] > 0 for load in loads)
    where = {load["model"]: load["worker"] for load in loads}
    for t in summary["tests"]:
        assert t["worker"] == where[t["model"]], (t["test"], t["worker"], where)
    return where


def test_xdist_groups_tests_by_model_and_loads_each_engine_once(shared_run):
    out = shared_run(XDIST_TWO)
    assert out.returncode == 0, out.tail()
    summary = out.summary()
    assert len(summary["tests"]) == 16
    where = _one_load_per_model(summary, MODELS)
    assert sorted(Counter(where.values()).items()) == [("gw0", 2), ("gw1", 2)]  # four models, two workers: two each
    assert "load_s" in out.stdout and "engine loads: 4" in out.stdout


def test_xdist_two_workers_give_the_summary_of_one(shared_run):
    one, two = shared_run(XDIST_ONE), shared_run(XDIST_TWO)
    assert one.returncode == 0 and two.returncode == 0, two.tail()
    a, b = one.summary(), two.summary()  # one run folder each
    assert set(_by_test(a)) == set(_by_test(b)) and len(b["tests"]) == 16
    _one_load_per_model(a, MODELS)
    _one_load_per_model(b, MODELS)
    for key, t in _by_test(a).items():
        for field in QUALITY:
            assert _by_test(b)[key][field] == t[field], (key, field)
        if key[0] == "pg19":
            assert _by_test(b)[key]["perplexity"] == pytest.approx(t["perplexity"], rel=1e-6)
    assert b["run"]["finished"] and not list(two.results.glob("*/summary.*.json"))
    assert "lcplugin summary" in two.stdout and "tiny-mamba2-2k" in two.stdout
    # each of two workers gets half the cores, not all of them twice over (oversubscribed, -n 2 ran 3.5x slower)
    cores = len(os.sched_getaffinity(0))
    assert {t["cpu_threads"] for t in a["tests"]} == {cores}
    assert {t["cpu_threads"] for t in b["tests"]} == {max(1, cores // 2)}


def test_shards_merge_without_loss_or_duplicates(shared_run, tmp_path):
    shards = [shared_run(LLAMA_1K).run_dir(), shared_run(MAMBA2_1K).run_dir()]
    merged = tmp_path / "merged"
    cli = [sys.executable, "-m", "lcplugin", "merge"]
    out = subprocess.run([*cli, *map(str, shards), "--out", str(merged)], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    summary = json.loads((merged / "summary.json").read_text())
    assert {t["model"] for t in summary["tests"]} == {"tiny-llama", "tiny-mamba2"} and len(summary["tests"]) == 2
    for shard in shards:
        for t in json.loads((shard / "summary.json").read_text())["tests"]:
            assert _by_test(summary)[(t["benchmark"], t["model"], t["ctx"])] == t
        for rec in shard.glob("records/*/*.jsonl"):
            assert (merged / rec.relative_to(shard)).read_text() == rec.read_text()
    again = subprocess.run([*cli, str(shards[0]), str(shards[0]), "--out", str(tmp_path / "dup")], cwd=REPO,
                           capture_output=True, text=True)
    assert again.returncode == 2 and "is in both" in again.stderr
    other = shared_run(LLAMA_1K_GREEDY)
    assert other.returncode == 0
    refused = subprocess.run([*cli, str(shards[1]), str(other.run_dir()), "--out",
                              str(tmp_path / "x")], cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2 and "different settings" in refused.stderr


ENV_PROBE = """
import json, os
from pathlib import Path

def pytest_runtest_teardown(item):  # after an lcplugin test: the worker shares devices at its first one
    worker = getattr(item.config, "workerinput", {}).get("workerid", "controller")
    keys = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")
    Path(os.environ["LC_PROBE_DIR"], worker + ".json").write_text(json.dumps({k: os.environ.get(k) for k in keys}))
"""

TP2_SPEC = """name = "big-vllm"
source = "example/big-model"
family = "transformer"
engine = "vllm"
max_context = "32k"
engine_args = { tensor_parallel_size = 2 }
"""


def test_each_worker_gets_the_gpus_of_the_largest_tensor_parallel_model(run_benches, tmp_path):
    (tmp_path / "lc_env_probe.py").write_text(ENV_PROBE)
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "big-vllm.toml").write_text(TP2_SPEC)
    probes = tmp_path / "probes"
    probes.mkdir()
    out = run_benches("-p", "lc_env_probe", "--lc-specs", str(specs), "--lc-models", "tiny-llama,big-vllm",
                      "--lc-ctx", "1k", "--lc-limit", "1", "-k", "longbench_v2", "-n", "2",
                      env={"PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), "LC_PROBE_DIR": str(probes),
                           "LCPLUGIN_GPU_COUNT": "4"}, threads=None)  # lcplugin gives each worker its share
    assert out.returncode == 0, out.stdout[-3000:]  # tiny-llama passes; big-vllm skips (no weights)
    seen = {p.stem: json.loads(p.read_text()) for p in probes.glob("gw*.json")}
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert seen == {"gw0": {"CUDA_VISIBLE_DEVICES": "0,1", "OMP_NUM_THREADS": threads},
                    "gw1": {"CUDA_VISIBLE_DEVICES": "2,3", "OMP_NUM_THREADS": threads}}


def test_three_shards_merged_equal_one_run(shared_run, tmp_path):
    """Several hosts: one model per shard, merged, gives the one-run summary and records."""
    whole = shared_run(THREE_1K)
    assert whole.returncode == 0, whole.tail()
    shards = [str(shared_run(shard).run_dir()) for shard in (LLAMA_1K, MAMBA_1K, MAMBA2_1K)]
    merged = tmp_path / "merged"
    out = subprocess.run([sys.executable, "-m", "lcplugin", "merge", *shards, "--out", str(merged)], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    one, joined = whole.summary(), json.loads((merged / "summary.json").read_text())
    assert set(_by_test(one)) == set(_by_test(joined)) and len(joined["tests"]) == 3
    for key, t in _by_test(one).items():
        for field in QUALITY:
            assert _by_test(joined)[key][field] == t[field], (key, field)
    timing = ("ttft_s", "decode_s", "batch_key")  # measured, or keyed by process and time

    def records(folder):
        return {p.relative_to(folder): [{k: v for k, v in json.loads(line).items() if k not in timing}
                                        for line in p.read_text().splitlines()]
                for p in folder.glob("records/*/*.jsonl")}
    assert records(whole.run_dir()) == records(merged)
