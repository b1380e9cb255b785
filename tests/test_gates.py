"""The gates as users run them (``pytest benches``): unlike runs are refused, PG-19 is gated,
efficiency is compared on the machine that recorded it only."""

from __future__ import annotations

import json

import pytest

LB2 = ("--lc-models", "tiny-llama", "--lc-ctx", "1k", "--lc-limit", "4", "-k", "longbench_v2")
PG19 = ("--lc-models", "tiny-llama", "--lc-ctx", "1k", "--lc-limit", "1", "-k", "pg19")


@pytest.mark.slow
def test_greedy_baseline_refuses_a_sampled_run_naming_sampling(run_benches):
    first = run_benches(*LB2, "--lc-sampling", "greedy", "--lc-update-baselines")
    assert first.returncode == 0, first.stdout[-2000:]
    entry = json.loads((run_benches.baselines / "tiny-llama.json").read_text())["entries"]["longbench_v2/1k"]
    assert entry["settings"]["sampling"]["temperature"] == 0.0
    gated = run_benches(*LB2, "--lc-sampling", "official")
    assert gated.returncode == 1, gated.stdout[-2000:]
    text = gated.stdout
    assert "recorded under other settings" in text
    assert "sampling:" in text and '"temperature": 0.0' in text and '"temperature": 0.1' in text
    assert "--lc-update-baselines" in text and "--lc-sampling" in text
    assert last_test(run_benches)["baseline"]["status"] == "refused"
    same = run_benches(*LB2, "--lc-sampling", "greedy")  # the baseline's own settings: compared, and it passes
    assert same.returncode == 0, same.stdout[-2000:]


@pytest.mark.slow
def test_pg19_bits_per_byte_is_gated_and_efficiency_only_on_its_machine(run_benches):
    first = run_benches(*PG19, "--lc-update-baselines", "--lc-efficiency-tolerance", "prefill_tok_s=10")
    assert first.returncode == 0, first.stdout[-2000:]
    path = run_benches.baselines / "tiny-llama.json"
    doc = json.loads(path.read_text())
    entry = doc["entries"]["pg19/1k"]
    assert len(entry["outcomes"]) == 10 and all(v > 0 for v in entry["outcomes"].values())
    assert "sampling" not in entry["settings"]  # PG-19 never samples: no reason to refuse on it
    # A baseline far faster than this machine can be, recorded on another machine: not compared, warned.
    entry["efficiency"]["prefill_tok_s"] = 1e12
    entry["machine"] = "Imaginary GPU 9000"
    path.write_text(json.dumps(doc))
    other = run_benches(*PG19)
    assert other.returncode == 0, other.stdout[-2000:]
    assert "warnings summary" in other.stdout and "Imaginary GPU 9000" in other.stdout
    assert "efficiency not compared (other machine" in other.stdout
    notes = last_test(run_benches)["baseline"]["test"]
    assert any("not compared (other machine" in n for n in notes) and any("paired t-test" in n for n in notes)
    # The same machine: the tolerance gates.
    entry["machine"] = last_test(run_benches)["device"]
    path.write_text(json.dumps(doc))
    same = run_benches(*PG19)
    assert same.returncode == 1 and "prefill_tok_s fell from 1e+12" in same.stdout
    # A baseline whose every window had 0.2 fewer bits per byte: a regression beyond chance.
    entry["efficiency"]["prefill_tok_s"] = None
    entry["outcomes"] = {k: v - 0.2 for k, v in entry["outcomes"].items()}
    path.write_text(json.dumps(doc))
    worse = run_benches(*PG19)
    assert worse.returncode == 1
    assert "bits per byte rose" in worse.stdout and "on 10 paired windows" in worse.stdout
    assert "paired t-test p = " in worse.stdout


def last_test(run_benches) -> dict:
    """The one test of the newest run folder (each finished run gets its own)."""
    runs = sorted(p for p in run_benches.results.iterdir() if p.is_dir())
    return json.loads((runs[-1] / "summary.json").read_text())["tests"][0]


def _quality(spec_changes=None, bench="longbench_v2", greedy=False, **options):
    from dataclasses import replace

    from lcplugin.benchmarks.base import BenchOptions
    from lcplugin.config.inputs import quality_settings, result_inputs
    from lcplugin.config.session import Case, LcSession
    from lcplugin.config.settings import Settings

    from .conftest import REPO

    session = LcSession(Settings(bench=BenchOptions(**options), sampling="greedy" if greedy else "official"), REPO)
    spec = replace(session.specs["tiny-llama"], **(spec_changes or {}))
    return quality_settings(result_inputs(Case(bench, spec, 1024), session))


def test_quality_settings_leave_out_efficiency_and_what_a_benchmark_never_reads():
    base = _quality()
    assert base["sampling"] == {"max_new_tokens": 128, "temperature": 0.1} and base["mode"] == "0shot"
    assert _quality({"engine_args": {"max_batch_size": 8, "max_batch_tokens": 4096}}) == base  # speed only
    assert _quality({"engine_args": {"ignore_eos": True}})["engine_args"] == {"ignore_eos": True}  # changes answers
    assert _quality(greedy=True)["sampling"]["temperature"] == 0.0
    assert _quality(mode="cot")["mode"] == "cot" and _quality(mode="cot")["sampling"]["max_new_tokens"] == 1024
    assert _quality(pg19_windows=5) == base  # LongBench-v2 never reads PG-19's options
    pg19 = _quality(bench="pg19")
    assert _quality(bench="pg19", greedy=True, mode="cot") == pg19 and "chat_template" not in pg19
    assert _quality(bench="pg19", pg19_windows=5)["pg19_windows"] == 5
    ada = _quality(bench="ada_leval_tsort")
    assert _quality(bench="ada_leval_tsort", greedy=True, mode="nocontext", overlength="skip") == ada


def test_quality_settings_count_engine_args_given_on_the_command_line():
    """``--lc-engine-arg ignore_eos=true`` changes the answers as the same key in a spec does; the
    prefill chunk and the decode cache do not (greedy output identical, tests/test_hf_prefill.py)."""
    from lcplugin.config.inputs import quality_settings, result_inputs
    from lcplugin.config.session import Case, LcSession
    from lcplugin.config.settings import Settings

    from .conftest import REPO

    def quality(*pairs):
        session = LcSession(Settings(models="tiny-llama", engine_args=pairs, sampling="greedy"), REPO)
        return quality_settings(result_inputs(Case("longbench_v2", session.specs["tiny-llama"], 1024), session))

    assert quality(("ignore_eos", True))["engine_args"] == {"ignore_eos": True}
    assert quality(("prefill_chunk", 300), ("cache", "static"), ("compile", False)) == quality()
