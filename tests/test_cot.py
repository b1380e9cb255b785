"""LongBench-v2 chain of thought keeps its work: each chunk's records are written once its second pass
is done, progress counts both passes, and a resumed run does only the items left."""

from __future__ import annotations

import json
import os
import textwrap
from typing import Any

import pytest

from lcplugin.benchmarks.base import BenchOptions, DataSource, EvalSession
from lcplugin.benchmarks.longbench_v2 import LongBenchV2
from lcplugin.engines.base import Completion, SamplingSettings
from lcplugin.models.tiny import build_tokenizer

from .conftest import only_run_summary

CTX = 2048  # 1024 new tokens for the first pass need a context above 1k


class Killed(Exception):
    """Stands in for a kill: nothing after it runs."""


def _run(items: list, done: frozenset[str] = frozenset(), kill_at: int | None = None) -> list[tuple]:
    """Evaluate in cot mode with a fake engine; return the events in the order they happened."""
    bench = LongBenchV2(BenchOptions(mode="cot"))
    events: list[tuple] = []

    def generate(prompts: Any, sampling: SamplingSettings) -> list[Completion]:
        if kill_at is not None and sum(1 for e in events if e[0] == "generate") + 1 == kill_at:
            raise Killed
        events.append(("generate", sampling.max_new_tokens, len(prompts)))
        text = "Let me think." if sampling.max_new_tokens == 1024 else "The correct answer is (A)"
        return [Completion(text=text, prompt_tokens=len(p), output_tokens=4) for p in prompts]

    session = EvalSession(generate=generate, tokenizer=build_tokenizer(), ctx=CTX, chat_mode="auto",
                          sampling=bench.sampling(False), emit=lambda r: events.append(("emit", r["id"], r)),
                          chunk_size=2, done_ids=done, progress=lambda n: events.append(("progress", n)))
    total = getattr(bench, "progress_total", None)
    events.append(("total", total(items, done) if total else None))
    try:
        bench.evaluate(items, session)
    except Killed:
        events.append(("killed",))
    return events


@pytest.fixture(scope="module")
def items() -> list:
    return LongBenchV2(BenchOptions(mode="cot")).load_items(DataSource(kind="synthetic", location="seeded"), CTX, 6)


def test_each_chunk_is_written_after_its_second_pass(items):
    events = _run(items)
    calls = [(e[0], e[1]) if e[0] == "generate" else e[0] for e in events if e[0] in ("generate", "emit")]
    # chunk by chunk: first pass (1024), second pass (128), its two records; then the next chunk
    assert calls == [("generate", 1024), ("generate", 128), "emit", "emit"] * 3
    records = [e[2] for e in events if e[0] == "emit"]
    assert [r["id"] for r in records] == [it.id for it in items]
    for r in records:
        assert r["cot_response"] == "Let me think." and r["response"] == "The correct answer is (A)"
        assert r["pred"] == "A" and r["answer_prompt_tokens"] > 0


def test_progress_counts_both_passes(items):
    events = _run(items)
    total = events[0][1]
    assert total == 2 * len(items)
    done, at_last_second_pass = 0, None
    for e in events:
        if e[0] == "progress":
            done += e[1]
        if e[0] == "generate" and e[1] == 128:
            at_last_second_pass = done
    assert at_last_second_pass is not None and at_last_second_pass < total  # not 100 % before the last answer
    assert done == total


def test_a_killed_run_keeps_finished_items_and_the_resumed_run_skips_them(items):
    first = _run(items, kill_at=3)  # killed in the second chunk's first pass
    assert first[-1] == ("killed",)
    kept = frozenset(e[1] for e in first if e[0] == "emit")
    assert kept == {items[0].id, items[1].id}
    second = _run(items, done=kept)
    assert second[0] == ("total", 2 * (len(items) - 2))
    assert sum(e[2] for e in second if e[0] == "generate" and e[1] == 1024) == len(items) - 2
    assert [e[1] for e in second if e[0] == "emit"] == [it.id for it in items[2:]]


KILLER = textwrap.dedent('''
    """Test helper: log every generate call; SIGKILL the engine worker and pytest at call LC_KILL_AT."""
    import json, os, signal
    from lcplugin.engines import worker

    _call = worker.EngineWorker.call
    _count = {"n": 0}

    def call(self, method, *args, **kwargs):
        if method == "generate":
            _count["n"] += 1
            if _count["n"] == int(os.environ.get("LC_KILL_AT", "0")):
                os.kill(self.pid, signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)
            prompts, sampling = args[0], args[1]
            with open(os.environ["LC_GENERATE_LOG"], "a") as fh:
                fh.write(json.dumps({"prompts": len(prompts), "max_new_tokens": sampling.max_new_tokens}) + "\\n")
        return _call(self, method, *args, **kwargs)

    worker.EngineWorker.call = call
''')


@pytest.mark.slow
def test_cot_run_killed_mid_way_resumes_without_redoing_items(run_benches, tmp_path):
    (tmp_path / "lc_cot_killer.py").write_text(KILLER)
    log = tmp_path / "generate.jsonl"
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "LC_GENERATE_LOG": str(log)}
    args = ("-p", "lc_cot_killer", "--lc-models", "tiny-llama", "--lc-ctx", "2k", "--lc-limit", "8",
            "--lc-mode", "cot", "--lc-sampling", "greedy", "-k", "longbench_v2")
    killed = run_benches(*args, env={**env, "LC_KILL_AT": "3"})  # chunks of 4: the second chunk's first pass
    assert killed.returncode == -9, killed.stdout[-2000:]
    found = list(run_benches.results.glob("*/records/longbench_v2/tiny-llama-2048.jsonl"))
    written = len(found[0].read_text().splitlines()) if found else 0
    assert written == 4  # the first chunk, both passes done, on disk
    records = found[0]
    log.unlink()
    again = run_benches(*args, env=env)
    assert again.returncode == 0, again.stdout[-3000:]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert sum(c["prompts"] for c in calls if c["max_new_tokens"] == 1024) == 4  # only the items left
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(rows) == len({r["id"] for r in rows}) == 8
    assert all("cot_response" in r for r in rows)
    summary = only_run_summary(run_benches.results)
    assert summary["run"]["finished"] and summary["tests"][0]["n"] == 8
