"""pytest-xdist as users run it: an unrelated project left alone, the plan, GPUs counted, the benchmark JSON."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from .suite_runs import XDIST_MODELS, XDIST_TWO

pytest_plugins = ["pytester"]

PLAIN = """
import json, os

def test_env(tmp_path):
    seen = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")}
    assert seen == {"CUDA_VISIBLE_DEVICES": None, "OMP_NUM_THREADS": None}, seen

def test_other():
    assert True
"""


def test_unrelated_project_under_xdist_is_left_alone(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Installed, the plugin loads in every pytest session: one without lcplugin tests must not notice it."""
    for key in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "LCPLUGIN_GPU_COUNT"):
        monkeypatch.delenv(key, raising=False)
    pytester.makepyfile(test_plain=PLAIN)
    result = pytester.runpytest_subprocess("-n", "2", "-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert not (pytester.path / "results").exists(), sorted(p.name for p in pytester.path.iterdir())
    result.stdout.fnmatch_lines(["scheduling tests via LoadScheduling"])  # pytest-xdist's own, untouched
    # pytest names the interpreter, whose path holds the checkout's folder name (a clone in .../lcplugin)
    said = [line.replace(sys.executable, "<python>") for line in result.outlines + result.errlines
            if not line.startswith("plugins:")]
    assert not [line for line in said if "lcplugin" in line or "lc_" in line]


LC_TEST = """
import pytest

pytestmark = pytest.mark.lc_benchmark("longbench_v2")


def test_lb(lc_case, lc_run):
    lc_run(lc_case)
"""


def _spec(name: str, contexts: str, extra: str = "") -> str:
    return (f'name = "{name}"\nsource = "builtin:tiny-llama"\nfamily = "transformer"\nengine = "hf"\n'
            f'max_context = "4k"\ndtype = "float32"\ncontexts = [{contexts}]\ndefault_data = "synthetic"\n{extra}')


def _project(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_lc=LC_TEST)
    specs = pytester.mkdir("specs")
    (specs / "tiny-a.toml").write_text(_spec("tiny-a", '"1k", "2k", "4k"'))
    (specs / "tiny-b.toml").write_text(_spec("tiny-b", '"1k"'))
    (specs / "tiny-c.toml").write_text(_spec("tiny-c", '"2k"'))


def test_plan_prints_each_workers_models_largest_first_and_runs_nothing(pytester: pytest.Pytester):
    from lcplugin.plugin.plan import device_name

    _project(pytester)
    old = pytester.path / "results" / "20200101-000000-old"
    old.mkdir(parents=True)
    # an earlier run of tiny-a on this device at 1k: prefill 1,024 tok/s, decode 10 tok/s
    test = {"benchmark": "longbench_v2", "model": "tiny-a", "ctx": 1024, "n": 2, "wall_s": 2.0, "device": device_name(),
            "prefill_tok_s": 1024.0, "decode_tok_s": 10.0}
    (old / "summary.json").write_text(json.dumps({"run": {}, "tests": [test]}))
    args = ("--lc-specs", "specs", "--lc-models", "tiny-a,tiny-b,tiny-c", "--lc-limit", "2", "--lc-plan",
            "-p", "no:cacheprovider")
    result = pytester.runpytest(*args, "-n", "2")
    assert result.ret == 0
    result.assert_outcomes()  # nothing ran
    # work = items x (context + 128 new tokens): a 2x(1152+2176+4224) = 15,104; c 4,352; b 2,304
    # time: one point, so its rates held constant: 2 items x (ctx / 1,024 + 128 / 10) s = 27.6 + 29.6 + 33.6 s
    result.stdout.fnmatch_lines([
        "lcplugin plan: 5 tests of 3 models on 2 worker(s), largest first*",
        "gw0: 15,104 tokens, ~0:01:30",
        "    tiny-a: 3 tests, 15,104 tokens, ~0:01:30",
        "      prefill s = 0.000977·n [[]attention layers (config); 1 point*], fitted on 1k 1 s",
        "      1k: 1 tests, ~0:00:27 (measured)",
        "      4k: 1 tests, ~0:00:33 (fit past the measured 1k)",
        "gw1: 6,656 tokens, time unknown*",
        "    tiny-c: 1 tests, 4,352 tokens",
        "    tiny-b: 1 tests, 2,304 tokens",
    ])
    assert sorted(p.name for p in (pytester.path / "results").iterdir()) == [old.name]  # no run folder
    single = pytester.runpytest(*args)
    single.stdout.fnmatch_lines(["*on 1 worker(s)*", "main: 21,760 tokens*"])


def test_too_few_gpus_for_the_workers_is_a_usage_error(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """-n 2 on a one-GPU machine pointed gw1 at a GPU that does not exist; its tests skipped, exit 0."""
    _project(pytester)
    monkeypatch.setenv("LCPLUGIN_GPU_COUNT", "1")
    result = pytester.runpytest_subprocess("--lc-specs", "specs", "--lc-models", "tiny-b,tiny-c", "--lc-limit", "1",
                                           "-n", "2", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()[-2000:]
    result.stdout.fnmatch_lines(["*-n 2: 2 workers x 1 GPU(s) each need 2 GPUs, but 1 are visible (0)*"])
    assert not (pytester.path / "results").exists()


def test_n_auto_on_a_gpu_machine_is_one_worker_per_gpu_share(pytester: pytest.Pytester,
                                                              monkeypatch: pytest.MonkeyPatch):
    _project(pytester)
    (pytester.path / "specs" / "big.toml").write_text(
        'name = "big"\nsource = "example/big"\nfamily = "transformer"\nengine = "vllm"\nmax_context = "4k"\n'
        'engine_args = { tensor_parallel_size = 2 }\n')
    monkeypatch.setenv("LCPLUGIN_GPU_COUNT", "4")
    result = pytester.runpytest("--lc-specs", "specs", "--lc-models", "tiny-a,big", "--lc-plan", "-n", "auto",
                                "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*on 2 worker(s)*"])  # 4 GPUs / tensor-parallel 2
    monkeypatch.setenv("LCPLUGIN_GPU_COUNT", "0")  # no GPU: pytest-xdist's own count (CPU cores) stands
    cpu = pytester.runpytest("--lc-specs", "specs", "--lc-models", "tiny-a,big", "--lc-plan", "-n", "auto",
                             "-p", "no:cacheprovider")
    cores = len(os.sched_getaffinity(0))
    cpu.stdout.fnmatch_lines([f"*on {cores} worker(s)*" if cores > 1 else "*on 1 worker(s)*"])


def test_benchmark_json_under_xdist_lists_every_test(shared_run):
    """pytest-benchmark switches itself off under xdist; the controller writes the file from the workers."""
    out = shared_run(XDIST_TWO)  # four models x 1k, 2k x LongBench-v2, PG-19 on two workers
    assert out.returncode == 0, out.tail()
    doc = json.loads((out.folder / "bench.json").read_text())
    by_name = {b["name"]: b for b in doc["benchmarks"]}
    assert set(by_name) == {f"test_{bench}[{model}-{ctx}]" for bench in ("longbench_v2", "pg19")
                            for model in XDIST_MODELS for ctx in ("1k", "2k")}
    for b in by_name.values():
        assert b["extra_info"]["wall_s"] > 0 and b["stats"]["rounds"] == 1
        if b["name"].startswith("test_longbench_v2"):
            assert b["extra_info"]["prefill_tok_s"] > 0
        assert b["stats"]["mean"] == pytest.approx(b["extra_info"]["wall_s"])
    cli = Path(sys.executable).parent / "pytest-benchmark"
    compared = subprocess.run([str(cli), "compare", str(out.folder / "bench.json")], capture_output=True, text=True)
    assert compared.returncode == 0, compared.stderr
    assert "test_longbench_v2[tiny-mamba2-1k]" in compared.stdout


def test_xdist_speedup_script_runs_on_cpu_with_tiny_models(tmp_path):
    """scripts/gpu/xdist-speedup.sh, checked here before the lead spends GPU time on it."""
    from .conftest import REPO

    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "TEMPLATE": "lcplugin/specs/tiny-llama.toml", "CTX": "1k", "LIMIT": "1",
           "NS": "1 2", "ORDER": "2 1 1", "DATA": "", "PY": sys.executable, "SPECS": str(tmp_path / "specs"),
           "NAMES": "a b"}  # two models: one per worker under -n 2 (the GPU run has four)
    env.pop("OMP_NUM_THREADS", None)
    run = subprocess.run(["bash", "scripts/gpu/xdist-speedup.sh"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    rows = json.loads((out / "xdist-speedup.json").read_text())
    assert set(rows) == {"1", "2"}
    # a warm-up run that is not counted, then the order given: -n 2 first, -n 1 twice
    assert (out / "runs-warmup").is_dir() and [r["run"] for r in rows["2"]["runs"]] == [1]
    assert [r["run"] for r in rows["1"]["runs"]] == [2, 3] and len(rows["1"]["walls"]) == 2
    for n, row in rows.items():
        assert row["wall_s"] == statistics.median(row["walls"])
        for run_ in row["runs"]:
            assert run_["tests"] == 2 and run_["wall_s"] > run_["test_s"] > 0
            assert sorted(x["model"] for x in run_["engine_loads"]) == [f"xdist-{m}" for m in "ab"]
            assert run_["workers"] == (["gw0"] if n == "1" else ["gw0", "gw1"])
    assert rows["1"]["speedup"] == 1.0 and rows["2"]["speedup"] == rows["1"]["wall_s"] / rows["2"]["wall_s"]


def test_a_test_with_no_wall_time_is_left_out_of_the_benchmark_json():
    # a test resumed whole, whose earlier session left no summary, has no measured wall time (lc_wall_s None):
    # float(None) stopped the controller's --benchmark-json
    from lcplugin.plugin.benchjson import benchmark_entry

    node = "benches/test_longbench_v2.py::test_longbench_v2[tiny-llama-1k]"
    assert benchmark_entry({"nodeid": node, "props": {"lc_wall_s": None}}) is None
    assert benchmark_entry({"nodeid": node, "props": {"lc_wall_s": "None"}}) is None
    entry = benchmark_entry({"nodeid": node, "props": {"lc_wall_s": 12.5, "lc_n": 2}})
    assert entry is not None and entry["stats"]["data"] == [12.5] and entry["param"] == "tiny-llama-1k"
    assert entry["extra_info"] == {"wall_s": 12.5, "n": 2}
