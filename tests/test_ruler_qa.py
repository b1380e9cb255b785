"""RULER's QA tasks (issue 17, item 1): SQuAD and HotpotQA documents given with --lc-data, read by RULER's
rules, filled to the context exactly, answered right by an oracle and wrong by anything else. The real
files are not shipped: small files in their layouts stand in."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from lcplugin.benchmarks import ruler_qa as rq
from lcplugin.benchmarks.base import DataSource, get_benchmark
from lcplugin.benchmarks.ruler import PromptMaker, build
from lcplugin.benchmarks.ruler_tasks import NEW_TOKENS

from .conftest import shared
from .test_ruler import TOKENIZERS, _run

FILLER = "The river bends past the old mill where the farmers trade grain."


def _fact(a: int, p: int) -> tuple[str, str, str]:
    name, code = f"item{a}x{p}", f"{(a * 7919 + p * 104729) % 900000 + 100000}"
    return name, code, f"{FILLER} The code of {name} is {code}. {FILLER}"


def write_squad(path: Path) -> Path:
    """A small file in SQuAD 2.0's layout: 8 articles of 3 paragraphs, one answerable and one unanswerable
    question each."""
    articles = []
    for a in range(8):
        paragraphs = []
        for p in range(3):
            name, code, text = _fact(a, p)
            paragraphs.append({"context": text, "qas": [
                {"question": f"What is the code of {name}?", "answers": [{"text": code}], "is_impossible": False},
                {"question": f"What is the colour of {name}?", "answers": [], "is_impossible": True}]})
        articles.append({"title": f"a{a}", "paragraphs": paragraphs})
    path.write_text(json.dumps({"version": "v2.0", "data": articles}))
    return path


def write_hotpot(path: Path) -> Path:
    """A small file in HotpotQA's layout: 12 questions of two context documents each."""
    rows = []
    for a in range(12):
        n1, c1, t1 = _fact(a, 1)
        rows.append({"question": f"What is the code of {n1}?", "answer": c1,
                     "context": [[f"Title {a} one", [t1]], [f"Title {a} two", [FILLER, " Bells ring."]]]})
    path.write_text(json.dumps(rows))
    return path


WRITERS = {"ruler_squad": write_squad, "ruler_hotpotqa": write_hotpot}  # by --lc-data key


@pytest.fixture(scope="module")
def squad(tmp_path_factory) -> Path:
    return write_squad(tmp_path_factory.mktemp("qa") / "dev-v2.0.json")


@pytest.fixture(scope="module")
def hotpot(tmp_path_factory) -> Path:
    return write_hotpot(tmp_path_factory.mktemp("qa") / "hotpot_dev_distractor_v1.json")


def test_the_readers_follow_rulers_rules(squad, hotpot):
    data = rq.read_squad(squad)
    assert len(data.docs) == 24 and list(data.docs) == sorted(data.docs)
    assert len(data.questions) == 24  # the unanswerable ones are left out
    q = data.questions[0]
    assert q.answers == (_fact(0, 0)[1],) and data.docs[q.gold[0]] == _fact(0, 0)[2]
    assert sorted(data.docs[i] for i in q.near) == sorted([_fact(0, 1)[2], _fact(0, 2)[2]])  # its article's others
    h = rq.read_hotpotqa(hotpot)
    assert len(h.questions) == 12 and all(len(x.gold) == 2 for x in h.questions)
    assert f"Title 0 one\n{_fact(0, 1)[2]}" in h.docs
    with pytest.raises(Exception, match="ruler_squad .*: not SQuAD's layout"):
        rq.read_squad(hotpot)


def oracle(text: str) -> str:
    name = re.search(r"Question: What is the code of (\w+)\?", text).group(1)
    return re.search(rf"The code of {name} is (\d+)\.", text).group(1)


def _qa_run(task: str, data: Path, tokenizer: Any, ctx: int, answer: Any) -> list[dict[str, Any]]:
    return _run(task, tokenizer, ctx, answer, source=DataSource(kind="file", location=str(data)))


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from lcplugin.models.tiny import build_tokenizer

    return build_tokenizer()


@pytest.mark.parametrize("task", ["qa_1", "qa_2"])
def test_an_oracle_scores_everything_and_a_wrong_engine_nothing(task, squad, hotpot, tiny_tokenizer):
    data = squad if task == "qa_1" else hotpot
    bench = get_benchmark(f"ruler_{task}")
    for ctx in (1024, 4096):
        right = _qa_run(task, data, tiny_tokenizer, ctx, oracle)
        assert all(r["correct"] and r["haystack"] == "documents" for r in right), right[0]
        summary = bench.aggregate(right)
        assert summary["ruler_score"] == 100.0 and set(summary["depth_accuracy"].values()) == {1.0}
        assert len(summary["depth_accuracy"]) == 10  # the gold document at every depth
        wrong = _qa_run(task, data, tiny_tokenizer, ctx, lambda text: "I do not know.")
        assert bench.aggregate(wrong)["ruler_score"] == 0
    item = bench.load_items(DataSource(kind="file", location=str(data)), 1024, 1)[0]  # string_match_part
    assert bench.score(item, f"it is {json.loads(item.gold)[0]} or so")["correct"]


def test_without_its_file_a_qa_task_skips_naming_the_key():
    for task, key in (("qa_1", "ruler_squad"), ("qa_2", "ruler_hotpotqa")):
        for kind in ("generated", "synthetic"):
            why = get_benchmark(f"ruler_{task}").skip_reason(DataSource(kind=kind, location=""), 1024)
            assert why is not None and f"--lc-data {key}=PATH" in why
        with pytest.raises(Exception, match=f"--lc-data {key}=PATH"):  # loading without it says the same
            get_benchmark(f"ruler_{task}").load_items(DataSource(kind="generated", location=""), 1024, 1)


@pytest.mark.parametrize("ctx", [1024, 8192])
def test_prompts_fill_the_context_exactly_in_rulers_format(ctx, squad, hotpot):
    from transformers import AutoTokenizer

    for name in TOKENIZERS:
        tok = AutoTokenizer.from_pretrained(str(shared("tokenizers", name)))
        maker = PromptMaker(tok)
        for task, path in (("qa_1", squad), ("qa_2", hotpot)):
            data = rq.qa_data(task, str(path))
            ids, draft, n, _ = build(tok, task, ctx, 3, maker=maker, qa_data=data)
            budget = ctx - NEW_TOKENS[task]
            assert ids == maker.literal_ids(draft, n), (name, task, ctx)
            assert len(ids) <= budget and budget - len(ids) < 150, (name, task, ctx, len(ids))
            text = tok.decode(ids)
            k = n + len(draft.inserts)
            assert "documents.\n\nDocument 1:\n" in text and f"Document {k}:\n" in text and f"Document {k + 1}:" not in text
            assert re.search(r"\n\nAnswer the question based on the given documents\. Only give me the answer and do not "
                             r"output any other words\.\n\nQuestion: What is the code of \w+\?", text), text[-300:]
            assert text.endswith(" Answer:") and oracle(text) == draft.answers[0]
