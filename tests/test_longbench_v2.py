"""LongBench-v2 protocol: extraction, template, and prompt building on the real data and tokenizer."""

from __future__ import annotations

import json

import pytest

from lcplugin.benchmarks.longbench_v2 import (
    TEMPLATE_0SHOT,
    extract_answer,
    fill,
    load_file,
    official_buckets,
)
from lcplugin.benchmarks.truncation import PromptBuilder, middle_truncate
from lcplugin.errors import DataError

from .conftest import shared


@pytest.mark.parametrize(("response", "pred"), [
    ("The correct answer is (B)", "B"),
    ("**The correct answer is (C)**", "C"),
    ("The correct answer is D.", "D"),
    ("The correct answer is (A) ... The correct answer is (B)", "A"),  # first match wins
    ("I think (B)", None),  # no lenient fallback
    ("the correct answer is (B)", None),  # case-sensitive
    ("The correct answer is (E)", None),
    ("The correct answer is *(*B*)*", "B"),  # stars removed first
    ("The correct answer is B) because (C)", "B"),  # bare form when the parenthesised one is absent
])
def test_official_extractor(response, pred):
    assert extract_answer(response) == pred


def test_fill_strips_and_substitutes_every_field():
    item = {"context": "  doc  ", "question": " q? ", "choice_A": " a ", "choice_B": "b", "choice_C": "c",
            "choice_D": "d\n"}
    text = fill(TEMPLATE_0SHOT, item)
    assert "<text>\ndoc\n</text>" in text and "question: q?\n" in text and "(A) a\n(B) b\n(C) c\n(D) d\n\n" in text
    assert "$" not in text and not text.endswith("\n")


def test_buckets_follow_result_py():
    rows = [{"correct": True, "difficulty": "easy", "length": "short"},
            {"correct": False, "difficulty": "hard", "length": "long"},
            {"correct": True, "difficulty": "hard", "length": "medium"}]
    b = official_buckets(rows)
    assert b == {"overall": 66.7, "easy": 100.0, "hard": 50.0, "short": 100.0, "medium": 100.0, "long": 0.0}


def test_middle_truncate_is_the_official_slice():
    ids = list(range(10))
    assert middle_truncate(ids, 7) == ids[:3] + ids[-4:]  # -7//2 == -4: the tail keeps one more
    assert middle_truncate(ids, 6) == ids[:3] + ids[-3:]
    assert middle_truncate(ids, 20) == ids


def test_item_missing_a_field_is_named_by_line(tmp_path):
    good = {"_id": "x", "question": "q", "choice_A": "a", "choice_B": "b", "choice_C": "c", "choice_D": "d",
            "answer": "A", "context": "ctx", "difficulty": "easy", "length": "short"}
    bad = dict(good, _id="y")
    del bad["choice_C"]
    path = tmp_path / "lb.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"lb\.jsonl:2: item lacks field\(s\) 'choice_C'"):
        load_file(path)


def test_corrupt_jsonl_line_is_named(tmp_path):
    path = tmp_path / "lb.jsonl"
    path.write_text('{"_id": "x"\n')
    with pytest.raises(DataError, match=r"lb\.jsonl:1: not valid JSON"):
        load_file(path)


@pytest.fixture(scope="module")
def llama_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(shared("tokenizers", "llama3.1"))


@pytest.fixture(scope="module")
def sample18():
    return load_file(shared("longbench_v2", "sample18.jsonl"))


@pytest.fixture(scope="module")
def sample18_ids(llama_tokenizer, sample18):
    """Each filled prompt tokenized once (the official default-special-tokens encode)."""
    out = {}
    for item in sample18:
        filled = fill(TEMPLATE_0SHOT, item.fields)
        out[item.id] = (filled, llama_tokenizer.encode(filled, add_special_tokens=False))
    return out


