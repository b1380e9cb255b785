"""The shared ``pytest benches`` runs (tests/suite_runs.py) ran what they declare.

Many tests read one shared run; had its -k come to match nothing, or its models all to skip, they
would read an empty folder, and a test that loops over records would pass on nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .suite_runs import ALL, BenchRun, SharedRun, SharedRuns


@pytest.mark.parametrize("run", ALL, ids=lambda run: run.name)
def test_each_shared_run_ran_the_tests_it_declares(shared_run, run: SharedRun) -> None:
    done = shared_run(run)  # checks the declared outcomes
    assert done.returncode == 0, done.tail()
    assert done.outcomes()["passed"] == len(done.summary()["tests"]) > 0


def _runner(calls: list[tuple[str, ...]]) -> Callable[..., BenchRun]:
    def run(args: tuple[str, ...], folder: Path, env: object, **kwargs: object) -> BenchRun:
        """What pytest prints when a -k matches none of the benches."""
        calls.append(args)
        out = "collected 4 items / 4 deselected / 0 selected\n\n==== 4 deselected in 0.52s ====\n"
        return BenchRun(args, 5, out, "", folder / "results", folder / "baselines", 0.5)

    return run


def test_a_shared_run_that_ran_nothing_fails_every_reader(tmp_path: Path) -> None:
    calls: list[tuple[str, ...]] = []
    runs = SharedRuns(tmp_path, _runner(calls))
    typo = SharedRun("typo", ("-k", "longbench_v3"), {"passed": 1})
    for _ in range(2):
        with pytest.raises(AssertionError, match=r"shared run 'typo'.*\{'deselected': 4\}"):
            runs(typo)
    assert calls == [("-k", "longbench_v3")]  # run once, judged for each reader


def test_xdist_workers_share_one_run(tmp_path: Path) -> None:
    """Each pytest-xdist worker has its own session fixture: they meet on disk."""
    calls: list[tuple[str, ...]] = []
    declared = SharedRun("declared", ("-k", "longbench_v3"), {"passed": 0, "deselected": 4})
    first, second = SharedRuns(tmp_path, _runner(calls)), SharedRuns(tmp_path, _runner(calls))
    assert first(declared) == second(declared)
    assert calls == [("-k", "longbench_v3")]
