"""PG-19 perplexity versus context length (last-K-tokens-at-context-L)."""

import pytest

pytestmark = pytest.mark.lc_benchmark("pg19")


def test_pg19(lc_case, lc_run):
    lc_run(lc_case)
