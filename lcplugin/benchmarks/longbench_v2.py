"""LongBench-v2 (THUDM/LongBench, v2), the official protocol.

Templates are the official prompt files, verbatim (no trailing newline; the chain-of-thought ones
use U+2019 in "Let’s"), filled by plain string replacement with stripped fields. Answers are
extracted by the official rule only: remove ``*``, then ``The correct answer is \\(([A-D])\\)``, else
``The correct answer is ([A-D])``, else no answer (null, scored wrong). Buckets follow the official
``result.py``: easy vs the rest, short / medium / the rest, using the dataset's own labels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..engines.base import SamplingSettings
from ..errors import DataError
from .base import DataSource, EvalSession, GenerationBenchmark, Item, require_fields
from .datafiles import read_records
from .truncation import PromptBuilder, official_max_len

HUB_ID = "THUDM/LongBench-v2"
FIELDS = ("_id", "question", "choice_A", "choice_B", "choice_C", "choice_D", "answer", "context",
          "difficulty", "length")
_CHOICES = "Choices:\n(A) $C_A$\n(B) $C_B$\n(C) $C_C$\n(D) $C_D$"
TEMPLATE_0SHOT = (
    "Please read the following text and answer the question below.\n\n<text>\n$DOC$\n</text>\n\n"
    "What is the correct answer to this question: $Q$\n" + _CHOICES + "\n\n"
    'Format your response as follows: "The correct answer is (insert answer here)".'
)
TEMPLATE_0SHOT_COT = (
    "Please read the following text and answer the questions below.\n\n<text>\n$DOC$\n</text>\n\n"
    "What is the correct answer to this question: $Q$\n" + _CHOICES + "\n\nLet\u2019s think step by step:"
)
TEMPLATE_0SHOT_COT_ANS = (
    "Please read the following text and answer the questions below.\n\nThe text is too long and omitted here.\n\n"
    "What is the correct answer to this question: $Q$\n" + _CHOICES + "\n\nLet\u2019s think step by step: $COT$\n\n"
    'Based on the above, what is the single, most likely answer choice? Format your response as follows: '
    '"The correct answer is (insert answer here)".'
)
TEMPLATE_NO_CONTEXT = (
    "What is the correct answer to this question: $Q$\n" + _CHOICES + "\n\n"
    'What is the single, most likely answer choice? Format your response as follows: '
    '"The correct answer is (insert answer here)".'
)
_PAREN = re.compile(r"The correct answer is \(([A-D])\)")
_BARE = re.compile(r"The correct answer is ([A-D])")


def fill(template: str, item: Mapping[str, Any], cot: str = "") -> str:
    """The official substitution: plain replaces, every field stripped."""
    return (template.replace("$DOC$", str(item.get("context", "")).strip())
            .replace("$Q$", str(item["question"]).strip())
            .replace("$C_A$", str(item["choice_A"]).strip())
            .replace("$C_B$", str(item["choice_B"]).strip())
            .replace("$C_C$", str(item["choice_C"]).strip())
            .replace("$C_D$", str(item["choice_D"]).strip())
            .replace("$COT$", cot.strip()))


def extract_answer(response: str) -> str | None:
    """The official extractor; None means no answer (counted as null and wrong)."""
    response = response.replace("*", "")
    m = _PAREN.search(response) or _BARE.search(response)
    return m.group(1) if m else None


def official_buckets(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``result.py``'s table: overall, easy/hard, short/medium/long, x100 rounded to one decimal."""

    def pct(rows: list[Mapping[str, Any]]) -> float:
        return round(100 * sum(1 for r in rows if r["correct"]) / len(rows), 1) if rows else 0.0

    rows = list(records)
    return {
        "overall": pct(rows),
        "easy": pct([r for r in rows if r.get("difficulty") == "easy"]),
        "hard": pct([r for r in rows if r.get("difficulty") != "easy"]),
        "short": pct([r for r in rows if r.get("length") == "short"]),
        "medium": pct([r for r in rows if r.get("length") == "medium"]),
        "long": pct([r for r in rows if r.get("length") not in ("short", "medium")]),
    }


_LENIENT = re.compile(r"\b([A-D])\b")


