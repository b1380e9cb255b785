"""What each benchmark declares about itself: the options it reads (an allow-list, checked against what
it really reads) and its generation budget (which the plan prices)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest

from lcplugin.benchmarks.base import (
    BENCHMARKS,
    DATA_KEYS,
    READABLE,
    Benchmark,
    BenchOptions,
    DataSource,
    EvalSession,
    get_benchmark,
)
from lcplugin.benchmarks.ruler_tasks import NEW_TOKENS
from lcplugin.engines.base import Completion

from .suite_runs import NEED_FILES
from .test_ruler_qa import WRITERS


def test_a_name_a_benchmark_cannot_read_is_refused_when_the_class_is_defined():
    with pytest.raises(TypeError, match=r"field reads: unknown mdoe; name BenchOptions fields"):
        type("Typo", (Benchmark,), {"reads": frozenset({"mdoe", "sampling"})})


class _Spy:
    """Options that note each one a benchmark reads."""

    def __init__(self, options: BenchOptions) -> None:
        self.options, self.read = options, set()

    def __getattr__(self, name: str) -> Any:
        self.read.add(name)
        return getattr(self.options, name)


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_a_benchmark_reads_only_the_options_it_declares(name, tmp_path):
    """Load, evaluate (fake engine), aggregate and score each benchmark on synthetic data, with every option
    off its default: each option read is in ``reads``, so its results and baselines are keyed by it.
    (The token cache's key is not a result: this runs without one.)"""
    from lcplugin.models.tiny import build_tokenizer

    spy = _Spy(BenchOptions(mode="cot", budget="official", overlength="skip", select=(("length", ("short", "long")),),
                            pg19_windows=2, pg19_score_last=50, ruler_depths=3))
    bench = get_benchmark(name)
    bench.options = spy  # type: ignore[assignment]
    assert bench.reads <= READABLE
    records: list[dict[str, Any]] = []

    def generate(prompts, sampling):
        return [Completion(text="The correct answer is (A)", prompt_tokens=len(p), output_tokens=3) for p in prompts]

    def loglikelihood(tokens, k):
        return SimpleNamespace(nll=1.5 * k, seconds=0.01)

    ctx = 2048  # chain of thought's 1,024 new tokens need a context above 1k
    sampling = bench.sampling(False)
    bench.sampling(True)
    bench.new_tokens()
    source = DataSource(kind="synthetic", location="seeded")
    if name in NEED_FILES:  # RULER's QA tasks: a small file in their layout
        key = DATA_KEYS[name]
        source = DataSource(kind="file", location=str(WRITERS[key](tmp_path / f"{key}.json")))
    items = bench.load_items(source, ctx, 3)
    session = EvalSession(generate=generate, tokenizer=build_tokenizer(), ctx=ctx, chat_mode="auto", sampling=sampling,
                          emit=records.append, chunk_size=2, window=ctx, loglikelihood=loglikelihood)
    bench.progress_total(items, frozenset())
    bench.cost_plan(len(items), ctx, sampling)
    bench.evaluate(items, session)
    assert records
    bench.aggregate(records)
    bench.outcomes(records)
    options = {f.name for f in dataclasses.fields(BenchOptions)}
    assert spy.read & options <= bench.reads, f"{name} reads {sorted(spy.read & options - bench.reads)} undeclared"
    # and declares nothing it never reads (sampling and chat template are read through the session)
    assert bench.reads & options <= spy.read, f"{name} declares {sorted(bench.reads & options - spy.read)} unread"


def test_each_benchmark_declares_its_budget_and_the_plan_prices_the_largest(monkeypatch):
    from lcplugin.benchmarks.pg19 import PG19
    from lcplugin.config.session import LcSession
    from lcplugin.config.settings import Settings
    from lcplugin.plugin import plan

    from .conftest import REPO

    budgets = {mode: {name: get_benchmark(name, BenchOptions(mode=mode)).new_tokens() for name in BENCHMARKS}
               for mode in ("0shot", "cot", "nocontext")}
    ruler = {f"ruler_{t}": n for t, n in NEW_TOKENS.items()}  # RULER's tokens_to_generate, whatever the mode
    assert budgets["cot"] == {"longbench_v2": 1152, "ada_leval_bestanswer": 128, "ada_leval_tsort": 128, "pg19": 0,
                              **ruler}
    assert budgets["0shot"] == budgets["nocontext"] == {**budgets["cot"], "longbench_v2": 128}
    zero_shot = LcSession(Settings(models="tiny-llama", limit=2), REPO)
    cot = LcSession(Settings(models="tiny-llama", limit=2, bench=BenchOptions(mode="cot")), REPO)
    assert plan.test_tokens(zero_shot, "tiny-llama", 1024) == 2 * (1024 + 128)
    assert plan.test_tokens(cot, "tiny-llama", 1024) == 2 * (1024 + 1152)
    monkeypatch.setattr(PG19, "new_tokens", lambda self: 5000)  # read from the benchmarks, not written in the plan
    assert plan.test_tokens(zero_shot, "tiny-llama", 1024) == 2 * (1024 + 5000)
