"""The benchmark seam: items in, scored records out, streamed one chunk at a time.

A benchmark knows its data format, its prompt, its scoring and its buckets; it knows nothing of
pytest or of how an engine works inside. Records are handed to ``session.emit`` as soon as they are
scored, so the store can flush them and an interrupted run loses at most one chunk of work.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ..engines.base import Completion, SamplingSettings
from ..errors import DataError, LcError
from .ruler_qa import QA_DATA as RULER_QA
from .ruler_tasks import TASKS as RULER_TASKS
from .truncation import PromptBuilder

# name -> "module:Class"; imported on first use.
BENCHMARKS: dict[str, str] = {
    "longbench_v2": "lcplugin.benchmarks.longbench_v2:LongBenchV2",
    "ada_leval_bestanswer": "lcplugin.benchmarks.ada_leval:BestAnswer",
    "ada_leval_tsort": "lcplugin.benchmarks.ada_leval:TSort",
    "pg19": "lcplugin.benchmarks.pg19:PG19",
    **{f"ruler_{task}": f"lcplugin.benchmarks.ruler:Ruler_{task}" for task in (*RULER_TASKS, *RULER_QA)},
}
# the --lc-data key of each benchmark (both Ada-LEval tasks read one folder, the RULER tasks one haystack)
DATA_KEYS = {"ada_leval_bestanswer": "ada_leval", "ada_leval_tsort": "ada_leval",
             **{f"ruler_{task}": "ruler_haystack" for task in RULER_TASKS},
             **{f"ruler_{task}": key for task, (key, _) in RULER_QA.items()}}
# every key --lc-data accepts; anything else is a typo, refused at configure time
DATA_KEY_NAMES = tuple(sorted({DATA_KEYS.get(name, name) for name in BENCHMARKS}))


def parse_select(value: str | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``difficulty=hard;length=short,medium`` -> filters on the dataset's own labels."""
    if not value:
        return ()
    out = []
    for part in value.split(";"):
        key, sep, allowed = part.partition("=")
        if not sep or key.strip() not in ("difficulty", "length", "domain"):
            raise LcError(f"--lc-select {value!r}: write FIELD=V1,V2[;FIELD=...] with FIELD one of difficulty, "
                          "length, domain (e.g. --lc-select 'difficulty=hard;length=short,medium')")
        out.append((key.strip(), tuple(v.strip() for v in allowed.split(",") if v.strip())))
    return tuple(out)


