"""``--lc-engine-arg KEY=VALUE``: reaches the engine for every selected model; a malformed pair is a
usage error when parsed, a key the engine does not read one at configure time naming the keys it does."""

from __future__ import annotations

import json

import pytest

from lcplugin.config.settings import parse_engine_arg

pytest_plugins = ["pytester"]

BENCH = """
import pytest
pytestmark = pytest.mark.lc_benchmark("longbench_v2")

def test_longbench_v2(lc_case, lc_run):
    lc_run(lc_case)
"""


@pytest.fixture
def bench(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_lb2=BENCH)
    return pytester


def test_values_are_toml_and_bare_words_are_strings() -> None:
    assert [parse_engine_arg(v) for v in ["prefill_chunk=300", "compile=false", "cache=static", 'x="a b"']] == [
        ("prefill_chunk", 300), ("compile", False), ("cache", "static"), ("x", "a b")]


def test_a_malformed_pair_is_a_usage_error(bench: pytest.Pytester) -> None:
    result = bench.runpytest("--lc-models", "tiny-llama", "--lc-engine-arg", "prefill_chunk")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    # refused by pytest's parser (argparse's "argument OPTION:"), before any spec is read
    result.stderr.fnmatch_lines(["*: error: argument --lc-engine-arg: 'prefill_chunk': write KEY=VALUE, e.g. *"])


def test_a_key_the_engine_does_not_read_is_a_usage_error(bench: pytest.Pytester) -> None:
    result = bench.runpytest("--lc-models", "tiny-llama", "--lc-engine-arg", "prefil_chunk=300")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*engine 'hf' does not accept 'prefil_chunk'; it accepts*prefill_chunk*"])


@pytest.mark.slow
def test_the_value_reaches_the_engine_and_keys_the_run(bench: pytest.Pytester) -> None:
    args = ("--lc-models", "tiny-llama", "--lc-ctx", "1k", "--lc-limit", "4", "--lc-sampling", "greedy",
            "--lc-results", "res", "--lc-baselines", "bl", "-p", "no:cacheprovider")
    # in a subprocess: pytester's in-process runs unload the modules they import, and torch cannot load twice
    bench.runpytest_subprocess(*args).assert_outcomes(passed=1)
    bench.runpytest_subprocess(*args, "--lc-engine-arg", "max_batch_size=4").assert_outcomes(passed=1)
    runs = sorted((bench.path / "res").iterdir())
    assert len(runs) == 2  # another engine argument is another run, never a resumed one
    batches = []
    for run in runs:
        records = [json.loads(line) for line in (run / "records/longbench_v2/tiny-llama-1024.jsonl").open()]
        batches.append(max(r["batch_size"] for r in records) if "batch_size" in records[0]
                       else len({r["batch_key"] for r in records}))
        meta = json.loads((run / "summary.json").read_text())
    assert meta["run"]["settings"]["engine_args"] == [["max_batch_size", 4]]
    assert batches[0] != batches[1]
