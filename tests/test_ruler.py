"""RULER: the scorer, an oracle that answers from the prompt (100 %) and a wrong one (0 %) on every task,
exact token counts with the real tokenizers, byte-identical prompts from one seed, and the suite run."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pytest

from lcplugin.benchmarks import ruler_tasks as rt
from lcplugin.benchmarks.base import BENCHMARKS, BenchOptions, DataSource, EvalSession, get_benchmark
from lcplugin.benchmarks.ruler import (
    PromptMaker,
    build,
    essay,
    postprocess,
    state,
    string_match_all,
    string_match_part,
)
from lcplugin.engines.base import Completion

from .conftest import shared

pytest_plugins = ["pytester"]
TASKS = list(rt.TASKS)


# -- RULER's metrics, on examples of its own outputs ---------------------------------------------------------
@pytest.mark.parametrize(("pred", "refs", "score"), [
    ("The special magic number for fair-leader mentioned in the provided text is 4212931.", ["4212931"], 1.0),
    ("9415817, 6280290 and 1730423", ["9415817", "6280290", "1730423", "2981312"], 0.75),  # partial credit
    ("they are: JYGWN, XYEMT, ZRTNP", ["jygwn", "xyemt", "zrtnp", "ptagc", "ouyjd"], 0.6),  # case folded
    ("", ["1234567"], 0.0),
])
def test_string_match_all_is_rulers_share_of_references_found(pred, refs, score):
    assert string_match_all(pred, refs) == pytest.approx(score)


def test_string_match_part_needs_one_reference():
    assert string_match_part("Paris, France", ["paris", "Lyon"]) == 1.0
    assert string_match_part("Rome", ["paris", "Lyon"]) == 0.0


def test_postprocess_makes_control_characters_newlines_and_strips():
    assert postprocess("  4212931\x07 and\t5\n ") == "4212931\n and\n5"
    bench = get_benchmark("ruler_niah_multivalue")
    item = bench.load_items(DataSource(kind="synthetic", location="seeded"), 2048, 1)[0]
    answers = json.loads(item.gold)
    half = bench.score(item, " ".join(answers[:2]))
    assert half["score"] == 0.5 and not half["correct"] and not half["null"]
    assert bench.score(item, "  \n")["null"] and bench.score(item, ", ".join(answers))["correct"]


# -- the oracle: answers from the prompt alone -------------------------------------------------------------
def _main_part(text: str, marker: str) -> str:
    """The task proper, after any worked example (which repeats the template)."""
    return text[text.rindex(marker):]


def oracle(text: str) -> str:
    if "special magic" in text:
        needles = re.findall(r"One of the special magic \w+ for (\S+) is: (\S+)\.", text)
        query = re.search(r"What (?:are all|is) the special magic \w+ for (.+?) mentioned", text).group(1)
        keys = [k.strip() for k in re.split(r", and |, ", query)]
        return " ".join(v for k in keys for key, v in needles if key == k)
    if "Memorize and track" in text:
        main = _main_part(text, "Memorize and track")
        value = re.search(r"assigned the value (\d+) in the text above", main).group(1)
        found = re.findall(r"VAR (\w+) = VAR (\w+)", main)
        names = [re.search(rf"VAR (\w+) = {value}\b", main).group(1)]
        while any(src == names[-1] for _, src in found):
            names.append(next(dst for dst, src in found if src == names[-1]))
        return " ".join(names)
    if "numbered list of words" in text:
        main = _main_part(text, "Below is a numbered list")
        listing = main.split("\n")[1]
        return " ".join(w for w, _ in Counter(re.findall(r"\d+\. (\w+)", listing)).most_common(10))
    listing = text[text.index("coded words. ") + 13:text.index("\nQuestion: Do not")]
    return " ".join(w for w, _ in Counter(w for w in listing.split() if w != "...").most_common(3))


def _run(task: str, tokenizer: Any, ctx: int, answer: Any, n: int = 10,
         source: DataSource | None = None) -> list[dict[str, Any]]:
    bench = get_benchmark(f"ruler_{task}")
    source = source or DataSource(kind="synthetic", location="seeded")
    items = bench.load_items(source, ctx, n)
    records: list[dict[str, Any]] = []

    def generate(prompts, sampling):
        texts = [tokenizer.decode(list(p)) for p in prompts]
        return [Completion(text=answer(t), prompt_tokens=len(p), output_tokens=3) for t, p in zip(texts, prompts, strict=True)]

    session = EvalSession(generate=generate, tokenizer=tokenizer, ctx=ctx, chat_mode="auto",
                          sampling=bench.sampling(False), emit=records.append, chunk_size=4)
    bench.evaluate(items, session)
    assert len(records) == n and all(not r.get("skipped") for r in records), (task, records[:1])
    return records


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from lcplugin.models.tiny import build_tokenizer

    return build_tokenizer()


@pytest.mark.parametrize("task", TASKS)
def test_an_oracle_scores_everything_and_a_wrong_engine_nothing(task, tiny_tokenizer):
    for ctx in (1024, 4096):
        right = _run(task, tiny_tokenizer, ctx, oracle)
        assert all(r["correct"] and r["score"] == 1.0 for r in right), (task, ctx, right[0]["response"], right[0]["gold"])
        summary = get_benchmark(f"ruler_{task}").aggregate(right)
        assert summary["ruler_score"] == 100.0
        if task not in ("cwe", "fwe"):  # every depth reached, each fully right
            assert len(summary["depth_accuracy"]) == 10 and set(summary["depth_accuracy"].values()) == {1.0}
        wrong = _run(task, tiny_tokenizer, ctx, lambda text: "I do not know.")
        assert not any(r["correct"] for r in wrong) and get_benchmark(f"ruler_{task}").aggregate(wrong)["ruler_score"] == 0
        assert all(r["null"] for r in _run(task, tiny_tokenizer, ctx, lambda text: " ", n=2))


def test_each_task_is_a_benchmark_with_rulers_budget_and_greedy_decoding():
    assert {f"ruler_{t}" for t in TASKS} <= set(BENCHMARKS)
    budgets = {t: get_benchmark(f"ruler_{t}").new_tokens() for t in TASKS}
    assert budgets == {**dict.fromkeys(rt.NIAH_TASKS, 128), "vt": 30, "cwe": 120, "fwe": 50}
    assert all(get_benchmark(f"ruler_{t}").sampling(False).temperature == 0.0 for t in TASKS)


def test_depths_spread_every_prefix_and_follow_the_option():
    order = rt.depth_order(10)
    assert sorted(order) == pytest.approx([i / 9 for i in range(10)]) and order[:2] == [0.0, 1.0]
    items = get_benchmark("ruler_niah_single_1", BenchOptions(ruler_depths=3)).load_items(
        DataSource(kind="synthetic", location="seeded"), 1024, 6)
    assert [i.meta["depth"] for i in items] == [0, 100, 50, 0, 100, 50]


# -- exact token counts and byte-identical prompts with the real tokenizers ---------------------------------
TOKENIZERS = ("llama3.1", "qwen2", "gpt-neox-20b", "mistral-v3")


@pytest.fixture(scope="module")
def real_tokenizers():
    from transformers import AutoTokenizer

    return {name: AutoTokenizer.from_pretrained(str(shared("tokenizers", name))) for name in TOKENIZERS}


@pytest.mark.parametrize("ctx", [1024, 4096, 32768])
def test_prompts_fill_the_context_exactly_with_each_real_tokenizer(ctx, real_tokenizers):
    hay = essay(str(shared("longbench_v2", "sample18.jsonl")))
    for name, tok in real_tokenizers.items():
        maker = PromptMaker(tok)
        for task in TASKS:
            ids, draft, n, path = build(tok, task, ctx, 3, hay=hay, maker=maker)
            budget = ctx - rt.NEW_TOKENS[task]
            assert ids == maker.literal_ids(draft, n), (name, task, ctx)  # the whole text, tokenized at once
            assert len(ids) <= budget, (name, task, ctx, len(ids))
            assert budget - len(ids) < 200 or n == 0, (name, task, ctx, len(ids), budget)  # one more unit would not fit
            assert all(a in tok.decode(ids) for a in draft.answers)


def test_the_same_seed_gives_byte_identical_prompts(real_tokenizers):
    from transformers import AutoTokenizer

    hay = essay(str(shared("longbench_v2", "sample18.jsonl")))
    fresh = AutoTokenizer.from_pretrained(str(shared("tokenizers", "llama3.1")))  # nothing learned yet
    for task in TASKS:
        first = build(real_tokenizers["llama3.1"], task, 8192, 5, hay=hay)
        again = build(fresh, task, 8192, 5, hay=hay)
        other = build(fresh, task, 8192, 6, hay=hay)
        assert first[0] == again[0] and fresh.decode(first[0]).encode() == fresh.decode(again[0]).encode(), task
        assert first[0] != other[0], task
    assert state(fresh).literal == set()  # llama3.1: every task assembled from unit ids


# -- the suite ---------------------------------------------------------------------------------------------
def test_pytest_benches_runs_every_task_on_two_tiny_models(run_benches):
    out = run_benches("-k", "ruler", "--lc-models", "tiny-llama,tiny-mamba", "--lc-ctx", "1k,2k", "--lc-limit", "2")
    out.assert_outcomes(passed=len(TASKS) * 2 * 2, skipped=2 * 2 * 2)  # the QA tasks: no data given
    tests = out.summary()["tests"]
    assert {t["benchmark"] for t in tests} == {f"ruler_{t}" for t in TASKS}
    for t in tests:
        assert t["n"] == 2 and t["ruler_score"] is not None and t["null_rate"] is not None
        assert t["haystack"] in (None, "noise") and t["skipped_overlength"] == 0
    rows = out.records("ruler_niah_multikey_2", "tiny-llama", 2048)
    assert all(r["prompt_tokens"] <= 2048 - 128 and r["depth"] in (0, 100) for r in rows)


def test_one_task_is_selected_by_k(pytester):
    from .test_plugin import collect, collected

    ids = collected(collect(pytester, "-k", "ruler and niah_multikey_2", "--lc-models", "tiny-llama", "--lc-ctx", "1k,2k"))
    assert [i.rsplit("/", 1)[-1] for i in ids] == ["test_ruler.py::test_ruler_niah_multikey_2[tiny-llama-1k]",
                                                    "test_ruler.py::test_ruler_niah_multikey_2[tiny-llama-2k]"], ids
