"""One window rule: what a benchmark may send at a test's context, and what the engine is sized to.

LongBench-v2 and PG-19 fit their prompts to the test's context; Ada-LEval, as its official code
does, to the model's window (a prompt is left out only if it does not fit that). An engine sized at
load (vLLM's ``max_model_len``) must then hold the longest prompt plus generation each benchmark
sends, or it rejects the prompt.
"""

from __future__ import annotations

import json

import pytest

from lcplugin.benchmarks.base import get_benchmark
from lcplugin.config.specs import load_specs

from .conftest import only_run_summary
from .suite_runs import NEED_FILES, OFFLINE


def test_each_benchmark_names_its_window():
    specs = load_specs()
    qwen, llama = specs["qwen2.5-7b-instruct"], specs["llama-3.1-8b-instruct"]
    assert llama.window_at(8192) == 131072  # native 128k
    assert qwen.window_at(8192) == 32768  # native RoPE below its 32k: its own window
    assert qwen.window_at(65536) == 65536  # YaRN with the factor derived from the context reaches it
    for name in ("longbench_v2", "pg19"):
        assert get_benchmark(name).context_window(8192, qwen.window_at(8192)) == 8192
    for name in ("ada_leval_bestanswer", "ada_leval_tsort"):
        assert get_benchmark(name).context_window(8192, qwen.window_at(8192)) == 32768


@pytest.mark.slow
def test_an_engine_sized_at_load_holds_every_prompt_its_benchmark_sends(run_benches, tmp_path):
    # the fake engine checks, as vLLM does, that prompt + generation fit its max_model_len
    log = tmp_path / "engine.jsonl"
    out = run_benches("-p", "tests.fake_engines", "--lc-engine", "fake", "--lc-models", "tiny-llama",
                      "--lc-ctx", "1k", "--lc-limit", "2", env={"LC_FAKE_LOG": str(log)})
    assert out.returncode == 0, out.stdout[-3000:]
    out.assert_outcomes(passed=len(OFFLINE), skipped=len(NEED_FILES))
    tests = {t["benchmark"]: t for t in only_run_summary(run_benches.results)["tests"]}
    assert tests["ada_leval_bestanswer"]["skipped_overlength"] == 0
    records = run_benches.results.glob("*/records/ada_leval_bestanswer/tiny-llama-1024.jsonl")
    lengths = [json.loads(line)["prompt_tokens"] for line in next(records).read_text().splitlines()]
    assert max(lengths) > 1024  # Ada-LEval prompts longer than the test's context ran, not skipped
    loads = [e for e in map(json.loads, log.read_text().splitlines()) if e["event"] == "load"]
    assert len(loads) == 2  # one engine for the test-context benchmarks, one for the model-window ones


def test_a_fixed_max_model_len_loads_one_engine_for_every_context():
    # vLLM compiles and captures per max_model_len: sized per context, a model loads once per context;
    # the engine arg max_model_len fixes the plan, so one load serves them all
    from lcplugin.config.session import Case, LcSession
    from lcplugin.config.settings import Settings
    from lcplugin.plugin.runner import engine_config

    from .conftest import REPO

    def keys(*engine_args: tuple[str, object]) -> set[str]:
        session = LcSession(Settings(engine="vllm", engine_args=engine_args, models="llama-3.1-8b-instruct"), REPO)
        spec = session.selected[0]
        return {engine_config(Case(b, spec, c), session).key() for c in (8192, 32768, 131072)
                for b in ("longbench_v2", "pg19")}

    assert len(keys()) == 3  # sized to each context's window
    fixed = keys(("max_model_len", 131072))
    assert len(fixed) == 1
