"""What a run leaves for people and CI: JUnit properties, reports, pytest-benchmark files, telemetry."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from lcplugin.engines import telemetry

from .conftest import REPO


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two runs of the offline default (one model, both contexts), saved by pytest-benchmark too."""
    tmp = tmp_path_factory.mktemp("runs")
    outs = []
    for i in range(2):
        cmd = [sys.executable, "-m", "pytest", "benches", "-p", "no:cacheprovider", "--lc-models", "tiny-llama",
               "--lc-limit", "2", "--lc-results", str(tmp / "results"), "--lc-baselines", str(tmp / "bl"),
               f"--junitxml={tmp}/junit{i}.xml", "--benchmark-autosave", f"--benchmark-storage=file://{tmp}/bench"]
        outs.append(subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                                   env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp.parent)}))
    return tmp, outs


def test_runs_pass_and_name_their_report(two_runs):
    tmp, outs = two_runs
    for out in outs:
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        assert "report: " in out.stdout and "report.md and PNG plots" in out.stdout
    runs = sorted((tmp / "results").iterdir())
    assert len(runs) == 2 and all((r / "report" / "report.md").exists() for r in runs)


def test_junit_cases_carry_the_figures_as_properties(two_runs):
    tmp, _ = two_runs
    cases = ET.parse(tmp / "junit0.xml").getroot().iter("testcase")
    seen = 0
    for case in cases:
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        for key in ("lc_n", "lc_accuracy", "lc_null_rate", "lc_prefill_tok_s", "lc_decode_tok_s", "lc_ttft_s",
                    "lc_peak_mem_gb", "lc_wall_s"):
            assert key in props, (case.get("name"), key)
        if "pg19" not in case.get("name"):
            assert float(props["lc_prefill_tok_s"]) > 0 and float(props["lc_null_rate"]) >= 0
        seen += 1
    assert seen == 8  # four benchmarks x two contexts


def test_report_cli_on_two_runs_writes_plots_and_tables(two_runs, tmp_path):
    tmp, _ = two_runs
    runs = sorted((tmp / "results").iterdir())
    out = subprocess.run([sys.executable, "-m", "lcplugin", "report", *map(str, runs), "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    for name in ("longbench_v2-accuracy.png", "longbench_v2-null_rate.png", "longbench_v2-prefill_tok_s.png",
                 "longbench_v2-decode_tok_s.png", "pg19-perplexity.png"):
        assert name in pngs
    assert all((tmp_path / p).stat().st_size > 10_000 for p in pngs)
    md = (tmp_path / "report.md").read_text()
    assert md.count("| tiny-llama |") == 16 and all(r.name in md for r in runs)  # 8 tests x 2 runs


def test_pytest_benchmark_compare_reads_two_saved_runs(two_runs):
    tmp, _ = two_runs
    saved = sorted((tmp / "bench").rglob("*.json"))
    assert len(saved) == 2
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
