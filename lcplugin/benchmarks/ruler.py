"""RULER-style synthetic tasks at any length: needle retrieval, variable tracking, word aggregation.

Each RULER task (``ruler_tasks.TASKS``, and the two QA tasks of ``ruler_qa``) is its own benchmark,
``ruler_<task>``, so each is its own test id. A prompt is filled to the context with the model's own
tokenizer, leaving the task's generation budget, and counted exactly in tokens: every distinct unit of
text (a haystack line or sentence, a needle, a numbered word) is tokenized once per tokenizer and kept;
a sample's haystack size is the largest whose units' token counts fit (RULER binary-searches by
re-tokenizing the whole prompt), and its ids are the units' ids laid end to end, with the few seams
between template and context re-tokenized (``PromptBuilder.splice``). The first prompts of each task
and tokenizer are also tokenized whole and compared; a tokenizer whose ids ever disagree takes the
literal path (whole text tokenized, units dropped until it fits) for that task from then on.

Scoring is RULER's ``string_match_all``: the share of reference strings found in the prediction, case
folded; ``correct`` is all of them found (what the paired gate compares) and ``score`` the share (RULER's
figure, averaged x100 as ``ruler_score``). ``null``: an empty prediction, RULER's null count.
"""

from __future__ import annotations

import json
import random
import re
import weakref
from collections.abc import Mapping, Sequence
from itertools import accumulate, chain
from pathlib import Path
from typing import Any

from ..engines.base import SamplingSettings
from ..errors import DataError
from . import ruler_qa as rq
from . import ruler_tasks as rt
from .base import DataSource, EvalSession, GenerationBenchmark, Item
from .datafiles import read_records
from .truncation import BuiltPrompt, PromptBuilder

DEFAULT_SAMPLES = 100  # per task and context without --lc-limit (RULER: 500); 10 per depth by default
ICL_TOKENS = 500  # RULER fits variable tracking's worked example to 500 tokens
_CALIBRATE = 2  # prompts per (tokenizer, task) also tokenized whole and compared
SHARED_TEXTS = Path(__file__).resolve().parents[3] / "shared" / "data" / "longbench_v2" / "sample18.jsonl"
ESSAY_TASKS = frozenset(t for t, spec in rt.NIAH_TASKS.items() if spec[0] == "essay")


class _TokenizerState:
    """What one tokenizer has learned: each unit's ids, each sequence's unit lengths, which tasks assemble right."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: dict[str, list[int]] = {}
        self.seq_sums: dict[str, list[int]] = {}
        self.checked: dict[str, int] = {}
        self.literal: set[str] = set()
        self.anchor = tokenizer.encode("\n", add_special_tokens=False)

    def unit_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's ids as it tokenizes after a newline or a word (the anchor is cut off); once per text."""
        missing = list(dict.fromkeys(t for t in texts if t not in self.ids))
        for start in range(0, len(missing), 8192):
            batch = missing[start:start + 8192]
            encoded = self.tokenizer(["\n" + t for t in batch], add_special_tokens=False)["input_ids"]
            for text, ids in zip(batch, encoded, strict=True):
                cut = len(self.anchor) if ids[:len(self.anchor)] == self.anchor else 0
                self.ids[text] = ids[cut:]
        return [self.ids[t] for t in texts]

    def seq_prefix(self, seq: rt.UnitSeq, upto: int) -> list[int]:
        """Running token counts of a haystack sequence's units (prefix[i] = tokens of units < i), at least
        ``upto`` + 1 of them; extended as needed, never recomputed. A sequence without a key (one sample's
        own words) keeps them on itself, not in the tokenizer's state."""
        sums = self.seq_sums.setdefault(seq.key, [0]) if seq.key else seq.__dict__.setdefault("sums", [0])
        if len(sums) <= upto:
            more = [seq.unit(i) for i in range(len(sums) - 1, max(upto, 2 * len(sums), 1024))]
            sums.extend(accumulate((len(ids) for ids in self.unit_ids(more)), initial=sums[-1]))
            del sums[len(sums) - len(more) - 1]  # the initial value repeated
        return sums