def whole_number(minimum: int, example: str) -> Callable[[str], int]:
    """A parser of whole numbers of at least ``minimum``; ``example`` is the fix its message suggests."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise LcError(f"{text!r} is not a whole number >= {minimum}; give e.g. {example}")
        return value

    return parse


def _option(default: Any, help: str, **addoption: Any) -> Any:
    """A protocol option: its ``BenchOptions`` field and its command line ``--lc-<name>`` in one place, so a
    benchmark's new option is one field here. ``parse`` turns the option's text into the field's value
    when the command line is parsed (a bad value is pytest's usage error before collection); the other
    keywords go to pytest's ``addoption`` as they are."""
    return field(default=default, metadata={"help": help, **addoption})


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """Protocol choices a run makes, all recorded; each benchmark's results are keyed by those it reads
    (``Benchmark.reads``), so one benchmark's option never refuses another's baselines."""

    mode: str = _option("0shot", "LongBench-v2 protocol: 0-shot (official default), two-pass chain of thought, "
                        "or no context", choices=("0shot", "cot", "nocontext"))
    select: tuple[tuple[str, tuple[str, ...]], ...] = _option(
        (), "keep items by the dataset's own labels, e.g. 'difficulty=hard;length=short,medium'",
        metavar="FIELD=V,..;...", parse=parse_select)
    overlength: str = _option("truncate", "a prompt longer than the context: cut in the middle (official) or "
                              "skip the item", choices=("truncate", "skip"))
    budget: str = _option("context", "LongBench-v2 prompt budget: context - new tokens - chat template (default), "
                          "or official (pred.py's max_len 120,000 at 128k, scaled: floor(ctx x 120000 / 131072))",
                          choices=("context", "official"))
    fill: str = _option("auto", "LongBench-v2 items per context: any (official: every item, cut to fit or whole), "
                        "full (only items whose whole prompt reaches 90 %% of the context), or auto (full above 128k, "
                        "any up to it)", choices=("auto", "any", "full"))
    pg19_windows: int = _option(10, "PG-19 windows per book (default 10)", metavar="N",
                                parse=whole_number(1, "--lc-pg19-windows 10"))
    pg19_score_last: int = _option(100, "PG-19: score the last K tokens of each window (default 100)", metavar="K",
                                   parse=whole_number(1, "--lc-pg19-score-last 100"))
    ruler_depths: int = _option(10, "RULER: needle depths spread evenly from the haystack's start to its end "
                                "(default 10)", metavar="N", parse=whole_number(1, "--lc-ruler-depths 10"))

    def as_dict(self) -> dict[str, Any]:
        """Every option as JSON writes it (``select`` as ``{field: [values]}``)."""
        return {f.name: {k: list(v) for k, v in self.select} if f.name == "select" else getattr(self, f.name)
                for f in fields(self)}

    @staticmethod
    def flag(name: str) -> str:
        """An option's command line: ``pg19_windows`` -> ``--lc-pg19-windows``."""
        return "--lc-" + name.replace("_", "-")

    @classmethod
    def command_line(cls) -> list[tuple[str, dict[str, Any], Callable[[str], Any] | None]]:
        """(flag, ``addoption`` keywords, parser or None) of every option, for ``plugin/options.py``, which
        makes the parser the option's argparse ``type``: its value arrives parsed, its default as is."""
        return [(cls.flag(f.name), {"default": f.default, **{k: v for k, v in f.metadata.items() if k != "parse"}},
                 f.metadata.get("parse")) for f in fields(cls)]

    @classmethod
    def from_command_line(cls, value_of: Callable[[str], Any]) -> BenchOptions:
        """The options from their flags' parsed values (``value_of``: pytest's ``config.getoption``)."""
        return cls(**{f.name: value_of(cls.flag(f.name)) for f in fields(cls)})


# What a benchmark may declare it reads besides its data and model (``Benchmark.reads``): the protocol
# options, and, for a benchmark that generates, the sampling and the chat template.
READABLE = frozenset(f.name for f in fields(BenchOptions)) | {"sampling", "chat_template"}


@dataclass(frozen=True, kw_only=True)
class DataSource:
    """Where a benchmark's items come from; ``digest`` keys results and caches."""

    kind: str  # "file" | "hub" | "synthetic" | "generated" (made by the benchmark, no data given)
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


# One item's outcome, as a baseline stores it and the gate compares it: [correct, null] as 0/1 for a
# benchmark whose items are right or wrong (null: no answer), or a number (``Measure``).
Outcome = list[int] | float


@dataclass(frozen=True, kw_only=True)
class Measure:
    """Outcomes that are numbers, lower better (PG-19: each window's bits per byte); the gate tests their
    mean, paired on the items both runs scored (t-test), else unpaired (Welch). A benchmark without one
    has right-or-wrong items, gated on accuracy and null rate (McNemar, else Fisher)."""

    label: str  # as a failure names it: "bits per byte"
    unit: str  # what one outcome is of: "window" (failures and notes add an "s" for more)
    figures: tuple[str, ...]  # summary figures its baseline entry keeps; the first is the outcomes' mean


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
    window: int | None = None  # the model's window at this test (ModelSpec.window_at; Ada-LEval's budget)
    data_key: str = ""  # the data's digest, for the token cache
    content_ids: Callable[[str, list[tuple[str, str]]], Mapping[str, Sequence[int]]] | None = None
    loglikelihood: Callable[[Sequence[int], int], Any] | None = None
    progress: Callable[[int], None] | None = None  # called with the number of items just finished


class Benchmark:
    """Base class of all benchmarks; subclasses override what differs."""

    name: str = ""
    default_sampling = SamplingSettings()
    # What it reads of READABLE, an allow-list: only these key its results (config/inputs.py) and its
    # baselines, so an option added for another benchmark leaves this one's baselines comparable.
    reads: frozenset[str] = frozenset()
    # None: items are right or wrong; else a number per item (see Measure)
    measure: Measure | None = None
    # the files this benchmark reads from an --lc-data folder, which alone key its results; None: its
    # data is one file, and a folder is refused when loading
    data_glob: str | None = None
    # items it makes itself (RULER): with no --lc-data its source is "generated", never the hub, whatever
    # the spec's default_data says (a synthetic default stays synthetic: the offline default's form)
    generates_items: bool = False
    # the version of the code that makes its items and prompts from the data (a generator, a template). Raised
    # when that code changes what a model reads: it then keys results and baselines, so a baseline of the old
    # items is refused by name instead of gated item by item against other prompts. 1 keys nothing, so the
    # results made before versions existed keep their keys (RULER's is pinned by tests/test_ruler_items.py).
    items_version: int = 1
    # its prompts go to the engine's generate, which may read several together (the memory preflight prices that
    # batch); False: scored one sequence at a time (PG-19's windows)
    batched: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A name outside READABLE (a typo) would key nothing: refused when the class is defined."""
        super().__init_subclass__(**kwargs)
        unknown = sorted(set(cls.reads) - READABLE)
        if unknown:
            raise TypeError(f"benchmark {cls.__module__}.{cls.__qualname__}, field reads: unknown {', '.join(unknown)}; "
                            f"name BenchOptions fields or sampling, chat_template ({', '.join(sorted(READABLE))})")

    def __init__(self, options: BenchOptions | None = None) -> None:
        self.options = options or BenchOptions()

    def new_tokens(self) -> int:
        """The most tokens one item generates under these options, every pass together: the budget the
        plan prices (plugin/plan.py). None generated here (a benchmark that only scores text)."""
        return 0

    def outcomes(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Outcome]:
        """Each scored record's outcome by id, for the baseline and its gate (results/baselines.py)."""
        raise NotImplementedError

    def sampling(self, greedy: bool) -> SamplingSettings:
        base = self.default_sampling
        return SamplingSettings(max_new_tokens=base.max_new_tokens, temperature=0.0, seed=base.seed) if greedy else base

    def skip_reason(self, source: DataSource, ctx: int) -> str | None:
        """Why this benchmark has no data for ``ctx`` (Ada-LEval settings), or None."""
        return None

    def items_key(self, ctx: int) -> Hashable:
        """What of the test's context its items depend on; the session's item cache is keyed by it.

        None: the same items at every context (LongBench-v2 cuts them per context later, PG-19 cuts
        its windows from whole books in ``evaluate``). A benchmark that reads other data per context
        (Ada-LEval's settings) returns the context, or every test would run the first context's items.
        """
        return None

    def load_items(self, source: DataSource, ctx: int, limit: int | None) -> list[Item]:
        raise NotImplementedError

    def inputs(self, ctx: int, readable: Mapping[str, Any]) -> dict[str, Any]:
        """What of the run's options (``readable``) a test's result at ``ctx`` depends on (config/inputs.py):
        those the benchmark ``reads``. A benchmark whose option acts only at some contexts records its effect
        there alone, so results made before the option existed keep their keys."""
        out = {name: value for name, value in readable.items() if name in self.reads}
        return {**out, "items_version": self.items_version} if self.items_version > 1 else out

    def context_window(self, ctx: int, model_window: int) -> int:
        """The longest prompt plus generation this benchmark sends in a test at ``ctx`` tokens, on a
        model whose window there is ``model_window``: the test's context (LongBench-v2, PG-19) or the
        model's window (Ada-LEval). The one rule: prompts are fitted to it, and an engine sized at load
        (vLLM's ``max_model_len``) is sized to it.
        """
        return ctx

    def evaluate(self, items: Sequence[Item], session: EvalSession) -> None:
        raise NotImplementedError

    def aggregate(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Benchmark-specific summary fields (buckets, baselines)."""
        return {}

    def progress_total(self, items: Sequence[Item], done_ids: frozenset[str]) -> int:
        """The units ``evaluate`` will report through ``session.progress``: here one per item."""
        return len(items)

    def cost_plan(self, n_items: int, ctx: int, sampling: SamplingSettings) -> list[tuple[int, int]]:
        """(prompt tokens, output tokens) expected per item, priced by the progress line's time left.

        An upper bound before any prompt is built: a prompt fills the context less the generation
        budget, an item generates its whole budget; the observed pace corrects it as items finish."""
        return [(max(1, ctx - sampling.max_new_tokens), sampling.max_new_tokens)] * n_items


class GenerationBenchmark(Benchmark):
    """A benchmark that sends one prompt per item and scores the generated text."""

    never_truncate = False  # True: a prompt that does not fit is skipped (counted), never cut
    reads = frozenset({"sampling", "chat_template", "overlength"})
    passes = 1  # generation passes per item (LongBench-v2 chain of thought: 2)

    def new_tokens(self) -> int:
        return self.sampling(False).max_new_tokens

    def outcomes(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Outcome]:
        """[correct, null] of each scored item (an item left out as over-length has none)."""
        return {str(r["id"]): [int(bool(r.get("correct"))), int(bool(r.get("null")))]
                for r in records if not r.get("skipped") and "correct" in r}

    def progress_total(self, items: Sequence[Item], done_ids: frozenset[str]) -> int:
        """One unit per pass of each item still to do: a two-pass run is not 100 % done after its first passes."""
        return self.passes * sum(1 for it in items if it.id not in done_ids)

    def prompt_text(self, item: Item) -> str:
        raise NotImplementedError

    def score(self, item: Item, response: str) -> dict[str, Any]:
        """Return at least ``pred`` (None when unparseable), ``correct`` and ``null``."""
        raise NotImplementedError

    def cache_key(self, session: EvalSession) -> str:
        """The token cache's key: items that differ per context (Ada-LEval) must not share one."""
        part = self.items_key(session.ctx)
        return f"{self.name}-{self.options.mode}-{session.data_key}" + ("" if part is None else f"-{part}")

    def budget(self, session: EvalSession) -> int:
        """The context a prompt and its generation must fit (see ``context_window``)."""
        return self.context_window(session.ctx, session.window or session.ctx)

    def left_out(self, prompt: Any, session: EvalSession) -> str | None:
        """Why an item's built prompt is not sent (its record says so; counted, never scored), or None: a
        prompt that had to be cut, where cutting is refused (``overlength``)."""
        if prompt.truncated and (self.never_truncate or self.options.overlength == "skip"):
            return "overlength"
        return None

    def max_len(self, ctx: int) -> int | None:
        """A cap on the cut prompt's length (LongBench-v2's official budget), or None: the context decides."""
        return None

    def second_pass(self, items: Sequence[Item], records: list[dict[str, Any]], session: EvalSession) -> None:
        """Complete one chunk's records with a second generation (``passes == 2``); records are updated in place."""
        raise NotImplementedError

    def evaluate(self, items: Sequence[Item], session: EvalSession) -> None:
        """Chunk by chunk: build the prompts, generate (both passes where there are two), then emit.

        A chunk's records are written as soon as its last pass is done, so a kill loses at most one
        chunk, and a resumed run (``done_ids``) does only the items left.
        """
        builder = PromptBuilder(session.tokenizer, self.budget(session), session.sampling.max_new_tokens,
                                session.chat_mode, max_len=self.max_len(session.ctx))
        todo = [it for it in items if it.id not in session.done_ids]
        for start in range(0, len(todo), session.chunk_size):
            chunk = todo[start:start + session.chunk_size]
            texts = [(it.id, self.prompt_text(it)) for it in chunk]
            cached = session.content_ids(self.cache_key(session), texts) if session.content_ids else {}
            built, ready = [], []
            for item, (_, text) in zip(chunk, texts, strict=True):
                prompt = builder.build(text, cached.get(item.id))
                why = self.left_out(prompt, session)
                if why:
                    session.emit({"id": item.id, "benchmark": self.name, "ctx": session.ctx, "skipped": why,
                                  "original_tokens": prompt.original_tokens, "gold": item.gold, **dict(item.meta)})
                    continue
                built.append(prompt)
                ready.append(item)
            completions = session.generate([b.ids for b in built], session.sampling) if built else []
            records = [self.record(item, prompt, comp, session)
                       for item, prompt, comp in zip(ready, built, completions, strict=True)]
            if self.passes == 2:
                if session.progress:
                    session.progress(len(chunk))
                if records:
                    self.second_pass(ready, records, session)
            for record in records:
                session.emit(record)
            if session.progress:
                session.progress(len(chunk))

    def record(self, item: Item, prompt: Any, comp: Completion, session: EvalSession) -> dict[str, Any]:
        return {
            "id": item.id, "benchmark": self.name, "ctx": session.ctx,
            "prompt_tokens": comp.prompt_tokens, "original_tokens": prompt.original_tokens,
            "truncated": prompt.truncated, "response": comp.text, "gold": item.gold,
            "output_tokens": comp.output_tokens, "finish_reason": comp.finish_reason,
            "batch_id": comp.batch_id, "batch_size": comp.batch_size,
            "ttft_s": comp.ttft_s, "decode_s": comp.decode_s,
            **self.score(item, comp.text), **dict(item.meta),
        }


def get_benchmark(name: str, options: BenchOptions | None = None) -> Benchmark:
    if name not in BENCHMARKS:
        raise LcError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
    module_name, _, cls_name = BENCHMARKS[name].partition(":")
    return getattr(importlib.import_module(module_name), cls_name)(options)


def require_fields(record: Mapping[str, Any], required: Iterable[str], where: str) -> None:
    """Raise naming ``where`` (file and line) and every missing field."""
    missing = [f for f in required if f not in record or record[f] is None]
    if missing:
        raise DataError(f"{where}: item lacks field(s) {', '.join(repr(m) for m in missing)}; "
                      "every item needs them (see the benchmark's data format in the README)")
