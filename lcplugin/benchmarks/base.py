"""The benchmark seam: items in, scored records out, streamed one chunk at a time.

A benchmark knows its data format, its prompt, its scoring and its buckets; it knows nothing of
pytest or of how an engine works inside. Records are handed to ``session.emit`` as soon as they are
scored, so the store can flush them and an interrupted run loses at most one chunk of work.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..engines.base import Completion, SamplingSettings
from ..errors import DataError, LcError
from ..truncation import PromptBuilder

# name -> "module:Class"; imported on first use.
BENCHMARKS: dict[str, str] = {
    "longbench_v2": "lcplugin.benchmarks.longbench_v2:LongBenchV2",
}


@dataclass(frozen=True, kw_only=True)
class DataSource:
    """Where a benchmark's items come from; ``digest`` keys results and caches."""

    kind: str  # "file" | "hub" | "synthetic"
    location: str
    digest: str = ""

    def describe(self) -> str:
        return f"{self.kind}:{self.location}"


@dataclass(frozen=True, kw_only=True)
class Item:
    id: str
    gold: str
    fields: Mapping[str, Any]
    meta: Mapping[str, Any] = field(default_factory=dict)  # buckets: difficulty, length, ...


@dataclass
class EvalSession:
    """What one test hands a benchmark: the engine, the tokenizer and the test's settings."""

    generate: Callable[[Sequence[Sequence[int]], SamplingSettings], list[Completion]]
    tokenizer: Any
    ctx: int
    chat_mode: str
    sampling: SamplingSettings
    emit: Callable[[dict[str, Any]], None]
    chunk_size: int = 8
    done_ids: frozenset[str] = frozenset()


class Benchmark:
    """Base class of all benchmarks; subclasses override what differs."""

    name: str = ""
    default_sampling = SamplingSettings()

    def load_items(self, source: DataSource, ctx: int, limit: int | None) -> list[Item]:
        raise NotImplementedError

    def evaluate(self, items: Sequence[Item], session: EvalSession) -> None:
        raise NotImplementedError

    def aggregate(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Benchmark-specific summary fields (buckets, baselines)."""
        return {}


class GenerationBenchmark(Benchmark):
    """A benchmark that sends one prompt per item and scores the generated text."""

    def prompt_text(self, item: Item) -> str:
        raise NotImplementedError

    def score(self, item: Item, response: str) -> dict[str, Any]:
        """Return at least ``pred`` (None when unparseable), ``correct`` and ``null``."""
        raise NotImplementedError

    def evaluate(self, items: Sequence[Item], session: EvalSession) -> None:
        builder = PromptBuilder(session.tokenizer, session.ctx, session.sampling.max_new_tokens, session.chat_mode)
        todo = [it for it in items if it.id not in session.done_ids]
        for start in range(0, len(todo), session.chunk_size):
            chunk = todo[start:start + session.chunk_size]
            built = [builder.build(self.prompt_text(it)) for it in chunk]
            completions = session.generate([b.ids for b in built], session.sampling)
            for item, prompt, comp in zip(chunk, built, completions, strict=True):
                record = {
                    "id": item.id, "benchmark": self.name, "ctx": session.ctx,
                    "prompt_tokens": comp.prompt_tokens, "original_tokens": prompt.original_tokens,
                    "truncated": prompt.truncated, "response": comp.text, "gold": item.gold,
                    "output_tokens": comp.output_tokens, "finish_reason": comp.finish_reason,
                    "batch_id": comp.batch_id, "batch_size": comp.batch_size,
                    "ttft_s": comp.ttft_s, "decode_s": comp.decode_s,
                    **self.score(item, comp.text), **dict(item.meta),
                }
                session.emit(record)


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise LcError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
    module_name, _, cls_name = BENCHMARKS[name].partition(":")
    return getattr(importlib.import_module(module_name), cls_name)()


def require_fields(record: Mapping[str, Any], required: Iterable[str], where: str) -> None:
    """Raise naming ``where`` (file and line) and every missing field."""
    missing = [f for f in required if f not in record or record[f] is None]
    if missing:
        raise DataError(f"{where}: item lacks field(s) {', '.join(repr(m) for m in missing)}; "
                      "every item needs them (see the benchmark's data format in the README)")
