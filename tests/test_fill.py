"""Prompts that fill the cell (issue 16, item 5): past 128k a LongBench-v2 test takes, by default, only
items whose whole prompt reaches 90 % of its context and says how many; ``--lc-fill any|full`` chooses.
A PG-19 context no book reaches is skipped with the reason and the books' lengths."""

from __future__ import annotations

import pytest

from lcplugin.benchmarks.base import BenchOptions
from lcplugin.benchmarks.longbench_v2 import fill_rule
from lcplugin.benchmarks.pg19 import lengths


@pytest.mark.parametrize(("option", "mode", "ctx", "rule"), [
    ("auto", "0shot", 131072, "any"), ("auto", "0shot", 262144, "full"), ("auto", "cot", 1048576, "full"),
    ("auto", "nocontext", 1048576, "any"), ("any", "0shot", 1048576, "any"), ("full", "0shot", 2048, "full")])
def test_fill_rule(option, mode, ctx, rule):
    assert fill_rule(option, mode, ctx) == rule


def test_results_made_under_the_official_rule_keep_their_keys():
    # committed baselines (up to 128k, the official rule) stay comparable: the rule enters a result's
    # inputs only where it leaves items out
    from lcplugin.config.inputs import result_inputs
    from lcplugin.config.session import Case, LcSession
    from lcplugin.config.settings import Settings

    from .conftest import REPO

    session = LcSession(Settings(models="tiny-llama"), REPO)
    spec = session.selected[0]
    assert "fill" not in result_inputs(Case("longbench_v2", spec, 131072), session)
    assert result_inputs(Case("longbench_v2", spec, 262144), session)["fill"] == "full"
    full = LcSession(Settings(models="tiny-llama", bench=BenchOptions(fill="full")), REPO)
    assert result_inputs(Case("longbench_v2", spec, 2048), full)["fill"] == "full"
    assert "fill" not in result_inputs(Case("pg19", spec, 262144), session)


def test_book_lengths_read_at_a_glance():
    assert lengths({"a": 95112, "b": 120000}) == "2 book(s) of 120,000, 95,112 tokens"
    many = {str(i): 1000 * i for i in range(1, 101)}
    assert lengths(many) == "100 books, longest 100,000, 99,000, 98,000 tokens, median 50,000"


@pytest.mark.slow
def test_full_prompts_only_and_a_window_no_book_reaches(run_benches):
    out = run_benches("-rs", "--lc-models", "tiny-llama", "--lc-ctx", "2k,32k", "--lc-limit", "8", "--lc-fill", "full",
                      "-k", "longbench_v2 or pg19 and 32k")
    out.assert_outcomes(passed=2, skipped=1)
    assert ("pg19 at 32,768 tokens: no book reaches it (3 book(s) of " in out.stdout
            and "pass --lc-data pg19=DIR with books of at least 32,768 tokens" in out.stdout)
    tests = {t["ctx"]: t for t in out.summary()["tests"]}
    assert set(tests) == {2048, 32768}  # the PG-19 test that no book reaches left no summary
    assert (tests[32768]["n"], tests[32768]["skipped_underfill"]) == (0, 8)  # no synthetic item fills 32k
    test = tests[2048]
    assert test["fill"] == "full" and test["skipped_underfill"] > 0 and test["n"] > 0
    assert test["n"] + test["skipped_underfill"] == 8
    kept = [r for r in out.records("longbench_v2", "tiny-llama", 2048) if not r.get("skipped")]
    assert all(r["original_tokens"] >= 0.9 * 2048 for r in kept)
    assert f"longbench_v2[tiny-llama-2k] budget=context fill=full({test['n']}/8)" in out.stdout