@pytest.mark.parametrize("ctx", [8192, 32768, 131072])
def test_real_prompts_fit_and_keep_head_and_question(llama_tokenizer, sample18, sample18_ids, ctx):
    assert len(sample18) == 18
    builder = PromptBuilder(llama_tokenizer, ctx, 128, "auto")
    assert builder.chat and builder.overhead > 20  # Llama-3's header with its date lines, measured
    head = TEMPLATE_0SHOT.split("$DOC$")[0]
    truncated = 0
    for item in sample18:
        filled, ids = sample18_ids[item.id]
        tail = filled[filled.index("</text>\n\nWhat is the correct answer"):]
        built = builder.build(filled, ids, want_text=True)
        assert len(built.ids) <= ctx - 128, item.id
        assert built.ids[0] == llama_tokenizer.bos_token_id
        body = built.text
        assert head in body, item.id
        assert body.endswith(tail + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"), item.id
        assert llama_tokenizer.decode(built.ids) == built.text
        assert list(built.ids) == llama_tokenizer.encode(built.text, add_special_tokens=False)  # splice is exact
        truncated += built.truncated
    # every sample18 context exceeds 8k tokens; at 128k the short ones fit whole
    if ctx == 8192:
        assert truncated == 18
    if ctx == 131072:
        assert 0 < truncated < 18


@pytest.mark.parametrize("name", ["qwen2", "gpt-neox-20b", "mistral-v3"])
def test_spliced_prompts_equal_the_literal_protocol(sample18, name):
    """Fast path (token ids cut and spliced) == the official steps (decode, template, re-encode)."""
    from transformers import AutoTokenizer

    from lcplugin.benchmarks import truncation

    tok = AutoTokenizer.from_pretrained(shared("tokenizers", name))
    truncation.forget_splice_checks()
    for ctx in (8192, 32768):
        builder = PromptBuilder(tok, ctx, 128, "auto")
        for item in sample18[:6]:
            filled = fill(TEMPLATE_0SHOT, item.fields)
            built = builder.build(filled, tok.encode(filled, add_special_tokens=False), want_text=True)
            text, ids, truncated = builder.official(filled)
            assert (list(built.ids), built.text, built.truncated) == (ids, text, truncated), (name, ctx, item.id)
            assert len(ids) <= ctx - 128
    key = next(iter(truncation._SPLICE_OK))
    # SentencePiece with a prepended space cannot be spliced: it must have fallen back to the literal path
    assert truncation._SPLICE_OK[key] is (name != "mistral-v3")


def test_503_question_file_counts_by_the_datasets_own_labels():
    import json as _json
    import subprocess
    import sys

    from .conftest import REPO

    path = shared("longbench_v2", "questions_503.jsonl")
    out = subprocess.run([sys.executable, "-m", "lcplugin", "stats", str(path)], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    counts = _json.loads(out.stdout)
    assert counts["n"] == 503
    assert counts["difficulty"] == {"easy": 192, "hard": 311}
    assert counts["length"] == {"short": 180, "medium": 215, "long": 108}
    assert counts["answer"] == {"A": 96, "B": 127, "C": 148, "D": 132}
    # the suite's own selection uses the same labels (no-context mode needs no context field)
    hard_short = load_file(path, need_context=False, select=(("difficulty", ("hard",)), ("length", ("short",))))
    assert len(hard_short) == sum(1 for line in path.read_text().splitlines()
                                  if '"difficulty": "hard"' in line and '"length": "short"' in line)


def test_official_budget_at_128k_keeps_120000_tokens_of_the_filled_prompt(llama_tokenizer, sample18, sample18_ids):
    """--lc-budget official: max_len = 120,000 at 128k (the official pred.py's value for 128k models).
    max_len bounds the filled prompt's ids (BOS included) before the chat template: the model then
    reads at most max_len + the template's overhead tokens."""
    from lcplugin.benchmarks.truncation import official_max_len

    ctx = 131072
    official = PromptBuilder(llama_tokenizer, ctx, 128, "auto", max_len=official_max_len(ctx))
    context = PromptBuilder(llama_tokenizer, ctx, 128, "auto")
    assert official.max_len == 120000
    assert context.max_len == ctx - 128 - context.overhead  # the default is unchanged
    cut = 0
    for item in sample18:
        filled, ids = sample18_ids[item.id]
        built = official.build(filled, ids)
        assert len(built.ids) <= 120000 + official.overhead, item.id
        if built.truncated:
            cut += 1
            assert len(built.ids) >= 120000 + official.overhead - 2, item.id  # BOS dropped, seams
            assert list(built.ids) == official.official(filled)[1], item.id  # the literal protocol
            assert len(context.build(filled, ids).ids) > ctx - 128 - 10, item.id  # the default keeps ~130.9k
    assert cut > 0