def lenient_answer(response: str) -> str | None:
    """What lenient ports do (official rule, else any standalone A-D): a separate metric, never accuracy."""
    return extract_answer(response) or (m.group(1) if (m := _LENIENT.search(response.replace("*", ""))) else None)


def to_item(raw: Mapping[str, Any], where: str, need_context: bool = True) -> Item:
    require_fields(raw, FIELDS if need_context else tuple(f for f in FIELDS if f != "context"), where)
    if raw["answer"] not in ("A", "B", "C", "D"):
        raise DataError(f"{where}: field 'answer' is {raw['answer']!r}; expected one of A, B, C, D")
    meta = {"difficulty": raw["difficulty"], "length": raw["length"]}
    if "domain" in raw:
        meta["domain"] = raw["domain"]
    return Item(id=str(raw["_id"]), gold=raw["answer"], fields=dict(raw), meta=meta)


def load_file(path: Path, limit: int | None = None, need_context: bool = True,
              select: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> list[Item]:
    items: list[Item] = []
    for where, raw in read_records(path, "longbench_v2"):
        item = to_item(raw, where, need_context)
        if all(str(raw.get(k)) in allowed for k, allowed in select):
            items.append(item)
        if limit is not None and len(items) >= limit:
            break
    return items


def load_hub(limit: int | None = None, select: tuple = ()) -> tuple[list[Item], str]:
    try:
        import datasets
    except ImportError:
        raise DataError("longbench_v2 from the hub needs the 'datasets' package: pip install 'lcplugin[hub]', "
                        "or pass a local file with --lc-data longbench_v2=PATH") from None
    ds = datasets.load_dataset(HUB_ID, split="train")
    items = []
    for index, raw in enumerate(ds):
        if all(str(raw.get(k)) in allowed for k, allowed in select):
            items.append(to_item(raw, f"{HUB_ID} row {index}"))
        if limit is not None and len(items) >= limit:
            break
    return items, f"hub:{HUB_ID}@{getattr(ds, '_fingerprint', '')}"


MODES = {"0shot": TEMPLATE_0SHOT, "cot": TEMPLATE_0SHOT_COT, "nocontext": TEMPLATE_NO_CONTEXT}
FULL_ABOVE = 131072  # --lc-fill auto: the official rule up to 128k, full prompts past it
FULL_SHARE = 0.9  # a full prompt reaches 90 % of the context


def fill_rule(option: str, mode: str, ctx: int) -> str:
    """``any`` (the official rule: every item, cut to fit or whole) or ``full`` (only items whose whole prompt
    reaches ``FULL_SHARE`` of the context). Why: past 128k most items are shorter than the context (159 of
    480 exceed 128k, 8 exceed 1M), so under the official rule a 1M test measures mostly short prompts.
    ``auto``: full past ``FULL_ABOVE``. Without a document (``nocontext``) no prompt fills anything: any."""
    if mode == "nocontext":
        return "any"
    return option if option != "auto" else ("full" if ctx > FULL_ABOVE else "any")


class LongBenchV2(GenerationBenchmark):
    """Modes: ``0shot`` (default), ``cot`` (two passes: 1024 then 128 new tokens), ``nocontext``."""

    name = "longbench_v2"
    reads = GenerationBenchmark.reads | {"mode", "select", "budget", "fill"}  # fill: keyed where it acts (inputs)
    default_sampling = SamplingSettings(max_new_tokens=128, temperature=0.1)
    cot_sampling = SamplingSettings(max_new_tokens=1024, temperature=0.1)
    answer_tokens = 128  # chain of thought's second pass, the answer

    def sampling(self, greedy: bool) -> SamplingSettings:
        base = self.cot_sampling if self.options.mode == "cot" else self.default_sampling
        return SamplingSettings(max_new_tokens=base.max_new_tokens, temperature=0.0 if greedy else base.temperature)

    def new_tokens(self) -> int:
        """128; with chain of thought 1,024 reasoning then 128 answer: 1,152."""
        return super().new_tokens() + (self.answer_tokens if self.passes == 2 else 0)

    def load_items(self, source: DataSource, ctx: int, limit: int | None) -> list[Item]:
        need_context = self.options.mode != "nocontext"
        select = self.options.select
        if source.kind == "file":
            return load_file(Path(source.location), limit, need_context, select)
        if source.kind == "hub":
            return load_hub(limit, select)[0]
        if source.kind == "synthetic":
            from .synthetic import synthetic_longbench

            raws = synthetic_longbench(limit or 8)
            return [to_item(r, f"synthetic item {i}") for i, r in enumerate(raws)
                    if all(str(r.get(k)) in allowed for k, allowed in select)]
        raise DataError(f"longbench_v2: unknown data source kind {source.kind!r}")

    def prompt_text(self, item: Item) -> str:
        return fill(MODES[self.options.mode], item.fields)

    def score(self, item: Item, response: str) -> dict[str, Any]:
        pred = extract_answer(response)
        lenient = lenient_answer(response)
        return {"pred": pred, "correct": pred == item.gold, "null": pred is None, "mode": self.options.mode,
                "lenient_pred": lenient, "lenient_correct": lenient == item.gold}

    def inputs(self, ctx: int, readable: Mapping[str, Any]) -> dict[str, Any]:
        """The fill rule keys results only where it leaves items out (``full``): the official rule's keep theirs."""
        out = super().inputs(ctx, readable)
        out.pop("fill", None)
        rule = fill_rule(self.options.fill, self.options.mode, ctx)
        return {**out, "fill": rule} if rule != "any" else out

    def left_out(self, prompt: Any, session: EvalSession) -> str | None:
        """Under the ``full`` rule, a prompt shorter than 90 % of the context is left out (``underfill``)."""
        if (fill_rule(self.options.fill, self.options.mode, session.ctx) == "full"
                and prompt.original_tokens < FULL_SHARE * session.ctx):
            return "underfill"
        return super().left_out(prompt, session)

    def max_len(self, ctx: int) -> int | None:
        """``--lc-budget official``: pred.py's max_len, 120,000 at 128k, scaled to ``ctx``; else the context decides."""
        return official_max_len(ctx) if self.options.budget == "official" else None

    @property
    def passes(self) -> int:  # type: ignore[override]
        return 2 if self.options.mode == "cot" else 1

    def second_pass(self, items: Sequence[Item], records: list[dict[str, Any]], session: EvalSession) -> None:
        """Chain of thought, second pass: the question without the document, ``$COT$`` <- the first
        response, 128 new tokens; the record keeps both responses and is scored on the answer."""
        answer_sampling = SamplingSettings(max_new_tokens=self.answer_tokens, temperature=session.sampling.temperature,
                                           seed=session.sampling.seed)
        builder = PromptBuilder(session.tokenizer, session.ctx, self.answer_tokens, session.chat_mode,
                                max_len=self.max_len(session.ctx))
        prompts = [builder.build(fill(TEMPLATE_0SHOT_COT_ANS, item.fields, record["response"])).ids
                   for item, record in zip(items, records, strict=True)]
        answers = session.generate(prompts, answer_sampling)
        for item, record, comp in zip(items, records, answers, strict=True):
            record.update(self.score(item, comp.text), cot_response=record["response"], response=comp.text,
                          answer_prompt_tokens=comp.prompt_tokens, answer_ttft_s=comp.ttft_s,
                          answer_decode_s=comp.decode_s)

    def aggregate(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        scored = [r for r in records if not r.get("skipped")]
        buckets = official_buckets(scored)
        lenient = sum(1 for r in scored if r.get("lenient_correct"))
        ctx = max((int(r["ctx"]) for r in records if r.get("ctx")), default=0)
        return {"buckets": buckets, "mode": self.options.mode, "budget": self.options.budget,
                "fill": fill_rule(self.options.fill, self.options.mode, ctx) if records else None,
                "lenient_accuracy": lenient / len(scored) if scored else None,
                "skipped_overlength": sum(1 for r in records if r.get("skipped") == "overlength"),
                "skipped_underfill": sum(1 for r in records if r.get("skipped") == "underfill")}


__all__ = ["LongBenchV2", "extract_answer", "fill", "official_buckets"]
