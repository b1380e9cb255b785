"""What a result depends on, declared once: ``result_inputs``, its hash (the test key) and its quality part
(the baselines' settings); each benchmark adds only the options it declares it reads (an allow-list)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from lcplugin.benchmarks.base import BENCHMARKS, BenchOptions, get_benchmark
from lcplugin.config.inputs import NOT_QUALITY, quality_settings, result_inputs, test_key
from lcplugin.config.session import Case, LcSession
from lcplugin.config.settings import Settings
from lcplugin.engines.registry import efficiency_only_args
from lcplugin.results import baselines

from .conftest import REPO
from .test_bench_options import Extended


def _inputs(name: str = "longbench_v2", ctx: int = 1024, spec_changes: dict | None = None, **settings: Any):
    session = LcSession(Settings(**settings), REPO)
    spec = replace(session.specs["tiny-llama"], **(spec_changes or {}))
    return result_inputs(Case(name, spec, ctx), session)


def test_the_test_key_is_the_hash_of_everything_a_result_depends_on():
    base = _inputs()
    assert test_key(base) == test_key(_inputs())
    for changed in (_inputs(ctx=2048), _inputs("ada_leval_tsort"), _inputs(spec_changes={"dtype": "bfloat16"}),
                    _inputs(spec_changes={"revision": "abc"}), _inputs(spec_changes={"chat_template": "none"}),
                    _inputs(engine_args=(("prefill_chunk", 64),)), _inputs(sampling="greedy"), _inputs(limit=3),
                    _inputs(data={"longbench_v2": "elsewhere.jsonl"}),
                    _inputs(bench=BenchOptions(mode="cot")), _inputs(bench=BenchOptions(budget="official"))):
        assert test_key(changed) != test_key(base), {k: v for k, v in changed.items() if base.get(k) != v}


def test_an_option_a_benchmark_does_not_read_keys_neither_its_records_nor_its_baselines():
    """PG-19 neither samples nor uses a chat template; Ada-LEval never reads LongBench-v2's options."""
    pg19 = _inputs("pg19")
    assert "sampling" not in pg19 and "chat_template" not in pg19 and pg19["pg19_windows"] == 10
    for other in (_inputs("pg19", sampling="greedy"), _inputs("pg19", spec_changes={"chat_template": "none"}),
                  _inputs("pg19", bench=BenchOptions(mode="cot", budget="official", overlength="skip"))):
        assert test_key(other) == test_key(pg19)
    ada = _inputs("ada_leval_tsort")
    options = BenchOptions(mode="nocontext", budget="official", overlength="skip", select=(("length", ("short",)),),
                           pg19_windows=3)
    assert test_key(_inputs("ada_leval_tsort", bench=options)) == test_key(ada)
    assert test_key(_inputs("pg19", bench=BenchOptions(pg19_windows=3))) != test_key(pg19)


def test_quality_settings_are_the_inputs_less_seed_count_version_and_efficiency_only_args():
    inputs = _inputs(engine_args=(("prefill_chunk", 64), ("ignore_eos", True)), limit=3)
    assert inputs["sampling"]["seed"] == 0 and inputs["limit"] == 3 and inputs["engine_args"]["prefill_chunk"] == 64
    quality = quality_settings(inputs)
    assert "seed" not in quality["sampling"] and quality["engine_args"] == {"ignore_eos": True}
    assert "prefill_chunk" in efficiency_only_args("hf")
    assert set(quality) == set(inputs) - NOT_QUALITY
    assert {k: v for k, v in quality.items() if k not in ("sampling", "engine_args")} == \
        {k: v for k, v in inputs.items() if k not in NOT_QUALITY | {"sampling", "engine_args"}}
    assert quality_settings(_inputs(limit=5)) == quality_settings(_inputs())


def test_committed_baselines_hold_exactly_the_quality_settings_of_the_offline_default():
    """Each entry stores what the gate compares: today's quality settings, nothing more or less."""
    session = LcSession(Settings(), REPO)
    for path in sorted((REPO / "baselines").glob("*.json")):
        doc = json.loads(path.read_text())
        spec = session.specs[doc["model"]]
        for key, entry in doc["entries"].items():
            bench, ctx = key.split("/")
            now = quality_settings(result_inputs(Case(bench, spec, {"1k": 1024, "2k": 2048}[ctx]), session))
            assert baselines.compare_settings(entry["settings"], now, path, key) is None, (path.name, key)
            assert "settings_hash" not in entry  # written and never read: gone


def test_an_option_read_by_one_benchmark_only_refuses_only_that_benchmarks_baselines(tmp_path, monkeypatch):
    from lcplugin.benchmarks.ada_leval import TSort

    monkeypatch.setattr(TSort, "reads", TSort.reads | {"tsort_shuffle"})
    summary = {"n": 1, "correct": 1, "nulls": 0, "accuracy": 1.0, "null_rate": 0.0, "device": "cpu",
               "bits_per_byte": 1.0, "perplexity": 2.0}

    def quality(bench: str, shuffle: int) -> dict[str, Any]:
        return quality_settings(_inputs(bench, bench=Extended(tsort_shuffle=shuffle)))

    for bench in BENCHMARKS:
        baselines.record(tmp_path, "m", bench, 1024, summary, "cpu", settings=quality(bench, 0),
                         measure=get_benchmark(bench).measure)
    for bench in BENCHMARKS:
        verdict = baselines.judge(tmp_path, "m", bench, 1024, summary, settings=quality(bench, 1),
                                  measure=get_benchmark(bench).measure)
        if bench == "ada_leval_tsort":
            assert verdict.status == "refused" and "tsort_shuffle: 0 in the baseline, 1 now (--lc-tsort-shuffle)" \
                in verdict.failures[0]
        else:
            assert verdict.status == "ok", (bench, verdict.failures)


def test_budget_is_longbench_v2s_alone():
    """The deny-list this replaced missed it: Ada-LEval and PG-19 baselines were refused on --lc-budget."""
    for bench in BENCHMARKS:
        same = quality_settings(_inputs(bench)) == quality_settings(_inputs(bench, bench=BenchOptions(budget="official")))
        assert same == (bench != "longbench_v2"), bench


def test_a_new_item_generator_refuses_the_old_generators_baselines(tmp_path, monkeypatch):
    """RULER's items are made by code, and its data source's digest names no version of it: a changed
    generator must not be gated item by item against the old one's prompts. Version 1 keys nothing (results
    made before the version existed keep their keys); a raised one keys records and baselines, by name."""
    from lcplugin.benchmarks.ruler import Ruler

    name = "ruler_niah_single_1"
    before = _inputs(name)
    assert "items_version" not in before
    summary = {"n": 1, "correct": 1, "nulls": 0, "accuracy": 1.0, "null_rate": 0.0, "device": "cpu"}
    baselines.record(tmp_path, "m", name, 1024, summary, "cpu", settings=quality_settings(before))
    monkeypatch.setattr(Ruler, "items_version", 2)
    after = _inputs(name)
    assert test_key(after) != test_key(before) and after["items_version"] == 2
    verdict = baselines.judge(tmp_path, "m", name, 1024, summary, settings=quality_settings(after))
    assert verdict.status == "refused"
    assert "items_version: absent in the baseline, 2 now (the benchmark's items_version" in verdict.failures[0]
    assert _inputs("ruler_vt", 2048)["items_version"] == 2  # every RULER task shares the generator's version
    assert "items_version" not in _inputs("longbench_v2")
