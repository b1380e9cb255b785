"""What a run leaves for people and CI: JUnit properties, reports, pytest-benchmark files, telemetry.

Read from shared runs (tests/suite_runs.py): the offline default and a one-test run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from lcplugin.engines import telemetry

from .conftest import REPO
from .suite_runs import DEFAULT, LLAMA_1K, BenchRun


def two_runs(shared_run) -> list[BenchRun]:
    """The offline default (saved by pytest-benchmark, JUnit XML) and a one-test run, saved too."""
    return [shared_run(DEFAULT), shared_run(LLAMA_1K)]


def test_runs_pass_and_name_their_report(shared_run):
    for run in two_runs(shared_run):
        assert run.returncode == 0, run.tail()
        assert "report: " in run.stdout and "report.md and PNG plots" in run.stdout
        assert (run.run_dir() / "report" / "report.md").exists()


def test_junit_cases_carry_the_figures_as_properties(shared_run):
    run = shared_run(DEFAULT)
    cases = ET.parse(run.folder / "junit.xml").getroot().iter("testcase")
    seen = 0
    for case in cases:
        if case.find("skipped") is not None:  # the real models: no figures to carry
            continue
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        for key in ("lc_n", "lc_accuracy", "lc_null_rate", "lc_prefill_tok_s", "lc_decode_tok_s", "lc_ttft_s",
                    "lc_peak_mem_gb", "lc_wall_s"):
            assert key in props, (case.get("name"), key)
        if "pg19" not in case.get("name"):
            assert float(props["lc_prefill_tok_s"]) > 0 and float(props["lc_null_rate"]) >= 0
        seen += 1
    assert seen == DEFAULT.outcomes["passed"]  # every benchmark x two tiny models x two contexts


def test_report_cli_on_two_runs_writes_plots_and_tables(shared_run, tmp_path):
    runs = [run.run_dir() for run in two_runs(shared_run)]
    out = subprocess.run([sys.executable, "-m", "lcplugin", "report", *map(str, runs), "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    for name in ("longbench_v2-accuracy.png", "longbench_v2-null_rate.png", "longbench_v2-prefill_tok_s.png",
                 "longbench_v2-decode_tok_s.png", "pg19-perplexity.png"):
        assert name in pngs
    assert all((tmp_path / p).stat().st_size > 10_000 for p in pngs)
    md = (tmp_path / "report.md").read_text()
    assert all(r.name in md for r in runs)
    for model in ("tiny-llama", "tiny-mamba2"):  # one row per test of each run: 8 + 1, and 8 + 0
        rows = sum(t["model"] == model for run in two_runs(shared_run) for t in run.summary()["tests"])
        assert md.count(f"| {model} |") == rows, model


def test_pytest_benchmark_compare_reads_two_saved_runs(shared_run):
    saved = [path for run in two_runs(shared_run) for path in sorted((run.folder / "bench").rglob("*.json"))]
    assert len(saved) == 2  # one file per run
    extra = json.loads(saved[0].read_text())["benchmarks"][0]["extra_info"]
    assert {"accuracy", "null_rate", "prefill_tok_s", "decode_tok_s", "ttft_s", "peak_mem_gb"} <= set(extra)
    from pathlib import Path

    cli = Path(sys.executable).parent / "pytest-benchmark"
    out = subprocess.run([str(cli), "compare", *map(str, saved)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "test_longbench_v2[tiny-llama-1k]" in out.stdout


def test_telemetry_without_cuda_or_nvml_is_null_with_reasons():
    t = telemetry.TestTelemetry()
    t.begin()
    figures = t.end()
    assert figures["torch_peak_gb"] is None and figures["why"]["torch_peak_gb"] == "no CUDA device"
    assert figures["nvml_device_gb"] is None and figures["energy_j"] is None
    assert figures["rss_peak_gb"] > 0.01 and figures["device"].startswith("cpu")
    sampler = telemetry.NvmlSampler()  # nvidia-ml-py is installed here, but there is no driver
    result = sampler.start().stop()
    assert result["nvml_device_gb"] is None and result["energy_j"] is None
    assert result["why"]["nvml_device_gb"].startswith("NVML unavailable")


def test_wandb_absent_is_a_message_not_a_crash(tmp_path, monkeypatch):
    from lcplugin.results.tracking import log_run

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    assert "wandb is not installed" in log_run("p", tmp_path, {}, [])


def test_wandb_logs_offline_without_network(run_benches, tmp_path):
    pytest.importorskip("wandb", reason="wandb is not installed (it is in the dev extra)")
    out = run_benches("--lc-models", "tiny-llama", "--lc-ctx", "1k", "--lc-limit", "2", "-k", "longbench_v2",
                      "--lc-wandb", "lcplugin-test", env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert out.returncode == 0, out.stdout[-2000:]
    assert "wandb: logged 1 tests and 2 items to wandb project 'lcplugin-test' (offline)" in out.stdout
    assert list(run_benches.results.glob("*/wandb/offline-run-*"))
