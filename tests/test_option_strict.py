"""--lc-strict: a session in which no lcplugin test ran (all skipped, or none selected) fails, so a
CI runner without a GPU or without weights cannot pass green."""

from __future__ import annotations

from pathlib import Path

import pytest

# Imported once here: an in-process run drops the modules it imported, and the next run's fresh
# import of torch (which the run folder's device probe does) crashes the interpreter.
import torch  # noqa: F401

import lcplugin

pytest_plugins = ["pytester"]

TESTS = """
import pytest

@pytest.mark.lc_benchmark("longbench_v2")
def test_lb2(lc_case, lc_run):
    lc_run(lc_case)

def test_plain():
    pass
"""


def run(pytester: pytest.Pytester, *args: str, subprocess: bool = False) -> pytest.RunResult:
    """In a subprocess where an engine runs (it imports transformers and more into this process)."""
    pytester.makepyfile(test_lb2=TESTS)
    runner = pytester.runpytest_subprocess if subprocess else pytester.runpytest
    return runner("-p", "no:cacheprovider", "-rs", "--lc-results", str(pytester.path / "results"),
                              "--lc-baselines", str(pytester.path / "baselines"), "--lc-models", "tiny-llama",
                              *args)


def skipped_8k(pytester: pytest.Pytester) -> tuple[str, ...]:
    """``--lc-ctx 8k`` past a hard limit of 4k (a user spec in place of the built-in tiny-llama, whose 4k is
    a trained window it runs past): skipped, as a GPU model is on a CPU runner."""
    specs = pytester.mkdir("specs")
    builtin = (Path(lcplugin.__file__).parent / "specs" / "tiny-llama.toml").read_text()
    (specs / "tiny-llama.toml").write_text(builtin + 'hard_limit = "4k"\n')
    return ("--lc-ctx", "8k", "--lc-specs", str(specs))


def test_all_lcplugin_tests_skipped_fails_the_session(pytester: pytest.Pytester) -> None:
    args = skipped_8k(pytester)
    plain = run(pytester, *args)
    plain.assert_outcomes(passed=1, skipped=1)
    assert plain.ret == pytest.ExitCode.OK  # without --lc-strict a skip is not a failure
    strict = run(pytester, *args, "--lc-strict")
    strict.assert_outcomes(passed=1, skipped=1)
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    strict.stdout.fnmatch_lines(["lcplugin --lc-strict: no lcplugin test ran (1 selected, all skipped)*"])


def test_no_lcplugin_test_selected_fails_the_session(pytester: pytest.Pytester) -> None:
    strict = run(pytester, "--lc-ctx", "1k", "-k", "plain", "--lc-strict")
    strict.assert_outcomes(passed=1, deselected=1)
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    strict.stdout.fnmatch_lines(["lcplugin --lc-strict: no lcplugin test ran (none selected)*"])


def test_collect_only_is_not_judged(pytester: pytest.Pytester) -> None:
    assert run(pytester, "--lc-ctx", "1k", "--collect-only", "--lc-strict").ret == pytest.ExitCode.OK


def test_under_xdist_the_controller_sees_the_skips(pytester: pytest.Pytester) -> None:
    strict = run(pytester, *skipped_8k(pytester), "--lc-strict", "-n", "2")
    strict.assert_outcomes(passed=1, skipped=1)
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    strict.stdout.fnmatch_lines(["lcplugin --lc-strict: no lcplugin test ran (1 selected, all skipped)*"])


@pytest.mark.slow
def test_a_session_where_one_ran_passes(pytester: pytest.Pytester) -> None:
    *_, specs = skipped_8k(pytester)
    strict = run(pytester, "--lc-ctx", "1k,8k", "--lc-specs", specs, "--lc-limit", "1", "--lc-strict", subprocess=True)
    strict.assert_outcomes(passed=2, skipped=1)
    assert strict.ret == pytest.ExitCode.OK
    assert "--lc-strict" not in strict.stdout.str()
