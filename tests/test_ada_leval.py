"""Ada-LEval: the official 1k BestAnswer set, prompt construction, and the official extraction rules."""

from __future__ import annotations

import json

import pytest

from lcplugin.benchmarks.ada_leval import (
    META,
    TAIL,
    BestAnswer,
    TSort,
    bestanswer_prompt,
    extract_bestanswer,
    extract_tsort,
    official_count,
)
from lcplugin.benchmarks.base import DataSource

from .conftest import shared
from .suite_runs import DEFAULT


@pytest.mark.parametrize(("response", "n", "pred"), [
    ("Answer: A10", 12, "A10"),  # A10 beats A1 although "A1" occurs inside it
    ("A2 or maybe A7", 8, "A7"),  # the highest index present wins
    ("Answer: 3", 5, "A3"),  # digits when no A<i> occurs
    ("answers 2 and 4", 5, "A4"),
    ("I do not know", 5, None),
    ("A12", 10, "A1"),  # A12 is not a candidate for 10 answers; A1 occurs in it
])
def test_bestanswer_extraction(response, n, pred):
    assert extract_bestanswer(response, n) == pred


@pytest.mark.parametrize(("response", "pred"), [
    ("Answer: [4, 1, 3, 2]", [4, 1, 3, 2]),
    ("Answer: [4, 1, 3, 2] \nAnswer: [1, 2, 3, 4]", [4, 1, 3, 2]),  # text between the first two markers
    ("The order is 2 then 1, 3 and 4", [2, 1, 3, 4]),  # unique permutation as a subsequence
    ("1 2 3 4 1", None),  # two permutations fit: no answer
    ("no idea", None),
])
def test_tsort_extraction(response, pred):
    assert extract_tsort(response) == pred


def test_prompt_is_built_as_the_official_code_builds_it():
    item = {"question": "Q?", "all_answers": ["x", "y"]}
    expected = (META + "The question is given below.\nQ?\n\nPossible answers are given below.\n"
                "A1:\n\nx\n\nA2:\n\ny\n\n" + TAIL)
    assert bestanswer_prompt(item) == expected
    assert META.startswith("\nYou are an AI assistant.") and "sample. \n\nHowever" in META
    assert TAIL.endswith("MOST helpful answer.\n")


def test_official_item_counts():
    assert [official_count(s) for s in ("1k", "16k", "32k", "128k")] == [1000, 1000, 200, 200]


def test_real_1k_set_counts_and_random_baseline():
    folder = shared("ada_leval")
    bench = BestAnswer()
    source = DataSource(kind="file", location=str(folder))
    assert bench.skip_reason(source, 1024) is None
    assert "no setting 2k" in bench.skip_reason(source, 2048)
    items = bench.load_items(source, 1024, None)
    assert len(items) == 1000 and len({i.id for i in items}) == 1000
    records = [{"chance": 1 / i.meta["num_choice"], "ctx": 1024} for i in items]
    assert round(100 * bench.aggregate(records)["random_baseline"], 1) == 26.2
    raw = json.loads((folder / "stackselect_1k.json").read_text())[0]
    assert bench.prompt_text(items[0]) == bestanswer_prompt(raw)
    assert bench.score(items[0], f"Answer: {raw['answer']}")["correct"]


def test_tsort_reports_a_missing_setting():
    reason = TSort().skip_reason(DataSource(kind="file", location=str(shared("ada_leval"))), 8192)
    assert "no setting 8k" in reason and "textsort_8k.json" in reason


def test_each_context_runs_its_own_items(shared_run):
    """Ada-LEval reads another setting (file, synthetic size) per context, and PG-19 cuts windows of the
    context's length: a test past a model's first context must not run the first context's items."""
    from statistics import mean

    run = shared_run(DEFAULT)  # both tiny models at 1k and 2k, 3 items per test
    for model in ("tiny-llama", "tiny-mamba2"):
        for bench in ("ada_leval_bestanswer", "ada_leval_tsort", "pg19"):
            tokens = {}
            for ctx in (1024, 2048):
                rows = run.records(bench, model, ctx)
                assert rows and all(not r.get("skipped") for r in rows), (model, bench, ctx)
                tokens[ctx] = [r["prompt_tokens"] for r in rows]
            # the i-th item of each setting comes from the same seed: each is longer at 2k
            assert all(b > a for a, b in zip(tokens[1024], tokens[2048], strict=True)), (model, bench, tokens)
            assert mean(tokens[2048]) > 1.25 * mean(tokens[1024]), (model, bench, tokens)
