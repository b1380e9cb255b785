"""``--lc-budget official|context``: LongBench-v2's prompt budget, official (pred.py's 120,000 at 128k,
scaled below) or the context arithmetic (the default)."""

from __future__ import annotations

import json

import pytest

from lcplugin.benchmarks.longbench_v2 import TEMPLATE_0SHOT, fill
from lcplugin.benchmarks.synthetic import synthetic_longbench
from lcplugin.benchmarks.truncation import PromptBuilder, official_max_len
from lcplugin.models.tiny import build_tokenizer

from .conftest import REPO, only_run_summary

pytest_plugins = ["pytester"]


def test_official_max_len_is_120000_at_128k_and_proportional_below():
    assert official_max_len(131072) == 120000
    assert [official_max_len(c) for c in (65536, 8192, 2048)] == [60000, 7500, 1875]


def test_builder_cuts_to_the_official_budget_where_it_binds():
    tok = build_tokenizer()
    text = fill(TEMPLATE_0SHOT, max(synthetic_longbench(8), key=lambda r: len(r["context"])))
    official = PromptBuilder(tok, 4096, 128, "auto", max_len=official_max_len(4096))
    context = PromptBuilder(tok, 4096, 128, "auto")
    assert (official.max_len, context.max_len) == (3750, 4096 - 128 - context.overhead)
    built = official.build(text)
    assert built.truncated and len(built.ids) <= 3750 + official.overhead
    assert list(built.ids) == official.official(text)[1]  # the literal protocol with max_len 3750
    assert len(context.build(text).ids) > 3750 + context.overhead
    # below ~2k the context binds first: the official cap never pushes a prompt past the context
    small = PromptBuilder(tok, 1024, 128, "auto", max_len=official_max_len(1024))
    assert small.max_len == PromptBuilder(tok, 1024, 128, "auto").max_len


def _records(results, ctx):
    path = next(results.glob(f"*/records/longbench_v2/tiny-llama-{ctx}.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_budget_option_runs_records_and_shows_it(run_benches, tmp_path):
    args = ("--lc-models", "tiny-llama", "--lc-ctx", "4k", "--lc-limit", "4", "-k", "longbench_v2",
            "--lc-sampling", "greedy")
    out = run_benches(*args, "--lc-budget", "official")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    summary = only_run_summary(run_benches.results)
    assert summary["run"]["settings"]["bench"]["budget"] == "official"
    test = summary["tests"][0]
    assert test["budget"] == "official" and test["protocol"]["budget"] == "official"
    assert "longbench_v2[tiny-llama-4k] budget=official" in out.stdout
    report = next(run_benches.results.glob("*/report/report.md")).read_text()
    assert "| budget |" in report and "| official |" in report
    cut = [r["prompt_tokens"] for r in _records(run_benches.results, 4096) if r["truncated"]]
    assert cut and max(cut) <= 3750 + 7  # the tiny chat template's overhead is 7 tokens

    plain = run_benches(*args, "--lc-results", str(tmp_path / "plain"))
    assert plain.returncode == 0, plain.stdout[-3000:]
    default = only_run_summary(tmp_path / "plain")
    assert default["tests"][0]["budget"] == "context"
    assert default["run"]["settings_hash"] != summary["run"]["settings_hash"]
    cut = [r["prompt_tokens"] for r in _records(tmp_path / "plain", 4096) if r["truncated"]]
    assert cut and max(cut) > 3750 + 7 and max(cut) <= 4096 - 128


def test_budget_is_validated(pytester):
    out = pytester.runpytest(str(REPO / "benches"), "--collect-only", "-q", "-p", "no:cacheprovider",
                             "--lc-budget", "120k")  # in this process: a usage error starts no engine
    err = out.stderr.str()
    assert out.ret == pytest.ExitCode.USAGE_ERROR and "--lc-budget" in err and "invalid choice" in err
