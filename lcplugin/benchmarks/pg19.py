"""PG-19 perplexity versus context length: the last-K-tokens-at-context-L design.

For context L, every book with at least L tokens contributes ``windows`` windows of L tokens evenly
spread through it (first at the start, last at the end); the model reads each whole window and the
negative log-likelihood of its last K tokens is scored (K = 100 by default). Every scored token thus
sees about L tokens of context, alike for Transformers and SSMs. Windows start mid-text without a
BOS token. We report token-level perplexity exp(sum NLL / scored tokens) and bits per byte, sum NLL /
(UTF-8 bytes of the scored text x ln 2), which compares models whose tokenizers differ.
"""

from __future__ import annotations

import math
import random
import unittest
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..engines.base import SamplingSettings
from ..errors import DataError
from .base import Benchmark, DataSource, EvalSession, Item, Measure, Outcome

HUB_ID = "deepmind/pg19"


def window_starts(n_tokens: int, length: int, windows: int) -> list[int]:
    """Evenly spread starts of up to ``windows`` windows of ``length`` tokens; none if the book is short."""
    if n_tokens < length:
        return []
    span = n_tokens - length
    count = max(1, min(windows, span + 1))
    if count == 1:
        return [0]
    return sorted({round(i * span / (count - 1)) for i in range(count)})


def synthetic_books(n: int = 3, words: int = 3000, seed: int = 19) -> list[dict[str, str]]:
    vocab = ["the", "river", "ran", "past", "old", "mills", "and", "quiet", "farms", "where", "children", "played", "near", "the", "water", "while", "the", "miller", "counted", "sacks", "of", "grain", "by", "lamplight"]
    books = []
    for b in range(n):
        rng = random.Random(seed * 100 + b)
        text = " ".join(rng.choice(vocab) for _ in range(words))
        books.append({"id": f"synthetic-book-{b}", "title": f"Synthetic book {b}", "text": text})
    return books


def lengths(book_tokens: dict[str, int]) -> str:
    """The books' lengths in tokens, for a reader deciding which contexts the data can fill: each of up
    to ten, else the count, the longest three and the median."""
    sizes = sorted(book_tokens.values(), reverse=True)
    if not sizes:
        return ""
    if len(sizes) <= 10:
        return f"{len(sizes)} book(s) of " + ", ".join(f"{n:,}" for n in sizes) + " tokens"
    return (f"{len(sizes)} books, longest {', '.join(f'{n:,}' for n in sizes[:3])} tokens, "
            f"median {sizes[len(sizes) // 2]:,}")


def window_bits_per_byte(record: Mapping[str, Any]) -> float | None:
    """A window's bits per byte (of its scored text), None for a record without one."""
    if record.get("nll") is None or not record.get("bytes"):
        return None
    return float(record["nll"]) / (float(record["bytes"]) * math.log(2))


class PG19(Benchmark):
    name = "pg19"
    # raw text windows: no generation, no prompt, no chat template
    reads = frozenset({"pg19_windows", "pg19_score_last"})
    measure = Measure(label="bits per byte", unit="window", figures=("bits_per_byte", "perplexity"))
    data_glob = "*.txt"
    batched = False  # each window scored alone (engine.loglikelihood)

    def load_items(self, source: DataSource, ctx: int, limit: int | None) -> list[Item]:
        if source.kind == "synthetic":
            books = synthetic_books()
        elif source.kind == "file":
            folder = Path(source.location)
            if not folder.is_dir():
                raise DataError(f"pg19: {folder} is not a folder; pass a folder of .txt books with --lc-data pg19=DIR")
            books = [{"id": p.stem, "title": p.stem, "text": p.read_text(encoding="utf-8", errors="replace")}
                     for p in sorted(folder.glob("*.txt"))]
            if not books:
                raise DataError(f"pg19: {folder} holds no .txt files")
        elif source.kind == "hub":
            try:
                import datasets
            except ImportError:
                raise DataError("pg19 from the hub needs the 'datasets' package: pip install 'lcplugin[hub]', "
                                "or pass a folder of .txt books with --lc-data pg19=DIR") from None
            ds = datasets.load_dataset(HUB_ID, split="test")
            books = [{"id": str(i), "title": r["short_book_title"], "text": r["text"]} for i, r in enumerate(ds)]
        else:
            raise DataError(f"pg19: unknown data source kind {source.kind!r}")
        items = [Item(id=b["id"], gold="", fields=b, meta={}) for b in books]
        return items[:limit] if limit else items

    def evaluate(self, items: Sequence[Item], session: EvalSession) -> None:
        if session.loglikelihood is None:
            raise DataError("pg19 needs an engine that scores log-likelihoods")
        k = self.options.pg19_score_last
        if k >= session.ctx:
            raise DataError(f"pg19: --lc-pg19-score-last {k} must be smaller than the context {session.ctx}")
        tok = session.tokenizer
        self.book_tokens: dict[str, int] = {}
        for item in items:
            text = item.fields["text"]
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            ids, offsets = enc["input_ids"], enc["offset_mapping"]
            self.book_tokens[item.id] = len(ids)
            for start in window_starts(len(ids), session.ctx, self.options.pg19_windows):
                record_id = f"{item.id}@{start}"
                if record_id in session.done_ids:
                    continue
                window = ids[start:start + session.ctx]
                first = start + session.ctx - k
                scored_text = text[offsets[first][0]:offsets[start + session.ctx - 1][1]]
                result = session.loglikelihood(window, k)
                session.emit({
                    "id": record_id, "benchmark": self.name, "ctx": session.ctx, "book": item.id,
                    "prompt_tokens": len(window), "scored_tokens": k, "nll": result.nll,
                    "bytes": len(scored_text.encode("utf-8")), "ttft_s": result.seconds, "decode_s": None,
                    "output_tokens": 0, "batch_id": f"{record_id}", "book_tokens": len(ids),
                })
            if session.progress:
                session.progress(1)
        if self.book_tokens and max(self.book_tokens.values()) < session.ctx:
            raise unittest.SkipTest(f"pg19 at {session.ctx:,} tokens: no book reaches it ({lengths(self.book_tokens)}); "
                                    f"pass --lc-data pg19=DIR with books of at least {session.ctx:,} tokens")

    def outcomes(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Outcome]:
        """Each window's bits per byte, keyed by book and token offset."""
        return {str(r["id"]): b for r in records if (b := window_bits_per_byte(r)) is not None}

    def cost_plan(self, n_items: int, ctx: int, sampling: SamplingSettings) -> list[tuple[int, int]]:
        """A book is read as its windows of ``ctx`` tokens, prefill only (shorter books give fewer)."""
        return [(self.options.pg19_windows * ctx, 0)] * n_items

    def aggregate(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        nll = sum(r["nll"] for r in records)
        tokens = sum(r["scored_tokens"] for r in records)
        nbytes = sum(r["bytes"] for r in records)
        return {
            "perplexity": math.exp(nll / tokens) if tokens else None,
            "bits_per_byte": nll / (nbytes * math.log(2)) if nbytes else None,
            "books": len({r["book"] for r in records}), "windows": len(records),
            "book_tokens": lengths(getattr(self, "book_tokens", {})) or None,
            "score_last": self.options.pg19_score_last,
        }
