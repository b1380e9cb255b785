"""Typos are usage errors: an option value the plugin does not know stops the session when the command
line is parsed (exit 4, pytest's own usage error, before collection) with one line naming the option,
the value and what is accepted, instead of being ignored. Options that only act together are checked
at configure time, with the same exit status."""

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
    (("--lc-engine", "vlm"), "*: error: argument --lc-engine: unknown engine 'vlm'; accepted: *hf, mamba_ssm, vllm (*"),
    (("--lc-data", "longbench=lb2.jsonl"), "*: error: argument --lc-data: 'longbench=lb2.jsonl': unknown data key "
                                           "'longbench'; accepted: ada_leval, longbench_v2, pg19*"),
    (("--lc-data", "longbench_v2=lb2.jsonl", "--lc-data", "ada_leval_tsort=ada/"),
     "*: error: argument --lc-data: 'ada_leval_tsort=ada/': unknown data key 'ada_leval_tsort'; accepted: ada_leval, *"),
    (("--lc-data", "longbench_v2"), "*: error: argument --lc-data: 'longbench_v2': write BENCH=PATH, e.g. *"),
    (("--lc-select", "difficulty:hard"), "*: error: argument --lc-select: 'difficulty:hard': write FIELD=V1,V2*"),
    (("--lc-efficiency-tolerance", "speed=3"),
     "*: error: argument --lc-efficiency-tolerance: 'speed=3': write FIGURE=PERCENT,... with FIGURE one of *"),
    (("--lc-efficiency-tolerance", "decode_tok_s=ten"),
     "*: error: argument --lc-efficiency-tolerance: 'ten' is not a percentage"),
], ids=["engine", "data-key", "data-key-of-a-task", "data-without-path", "select", "tolerance-figure",
        "tolerance-percent"])
def test_typo_is_a_usage_error_when_parsed(pytester: pytest.Pytester, args: tuple[str, ...], line: str) -> None:
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([line])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_options_that_act_together_are_checked_at_configure(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--lc-efficiency-tolerance", "decode_tok_s=10")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --lc-efficiency-tolerance 'decode_tok_s=10' only acts with --lc-update-baselines*"])
    assert [ln for ln in result.stderr.lines if ln.startswith("ERROR:")] == [result.stderr.lines[0]]
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize("args", [
    ("--lc-engine", "hf"),
    ("--lc-data", "longbench_v2=lb2.jsonl", "--lc-data", "ada_leval=ada/", "--lc-data", "pg19=books/"),
    ("--lc-efficiency-tolerance", "decode_tok_s=10", "--lc-update-baselines"),
    ("--lc-select", "difficulty=hard;length=short,medium"),
], ids=["engine", "data-keys", "tolerance-with-update", "select"])
def test_valid_values_still_collect(pytester: pytest.Pytester, args: tuple[str, ...]) -> None:
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    result.stdout.fnmatch_lines(["test_lb2.py::test_lb2?tiny-llama-1k?"])
