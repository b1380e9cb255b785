"""LongBench-v2, official 0-shot protocol, on every model x context length."""

import pytest

pytestmark = pytest.mark.lc_benchmark("longbench_v2")


def test_longbench_v2(lc_case, lc_run):
    lc_run(lc_case)
