"""The plugin as users run it: ``python -m pytest benches ...``, in a subprocess where a run starts an
engine (shared with other tests where they read the same run), in this process where it only collects."""

from __future__ import annotations

import json
import textwrap

import pytest

from lcplugin.benchmarks.base import BENCHMARKS

from .conftest import REPO, only_run_summary
from .suite_runs import DEFAULT, OFFLINE

pytest_plugins = ["pytester"]

REQUIRED = ("benchmark", "model", "ctx", "n", "accuracy", "null_rate", "accuracy_ci95", "buckets", "wall_s",
            "prefill_tok_s", "decode_tok_s", "ttft_s", "peak_mem_gb")


def collect(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """``pytest benches --collect-only -q ...`` in this process: collecting starts no engine, so it needs
    no interpreter of its own (3-5 s each on 2 cores)."""
    return pytester.runpytest(str(REPO / "benches"), "--collect-only", "-q", "-p", "no:cacheprovider",
                              "--lc-results", str(pytester.path / "results"),
                              "--lc-baselines", str(pytester.path / "baselines"), *args)


def collected(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if "::" in line]


def test_collect_only_selects_mamba_at_32k(pytester):
    out = collect(pytester, "-k", "mamba and 32k")
    assert out.ret == pytest.ExitCode.OK, out.stdout.str() + out.stderr.str()
    ids = collected(out)
    assert ids and all("mamba" in i and i.endswith("-32k]") for i in ids)
    models = {i.split("[")[1].rsplit("-", 1)[0] for i in ids}
    assert models == {"mamba-2.8b", "mamba-codestral-7b"}
    # every benchmark function has exactly the two Mamba models' 32k tests
    functions = {i.split("[")[0] for i in ids}
    assert {f.split("::")[1] for f in functions} == {f"test_{name}" for name in BENCHMARKS}
    assert len(ids) == len(functions) * len(models)


def test_full_matrix_is_collected_with_family_marks(pytester):
    out = collect(pytester, "-m", "hybrid")
    ids = collected(out)
    assert any("tiny-zamba2-1k" in i for i in ids) and any("zamba2-7b-128k" in i for i in ids)
    assert not any("llama" in i or "mamba-2.8b" in i for i in ids)


def test_offline_default_runs_every_tiny_test_and_says_why_the_others_skip(shared_run):
    run = shared_run(DEFAULT)
    run.assert_outcomes(**DEFAULT.outcomes)  # every benchmark x 2 tiny models x 2 contexts; the real ones skip
    assert run.returncode == 0, run.tail()
    assert "llama-3.1-8b-instruct: needs a CUDA GPU" in run.stdout
    assert "zamba2-7b: needs a CUDA GPU" in run.stdout  # past its 4k window it would run, marked (test_window)
    assert "lcplugin summary" in run.stdout and "no baseline" in run.stdout
    tests = run.summary()["tests"]
    assert {(t["benchmark"], t["model"], t["ctx"]) for t in tests} == {
        (b, m, c) for b in OFFLINE
        for m in ("tiny-llama", "tiny-mamba2") for c in (1024, 2048)}


def test_offline_default_summary_holds_every_figure_or_why_not(shared_run):
    summary = shared_run(DEFAULT).summary()
    tests = summary["tests"]
    assert all(t["perplexity"] > 1 and t["bits_per_byte"] > 0 for t in tests if t["benchmark"] == "pg19")
    for t in tests:
        if t["benchmark"] == "pg19":
            continue
        for key in REQUIRED:
            assert key in t, key
        assert t["n"] <= 3 and t["prefill_tok_s"] > 0 and t["decode_tok_s"] > 0 and t["ttft_s"] > 0
        assert t["peak_mem_gb"] is None and t["unmeasured"]["torch_peak_gb"] == "no CUDA device"  # CPU
        assert t["nvml_device_gb"] is None and t["energy_j"] is None and "energy_j" in t["unmeasured"]
    run = summary["run"]
    assert run["versions"]["transformers"] and run["settings_hash"] and run["device"].startswith("cpu")


def test_offline_default_records_every_item(shared_run):
    rows = shared_run(DEFAULT).records("longbench_v2", "tiny-llama", 1024)
    assert len(rows) == 3 and len({r["id"] for r in rows}) == 3
    for r in rows:
        assert {"id", "prompt_tokens", "truncated", "response", "pred", "gold", "correct", "null", "ttft_s",
                "decode_s"} <= set(r)
        assert r["prompt_tokens"] <= 1024 - 128


@pytest.mark.slow
def test_baseline_gate_fails_then_rerecording_passes(run_benches):
    args = ("--lc-models", "tiny-llama", "--lc-ctx", "1k", "--lc-limit", "8", "-k", "longbench_v2")
    first = run_benches(*args, "--lc-update-baselines")
    assert first.returncode == 0, first.stdout[-2000:]
    path = run_benches.baselines / "tiny-llama.json"
    doc = json.loads(path.read_text())
    entry = doc["entries"]["longbench_v2/1k"]
    assert entry["n"] == 8 and entry["accuracy"] == 0.0 and len(entry["outcomes"]) == 8
    # a baseline the random model cannot meet: every item right
    entry.update(accuracy=1.0, correct=8, outcomes={i: [1, 0] for i in entry["outcomes"]})
    path.write_text(json.dumps(doc))
    gated = run_benches(*args)
    assert gated.returncode == 1
    assert str(path) in gated.stdout and "8 went worse, 0 went better" in gated.stdout and "McNemar" in gated.stdout
    del entry["outcomes"]  # aggregates only: the unpaired test
    path.write_text(json.dumps(doc))
    gated = run_benches(*args)
    assert gated.returncode == 1
    assert str(path) in gated.stdout and "accuracy fell from 8/8" in gated.stdout and "Fisher" in gated.stdout
    rerecorded = run_benches(*args, "--lc-update-baselines")
    assert rerecorded.returncode == 0
    again = run_benches(*args)
    assert again.returncode == 0, again.stdout[-2000:]
    again.assert_outcomes(passed=1)
    assert len(again.run_dirs()) == 5  # each finished run has its own folder: none was continued


KILLER = textwrap.dedent('''
    """Test helper: SIGKILL the tiny-llama worker from outside, before its second request."""
    import os, signal, time
    from lcplugin.engines import worker

    _call = worker.EngineWorker.call
    _seen = {"n": 0}

    def call(self, method, *args, **kwargs):
        if method == "generate" and self.config.model == "tiny-llama":
            _seen["n"] += 1
            if _seen["n"] == 2:
                os.kill(self.pid, signal.SIGKILL)
                time.sleep(0.5)
        return _call(self, method, *args, **kwargs)

    worker.EngineWorker.call = call
''')


@pytest.mark.slow
def test_killed_worker_fails_one_test_and_the_session_goes_on(run_benches, tmp_path):
    (tmp_path / "lc_killer.py").write_text(KILLER)
    out = run_benches("-p", "lc_killer", "--lc-models", "tiny-llama,tiny-mamba2", "--lc-ctx", "1k,2k",
                      "--lc-limit", "8", "-k", "longbench_v2", env={"PYTHONPATH": str(tmp_path)})
    text = out.stdout
    assert out.returncode == 1, text[-3000:]
    assert "FAILED benches/test_longbench_v2.py::test_longbench_v2[tiny-llama-1k]" in text
    assert "engine worker for tiny-llama died while" in text and "SIGKILL" in text
    failures = text.split("short test summary info")[0]
    assert failures.count("engine worker for tiny-llama died") == 1  # one clear message, not echoed
    assert "Captured lcplugin engine call" in failures and "last output of the worker" in failures
    out.assert_outcomes(passed=3, failed=1)  # tiny-llama-2k (fresh worker) and both tiny-mamba2 ran
    summary = only_run_summary(run_benches.results)
    assert {(t["model"], t["ctx"]) for t in summary["tests"]} == {("tiny-llama", 2048), ("tiny-mamba2", 1024),
                                                                    ("tiny-mamba2", 2048)}


def test_malformed_spec_is_one_clean_message(pytester):
    specs = pytester.mkdir("specs")
    (specs / "broken.toml").write_text('name = "b"\nsource = "x"\nfamily = "rnn"\nengine = "hf"\nmax_context = 4096\n')
    out = collect(pytester, "--lc-specs", str(specs))
    assert out.ret == pytest.ExitCode.USAGE_ERROR
    assert f"model spec {specs / 'broken.toml'}: field 'family' is 'rnn'" in out.stderr.str()
    assert "Traceback" not in out.stderr.str() + out.stdout.str()


def test_unknown_model_and_bad_ctx_are_clean_usage_errors(pytester):
    out = collect(pytester, "--lc-models", "tiny-lama")
    err = out.stderr.str()
    assert out.ret == pytest.ExitCode.USAGE_ERROR and "unknown model 'tiny-lama'" in err and "Traceback" not in err
    out = collect(pytester, "--lc-ctx", "32g")
    assert out.ret == pytest.ExitCode.USAGE_ERROR and "context length '32g' does not parse" in out.stderr.str()


def test_unreachable_hub_is_detected_quickly_and_skips(run_benches, tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "hubby.toml").write_text('name = "hubby"\nsource = "org/not-cached"\nfamily = "transformer"\n'
                                      'engine = "hf"\nmax_context = 4096\ncontexts = ["1k"]\n')
    # a closed local port stands in for an unreachable hub; HF_HUB_OFFLINE is not set for this run
    out = run_benches("--lc-specs", str(specs), "--lc-models", "hubby", "-rs",
                      "--lc-data", "longbench_v2=/nonexistent.jsonl",
                      env={"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"}, timeout=60)
    assert out.returncode == 0, out.stdout[-2000:]
    assert "hubby: weights of org/not-cached are not in the local Hugging Face cache and the hub is unreachable" \
        in out.stdout


@pytest.mark.slow
def test_sigkill_mid_run_then_restart_loses_and_duplicates_nothing(run_benches, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from .conftest import REPO

    args = ["--lc-models", "tiny-mamba2", "--lc-ctx", "1k", "--lc-limit", "10", "-k", "longbench_v2"]
    reference = run_benches(*args, "--lc-results", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stdout[-2000:]
    results = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pytest", "benches", "-p", "no:cacheprovider", "--lc-results", str(results),
           "--lc-baselines", str(tmp_path / "bl"), *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 600  # the run starts python, torch, a worker: minutes on a loaded machine
    records = None
    while time.time() < deadline:
        found = list(results.glob("*/records/longbench_v2/tiny-mamba2-1024.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 3:
            records = found[0]
            break
        time.sleep(0.05)
    assert records is not None, "the run never wrote three records"
    os.killpg(proc.pid, signal.SIGKILL)  # pytest and its engine worker, mid-run
    proc.wait()
    done_before = len(records.read_text().splitlines())
    assert done_before < 10
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert again.returncode == 0, again.stdout[-2000:]
    assert len(list(results.iterdir())) == 1  # the same run folder was continued
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == 10
    resumed = only_run_summary(results)["tests"][0]
    uninterrupted = only_run_summary(tmp_path / "reference")["tests"][0]
    for key in ("n", "correct", "nulls", "accuracy", "null_rate", "accuracy_ci95", "buckets", "truncated"):
        assert resumed[key] == uninterrupted[key], key
    ref_rows = {json.loads(line)["id"]: json.loads(line) for line in
                next((tmp_path / "reference").glob("*/records/longbench_v2/*.jsonl")).read_text().splitlines()}
    assert {r["id"]: r["response"] for r in rows} == {i: r["response"] for i, r in ref_rows.items()}
    assert only_run_summary(results)["run"]["finished"]


def test_missing_data_file_fails_the_test_naming_the_file(run_benches):
    out = run_benches("--lc-models", "tiny-llama", "--lc-ctx", "1k", "-k", "longbench_v2",
                      "--lc-data", "longbench_v2=/nonexistent/lb2.jsonl")
    assert out.returncode == 1
    assert "data file /nonexistent/lb2.jsonl does not exist" in out.stdout
    assert "Traceback" not in out.stdout


@pytest.mark.parametrize("on_ci", ["", "1"], ids=["terminal", "ci"])
def test_engine_that_is_not_installed_is_one_clear_failure(run_benches, on_ci):
    # On CI (CI=1) pytest repeats each failure's whole message in the short summary: the worker's log
    # tail must live in its own report section, or it would be printed twice.
    out = run_benches("--lc-models", "tiny-llama", "--lc-ctx", "1k", "-k", "longbench_v2", "--lc-engine", "mamba_ssm",
                      env={"CI": on_ci})
    assert out.returncode == 1
    summary_line = next(line for line in out.stdout.splitlines() if line.startswith("FAILED "))
    assert "the mamba_ssm engine needs the mamba-ssm package" in (summary_line if on_ci else out.stdout)
    assert out.stdout.count("Traceback") == 1  # the worker's own log tail, once, not a wall in the report
    assert "Captured lcplugin engine call" in out.stdout
    assert "Benchmark fixture was not used" not in out.stdout


def test_remote_code_needs_the_flag(run_benches, tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "r.toml").write_text('name = "remote"\nsource = "builtin:tiny-llama"\nfamily = "transformer"\n'
                                  'engine = "hf"\nmax_context = 4096\ncontexts = ["1k"]\ntrust_remote_code = true\n'
                                  'default_data = "synthetic"\n')
    out = run_benches("--lc-specs", str(specs), "--lc-models", "remote", "-k", "longbench_v2", "-rs")
    assert out.returncode == 0 and "pass --lc-allow-remote-code to allow it" in out.stdout
    out.assert_outcomes(skipped=1, deselected=len(BENCHMARKS) - 1)
    out = run_benches("--lc-specs", str(specs), "--lc-models", "remote", "-k", "longbench_v2", "--lc-limit", "2",
                      "--lc-allow-remote-code")
    assert out.returncode == 0
    out.assert_outcomes(passed=1, deselected=len(BENCHMARKS) - 1)


@pytest.mark.parametrize(("earlier_summary", "again_args"), [(True, ()), (False, ()), (True, ("-n", "2"))],
                         ids=["summarized", "not-summarized", "summarized-resumed-by-xdist"])
def test_a_resumed_test_reports_no_session_figure_it_did_not_measure(run_benches, earlier_summary, again_args):
    # The H200 run of 2026-12-01 (Qwen, RULER at 128k): a deadline killed the session after nine tests had
    # finished; the next session resumed the run, found every item of those tests in the records, and wrote their
    # summaries again with its own telemetry: 15.3 GB peak (the weights alone), 0 J and 0.0 s, none of it measured
    # on their items. Figures measured over a session (memory peaks, energy, wall time) come from the session that
    # ran the items, or are None with the reason.
    args = ("--lc-models", "tiny-llama", "--lc-ctx", "1k", "--lc-limit", "2", "-k", "longbench_v2")
    first = run_benches(*args)
    assert first.returncode == 0, first.stdout[-2000:]
    (folder,) = [p for p in run_benches.results.iterdir() if p.is_dir()]
    path = folder / "summary.json"
    data = json.loads(path.read_text())
    measured = dict(data["tests"][0])
    assert measured["wall_s"] and measured["peak_rss_gb"] and measured["items_run"] == 2
    data["run"].pop("finished")  # killed before the session's end: the next session resumes this run
    if not earlier_summary:  # killed after the test's last record, before its summary
        data["tests"] = []
    path.write_text(json.dumps(data))
    again = run_benches(*args, *again_args)  # under xdist a worker's store holds its own part only
    assert again.returncode == 0, again.stdout[-2000:]
    test = only_run_summary(run_benches.results)["tests"][0]
    assert test["items_run"] == 0 and test["items_resumed"] == 2 and test["n"] == 2
    assert test["session_items"] == (2 if earlier_summary else 0)
    for key in ("wall_s", "peak_rss_gb", "items_per_hour"):
        if earlier_summary:
            assert test[key] == measured[key], key
        else:
            assert test[key] is None, key
            assert "resumed" in test["unmeasured"][key], test["unmeasured"]
