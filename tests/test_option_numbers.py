"""Numbers and context lengths on the command line are checked when parsed: a value out of range is
pytest's own usage error (exit 4) naming the option, the value and an example of a good one, before
collection, rather than a session that runs with it (``--lc-pg19-windows 0`` read one window per
book, ``--lc-progress-every -5`` printed a line at every item)."""

from __future__ import annotations

import pytest

from lcplugin.plugin.hooks import lc_session_of

from .test_option_usage import LB2, run  # one pytester project for every option test

pytest_plugins = ["pytester"]


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--lc-limit", "0", "'0' is not a whole number >= 1; give e.g. --lc-limit 8"),
    ("--lc-limit", "all", "'all' is not a whole number >= 1; give e.g. --lc-limit 8"),
    ("--lc-alpha", "1", "'1' is not a number between 0 and 1; give e.g. --lc-alpha 0.05"),
    ("--lc-alpha", "0", "'0' is not a number between 0 and 1; give e.g. --lc-alpha 0.05"),
    ("--lc-alpha", "nan", "'nan' is not a number between 0 and 1; give e.g. --lc-alpha 0.05"),
    ("--lc-progress-every", "-5", "'-5' is not a number >= 0; give e.g. --lc-progress-every 60"),
    ("--lc-pg19-windows", "0", "'0' is not a whole number >= 1; give e.g. --lc-pg19-windows 10"),
    ("--lc-pg19-score-last", "1.5", "'1.5' is not a whole number >= 1; give e.g. --lc-pg19-score-last 100"),
    ("--lc-ctx", "8q", "context length '8q' does not parse: write a number of tokens (32768) or thousands of "
                       "1024 tokens (32k), or millions of 1024² tokens (1m)"),
    ("--lc-ctx", ",", "',' names no context length (example: --lc-ctx 8k,32k)"),
], ids=["limit-zero", "limit-word", "alpha-one", "alpha-zero", "alpha-nan", "progress-negative", "pg19-windows",
        "pg19-score-last", "ctx-unit", "ctx-empty-list"])
def test_a_bad_value_is_a_usage_error_when_parsed(pytester: pytest.Pytester, option: str, value: str,
                                                   message: str) -> None:
    result = run(pytester, option, value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*: error: argument {option}: {message}"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_good_values_reach_the_settings(pytester: pytest.Pytester) -> None:
    """The parsed values are what the session uses: contexts in order, repeats dropped; an empty
    ``--lc-ctx`` (a script's unset variable) is each spec's own contexts."""
    args = ("--lc-limit", "3", "--lc-alpha", "0.01", "--lc-progress-every", "0", "--lc-pg19-windows", "2",
            "--lc-pg19-score-last", "50")
    pytester.makepyfile(test_lb2=LB2)
    reprec = pytester.inline_run("--collect-only", "-p", "no:cacheprovider", "--lc-models", "tiny-llama",
                                 "--lc-ctx", "2k,1k,2048", *args)
    assert reprec.ret == pytest.ExitCode.OK
    (call,) = reprec.getcalls("pytest_collection_finish")
    assert [item.nodeid for item in call.session.items] == ["test_lb2.py::test_lb2[tiny-llama-1k]",
                                                            "test_lb2.py::test_lb2[tiny-llama-2k]"]
    settings = lc_session_of(call.session.config).settings
    assert settings.ctx == (2048, 1024) and settings.limit == 3 and settings.alpha == 0.01
    assert (settings.bench.pg19_windows, settings.bench.pg19_score_last) == (2, 50)
    assert call.session.config.getoption("--lc-progress-every") == 0.0
    default = run(pytester, "--lc-ctx", "")
    assert default.ret == pytest.ExitCode.OK, default.stderr.str()
