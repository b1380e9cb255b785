"""Ada-LEval BestAnswer and TSort: the test at context Nk reads setting Nk."""

import pytest


@pytest.mark.lc_benchmark("ada_leval_bestanswer")
def test_ada_leval_bestanswer(lc_case, lc_run):
    lc_run(lc_case)


@pytest.mark.lc_benchmark("ada_leval_tsort")
def test_ada_leval_tsort(lc_case, lc_run):
    lc_run(lc_case)