_STATES: weakref.WeakKeyDictionary[Any, _TokenizerState] = weakref.WeakKeyDictionary()


def state(tokenizer: Any) -> _TokenizerState:
    if tokenizer not in _STATES:
        _STATES[tokenizer] = _TokenizerState(tokenizer)
    return _STATES[tokenizer]


MAX_WORDS = 40  # a longer sentence (tables, lists) is cut into pieces of 40 words: the fill's granularity
PROSE = ("Single-Document QA", "Multi-Document QA")  # LongBench-v2 domains of running prose (not code, tables)


def sentences(text: str) -> list[str]:
    """Whitespace made single spaces, cut after . ! ? (RULER uses nltk's sent_tokenize) and every 40 words,
    each unit with its leading space."""
    flat = re.sub(r"\s+", " ", text).strip()
    out = []
    for sentence in re.split(r"(?<=[.!?]) (?=\S)", flat):
        words = sentence.split(" ")
        out.extend(" " + " ".join(words[i:i + MAX_WORDS]) for i in range(0, len(words), MAX_WORDS) if words[i])
    return out


_ESSAYS: dict[str, rt.TextSeq] = {}


def essay(where: str) -> rt.TextSeq:
    """The essay haystack from a .txt file, a folder of .txt files, or a .json/.jsonl[.xz] whose records hold
    ``context`` or ``text`` (LongBench-v2's files); read once per process."""
    if where not in _ESSAYS:
        path = Path(where)
        if path.is_dir():
            texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(path.glob("*.txt"))]
        elif path.suffix == ".txt":
            texts = [path.read_text(encoding="utf-8", errors="replace")]
        else:
            texts = [str(r.get("context") or r.get("text") or "") for _, r in read_records(path, "ruler_haystack")
                     if r.get("domain", PROSE[0]) in PROSE]  # LongBench-v2 files: the prose documents
        units = [s for t in texts for s in sentences(t)]
        if sum(len(u) for u in units) < 1000:
            raise DataError(f"ruler_haystack {where}: fewer than 1,000 characters of text; pass a long English text "
                            "(a .txt file, a folder of them, or a .jsonl with 'context' or 'text') with "
                            "--lc-data ruler_haystack=PATH")
        _ESSAYS[where] = rt.TextSeq(f"essay:{where}", units)
    return _ESSAYS[where]


def draft(task: str, ctx: int, index: int, depths: int, hay: rt.UnitSeq | None, icl_lines: int = -1,
          qa_data: rq.QAData | None = None) -> rt.Draft:
    """Sample ``index`` of ``task`` at context ``ctx``: its seed, its depth, its text parts."""
    rng = random.Random(rt.sample_seed(task, ctx, index))
    order = rt.depth_order(depths)
    depth = order[index % len(order)]
    if task in rq.QA_DATA:
        if qa_data is None:
            raise DataError(rq.missing(task))
        return rq.qa(task, index, rng, depth, qa_data)
    if task in rt.NIAH_TASKS:
        return rt.niah(task, rng, depth, hay)
    if task == "vt":
        return rt.vt(rng, depth, icl_lines)
    if task == "cwe":
        return rt.cwe(rng, ctx)
    return rt.fwe(rng, ctx, rt.NEW_TOKENS["fwe"])


