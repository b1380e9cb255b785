"""Typos are usage errors: an option value the plugin does not know stops the session at configure
time (exit 4) with one line naming the culprit and what is accepted, instead of being ignored."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

LB2 = """
import pytest

@pytest.mark.lc_benchmark("longbench_v2")
def test_lb2(lc_case, lc_run):
    lc_run(lc_case)
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_lb2=LB2)
    return pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q",
                              "--lc-results", str(pytester.path / "results"),
                              "--lc-baselines", str(pytester.path / "baselines"),
                              "--lc-models", "tiny-llama", "--lc-ctx", "1k", *args)


@pytest.mark.parametrize(("args", "line"), [
    (("--lc-engine", "vlm"), "ERROR: --lc-engine 'vlm': unknown engine; accepted: *hf, mamba_ssm, vllm"),
    (("--lc-data", "longbench=lb2.jsonl"),
     "ERROR: --lc-data 'longbench=lb2.jsonl': unknown data key 'longbench'; accepted: ada_leval, longbench_v2, pg19"),
    (("--lc-data", "ada_leval_tsort=ada/"),
     "ERROR: --lc-data 'ada_leval_tsort=ada/': unknown data key 'ada_leval_tsort'; accepted: ada_leval, *"),
    (("--lc-efficiency-tolerance", "decode_tok_s=10"),
     "ERROR: --lc-efficiency-tolerance 'decode_tok_s=10' only acts with --lc-update-baselines*"),
], ids=["engine", "data-key", "data-key-of-a-task", "tolerance-alone"])
def test_typo_is_a_usage_error(pytester: pytest.Pytester, args: tuple[str, ...], line: str) -> None:
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([line])
    assert [ln for ln in result.stderr.lines if ln.startswith("ERROR:")] == [result.stderr.lines[0]]
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize("args", [
    ("--lc-engine", "hf"),
    ("--lc-data", "longbench_v2=lb2.jsonl", "--lc-data", "ada_leval=ada/", "--lc-data", "pg19=books/"),
    ("--lc-efficiency-tolerance", "decode_tok_s=10", "--lc-update-baselines"),
], ids=["engine", "data-keys", "tolerance-with-update"])
def test_valid_values_still_collect(pytester: pytest.Pytester, args: tuple[str, ...]) -> None:
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    result.stdout.fnmatch_lines(["test_lb2.py::test_lb2?tiny-llama-1k?"])
