"""RULER-style synthetic tasks, one test per task, on every model x context length (README: RULER)."""

import pytest


@pytest.mark.lc_benchmark("ruler_niah_single_1")
def test_ruler_niah_single_1(lc_case, lc_run):
    lc_run(lc_case)


@pytest.mark.lc_benchmark("ruler_niah_single_2")
def test_ruler_niah_single_2(lc_case, lc_run):
    lc_run(lc_case)


@pytest.mark.lc_benchmark("ruler_niah_single_3")
def test_ruler_niah_single_3(lc_case, lc_run):
    lc_run(lc_case)


@pytest.mark.lc_benchmark("ruler_niah_multikey_1")
def test_ruler_niah_multikey_1(lc_case, lc_run):
    lc_run(lc_case)


@pytest.mark.lc_benchmark("ruler_niah_multikey_2")
def test_ruler_niah_multikey_2(lc_case, lc_run):
    lc_run(lc_case)


@pytest.mark.lc_benchmark("ruler_niah_multikey_3")
def test_ruler_niah_multikey_3(lc_case, lc_run):
    lc_run(lc_case)


@pytest.mark.lc_benchmark("ruler_niah_multivalue")
def test_ruler_niah_multivalue(lc_case, lc_run):
    lc_run(lc_case)


@pytest.mark.lc_benchmark("ruler_niah_multiquery")
def test_ruler_niah_multiquery(lc_case, lc_run):
    lc_run(lc_case)


@pytest.mark.lc_benchmark("ruler_vt")
def test_ruler_vt(lc_case, lc_run):
    lc_run(lc_case)


@pytest.mark.lc_benchmark("ruler_cwe")
def test_ruler_cwe(lc_case, lc_run):
    lc_run(lc_case)


@pytest.mark.lc_benchmark("ruler_fwe")
def test_ruler_fwe(lc_case, lc_run):
    lc_run(lc_case)


@pytest.mark.lc_benchmark("ruler_qa_1")
def test_ruler_qa_1(lc_case, lc_run):
    lc_run(lc_case)


@pytest.mark.lc_benchmark("ruler_qa_2")
def test_ruler_qa_2(lc_case, lc_run):
    lc_run(lc_case)