class PromptMaker:
    """Fills drafts to a token budget for one tokenizer and chat mode."""

    def __init__(self, tokenizer: Any, chat_mode: str = "auto") -> None:
        self.builder = PromptBuilder(tokenizer, 1 << 30, 0, chat_mode)
        self.tokenizer, self.state = tokenizer, state(tokenizer)
        self.lead = [] if self.builder.chat else list(self.builder.pre_ids)

    def frame(self, d: rt.Draft) -> tuple[str, str]:
        """The text before and after the context: chat template, task text, answer prefix (RULER appends the
        prefix after its model template, so the answer begins inside the assistant's turn)."""
        b = self.builder
        return b.chat_prefix + d.before, d.after + b.chat_suffix + d.answer_prefix

    def _edges(self, d: rt.Draft, units: list[str]) -> list[str]:
        """The context's units as they stand in the text: no separator before the first or after the last."""
        if units:
            units = list(units)
            if d.newline:
                units[-1] = units[-1].removesuffix("\n")
            else:
                units[0] = units[0].removeprefix(" ")
        return units

    def count(self, d: rt.Draft, n: int) -> int:
        """The context's tokens at haystack size ``n``, from the units' kept counts."""
        st = self.state
        inserted = sum(len(i) for i in st.unit_ids([t for _, t in d.inserts]))
        if d.bag is not None:
            bag = d.bag(n)
            words = sum(len(ids) * m for ids, (_, m) in zip(st.unit_ids([t for t, _ in bag]), bag, strict=True))
            if d.listed is not None:
                words += d.listed_times * self.state.seq_prefix(d.listed, n)[n]
            return words + (self.numbers_prefix(d.numbered(n))[d.numbered(n)] if d.numbered else 0)
        labels = 0 if d.labels is None else st.seq_prefix(d.labels, n + len(d.inserts))[n + len(d.inserts)]
        if d.repeat is not None:
            return labels + inserted + n * len(st.unit_ids([d.repeat])[0])
        prefix = st.seq_prefix(d.seq, d.start + n)
        return labels + inserted + prefix[d.start + n] - prefix[d.start]

    def numbers_prefix(self, entries: int) -> list[int]:
        """Running token counts of a numbered list's labels "1.", " 2.", ... " <entries>." (kept per tokenizer)."""
        labels = rt.NumberLabels()
        return self.state.seq_prefix(labels, entries)

    def fit(self, d: rt.Draft, room: int) -> int | None:
        """The largest haystack size whose context fits ``room`` tokens, None if not even the needles do."""
        if self.count(d, 0) > room:
            return None
        lo, hi = 0, 1
        while hi < 1 << 24 and self.count(d, hi) <= room:  # bounded: a word list can run out of words
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.count(d, mid) <= room else (lo, mid)
        return lo

    def text(self, d: rt.Draft, n: int) -> str:
        before, after = self.frame(d)
        return before + "".join(self._edges(d, d.units(n))) + after

    def literal_ids(self, d: rt.Draft, n: int) -> list[int]:
        return self.lead + self.tokenizer.encode(self.text(d, n), add_special_tokens=False)

    def assemble(self, d: rt.Draft, n: int) -> list[int]:
        before, after = self.frame(d)
        st = self.state
        ctx_ids = list(chain.from_iterable(st.unit_ids(self._edges(d, d.units(n)))))
        enc = self.tokenizer.encode
        splice = self.builder.splice
        return splice(splice(self.lead + enc(before, add_special_tokens=False), ctx_ids), enc(after, add_special_tokens=False))

    def make(self, d: rt.Draft, budget: int, task: str) -> tuple[list[int], int, str] | None:
        """(ids, haystack size, path) of the fullest prompt of at most ``budget`` tokens; None if none fits."""
        for candidate in (d, d.shorter):
            if candidate is None:
                continue
            before, after = self.frame(candidate)
            fixed = len(self.lead) + len(self.tokenizer.encode(before + after, add_special_tokens=False))
            n = self.fit(candidate, budget - fixed)
            if n is not None:
                return self._exact(candidate, n, budget, task)
        return None

    def _exact(self, d: rt.Draft, n: int, budget: int, task: str) -> tuple[list[int], int, str] | None:
        st = self.state
        if task not in st.literal:
            ids = self.assemble(d, n)
            while len(ids) > budget and n > 0:  # a seam merged differently: one unit less
                n -= 1
                ids = self.assemble(d, n)
            if st.checked.get(task, 0) >= _CALIBRATE:
                return (ids, n, "assembled") if len(ids) <= budget else None
            st.checked[task] = st.checked.get(task, 0) + 1
            if ids == self.literal_ids(d, n):
                return (ids, n, "assembled") if len(ids) <= budget else None
            st.literal.add(task)
        ids = self.literal_ids(d, n)
        while len(ids) > budget and n > 0:
            n = max(0, n - max(1, (len(ids) - budget) * n // max(1, len(ids))))
            ids = self.literal_ids(d, n)
        return (ids, n, "literal") if len(ids) <= budget else None

    def icl_lines(self) -> int:
        """Noise lines in variable tracking's worked example: as many as keep it within 500 tokens."""
        probe = rt.vt(random.Random(0), 0.0, 0)
        base = len(self.tokenizer.encode(probe.before, add_special_tokens=False))
        per_line = len(self.state.unit_ids([rt.line(rt.NOISE, True)])[0])
        return max(0, (ICL_TOKENS - base) // per_line)


def build(tokenizer: Any, task: str, tokens: int, index: int, *, chat_mode: str = "auto", depths: int = 10,
          hay: rt.UnitSeq | None = None, maker: PromptMaker | None = None,
          qa_data: rq.QAData | None = None) -> tuple[list[int], rt.Draft, int, str] | None:
    """One prompt of ``task`` for a context of ``tokens`` (any count: 1,048,576 too), leaving its generation
    budget: (ids, draft, haystack size, path), or None when not even the needles fit."""
    maker = maker or PromptMaker(tokenizer, chat_mode)
    if task in ESSAY_TASKS and hay is None:
        hay = rt.TextSeq("noise", [rt.line(rt.NOISE, True)])
    d = draft(task, tokens, index, depths, hay, maker.icl_lines() if task == "vt" else -1, qa_data)
    made = maker.make(d, tokens - rt.NEW_TOKENS[task], task)
    return None if made is None else (made[0], d, made[1], made[2])


def string_match_all(pred: str, refs: Sequence[str]) -> float:
    """RULER's metric for one sample: the share of references found in the prediction, case folded."""
    low = pred.lower()
    return sum(1.0 for r in refs if r.lower() in low) / len(refs)


def string_match_part(pred: str, refs: Sequence[str]) -> float:
    """RULER's QA metric for one sample: 1 if any reference is found in the prediction."""
    low = pred.lower()
    return max(1.0 if r.lower() in low else 0.0 for r in refs)


def postprocess(response: str) -> str:
    """RULER's postprocess_pred: strip, control characters made newlines, strip."""
    return re.sub(r"[\x00-\x1f]", "\n", response.strip()).strip()


class Ruler(GenerationBenchmark):
    """One RULER task; the subclasses below only name it."""

    task = ""
    reads = frozenset({"sampling", "chat_template", "ruler_depths"})
    data_glob = "*.txt"

    @property
    def default_sampling(self) -> SamplingSettings:  # type: ignore[override]
        return SamplingSettings(max_new_tokens=rt.NEW_TOKENS[self.task], temperature=0.0)

    def sampling(self, greedy: bool) -> SamplingSettings:
        return self.default_sampling  # RULER decodes greedily

    def items_key(self, ctx: int) -> int:
        return ctx  # a sample's seed is (task, context, index)

    generates_items = True
    items_version = 1  # raised when the prompts change: tests/test_ruler_items.py pins each version's prompts

    def haystack_source(self, source: DataSource) -> str | None:
        """Where the essay haystack comes from: a file, the shared texts by default, or noise (offline default);
        for the QA tasks, their data file ("" when none was given)."""
        if self.task in rq.QA_DATA:
            return source.location if source.kind == "file" else ""
        if self.task not in ESSAY_TASKS or source.kind == "synthetic":
            return None
        if source.kind == "file":
            return source.location
        return str(SHARED_TEXTS) if SHARED_TEXTS.exists() else ""

    def skip_reason(self, source: DataSource, ctx: int) -> str | None:
        if self.haystack_source(source) != "":
            return None
        if self.task in rq.QA_DATA:
            return rq.missing(self.task)
        return (f"{self.name}: the essay haystack needs long English text; pass --lc-data ruler_haystack=PATH "
                "(a .txt file, a folder of them, or a .jsonl with 'context' or 'text')")

    def load_items(self, source: DataSource, ctx: int, limit: int | None) -> list[Item]:
        hay = self.haystack_source(source)
        data = rq.qa_data(self.task, hay) if self.task in rq.QA_DATA else None
        items = []
        for i in range(limit or DEFAULT_SAMPLES):
            d = draft(self.task, ctx, i, self.options.ruler_depths, None, 0, data)
            depth = None if d.depth is None else round(100 * d.depth)
            items.append(Item(id=f"{i:04d}", gold=json.dumps(d.answers), fields={"index": i, "haystack": hay},
                              meta={"depth": depth}))
        return items

    def score(self, item: Item, response: str) -> dict[str, Any]:
        pred = postprocess(response)
        metric = string_match_part if self.task in rq.QA_DATA else string_match_all
        share = metric(pred, json.loads(item.gold))
        return {"pred": pred, "score": share, "correct": share == 1.0, "null": not pred}

    def evaluate(self, items: Sequence[Item], session: EvalSession) -> None:
        maker = PromptMaker(session.tokenizer, session.chat_mode)
        icl = maker.icl_lines() if self.task == "vt" else -1
        todo = [it for it in items if it.id not in session.done_ids]
        budget = session.ctx - session.sampling.max_new_tokens
        for start in range(0, len(todo), session.chunk_size):
            ready, built = [], []
            for item in todo[start:start + session.chunk_size]:
                where = item.fields["haystack"]
                data = rq.qa_data(self.task, where) if self.task in rq.QA_DATA else None
                hay = (None if data else essay(where) if where else rt.TextSeq("noise", [rt.line(rt.NOISE, True)]))
                d = draft(self.task, session.ctx, item.fields["index"], self.options.ruler_depths, hay, icl, data)
                made = maker.make(d, budget, self.task)
                if made is None:
                    session.emit({"id": item.id, "benchmark": self.name, "ctx": session.ctx, "skipped": "overlength",
                                  "gold": item.gold, **dict(item.meta)})
                    continue
                ids, n, path = made
                ready.append((item, n, path))
                built.append(BuiltPrompt(ids=tuple(ids), original_tokens=len(ids), truncated=False))
            completions = session.generate([b.ids for b in built], session.sampling) if built else []
            for (item, n, path), prompt, comp in zip(ready, built, completions, strict=True):
                record = self.record(item, prompt, comp, session)
                record.update(haystack="documents" if self.task in rq.QA_DATA else "essay" if item.fields["haystack"]
                              else "noise" if self.task in ESSAY_TASKS else None, haystack_units=n, assembly=path)
                session.emit(record)
            if session.progress:
                session.progress(len(todo[start:start + session.chunk_size]))

    def aggregate(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        scored = [r for r in records if not r.get("skipped")]
        by_depth: dict[int, list[Mapping[str, Any]]] = {}
        for r in scored:
            if r.get("depth") is not None:
                by_depth.setdefault(int(r["depth"]), []).append(r)
        return {
            "task": self.task,
            "ruler_score": round(100 * sum(r["score"] for r in scored) / len(scored), 2) if scored else None,
            "depth_accuracy": {str(k): sum(1 for r in v if r["correct"]) / len(v) for k, v in sorted(by_depth.items())},
            "depth_n": {str(k): len(v) for k, v in sorted(by_depth.items())},
            "haystack": next((r.get("haystack") for r in scored), None),
            "skipped_overlength": sum(1 for r in records if r.get("skipped") == "overlength"),
        }


def _task_class(task: str) -> type[Ruler]:
    return type(f"Ruler_{task}", (Ruler,), {"task": task, "name": f"ruler_{task}", "__module__": __name__})


CLASSES = {task: _task_class(task) for task in (*rt.TASKS, *rq.QA_DATA)}
globals().update({cls.__name__: cls for cls in CLASSES.values()})  # "lcplugin.benchmarks.ruler:Ruler_vt"
