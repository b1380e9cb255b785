"""Fitting a prompt into a context: middle truncation in the model's own tokens, the official way.

LongBench's rule: tokenize the whole filled prompt (default special tokens), and if it exceeds
``max_len`` keep ``ids[:max_len//2] + ids[-max_len//2:]`` (Python floor division: for odd
``max_len`` the tail keeps one token more) and decode with special tokens skipped; the chat template
is applied afterwards and the result tokenized again. Our ``max_len`` for a test at context C is C
minus the generation budget minus the chat template's measured overhead (``--lc-budget context``);
``--lc-budget official`` caps it at the official ``pred.py``'s 120,000 for 128k models, scaled:
floor(C x 120000 / 131072) (``official_max_len``).

Cost: the official steps re-tokenize each prompt once per context length. We tokenize each document
once and, per length, splice token ids: the chat template's prefix and suffix ids around the cut
ids, each seam re-tokenized in a small window that grows until its ends agree with the ids around it
(tokenization effects are local to the pre-tokens at the seam). The result equals tokenizing the
official text; the tests check that on real data with each real tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import LcError

_SENTINEL = "\u2063LCPLUGIN\u2063"  # invisible separator: never merged with template text
_CALIBRATION = 3  # prompts built both ways per tokenizer before trusting the splice
_SPLICE_OK: dict[tuple, bool] = {}
_SPLICE_CHECKS: dict[tuple, int] = {}


def forget_splice_checks() -> None:
    """Forget what the splice calibration learned in this process (the prep-bench command times a cold
    start, and tests start clean)."""
    _SPLICE_OK.clear()
    _SPLICE_CHECKS.clear()


@dataclass(frozen=True, kw_only=True)
class BuiltPrompt:
    ids: tuple[int, ...]  # exactly what the engine receives
    original_tokens: int  # the filled prompt before truncation, default special tokens included
    truncated: bool
    text: str | None = None  # what the model reads (after truncation and template), when asked for


OFFICIAL_MAX_LEN = 120_000  # LongBench-v2's config/model2maxlen.json, for every 128k-window model
OFFICIAL_CONTEXT = 131_072


def official_max_len(ctx: int) -> int:
    """The official budget at context ``ctx``: 120,000 at 128k and the same proportion below."""
    return ctx * OFFICIAL_MAX_LEN // OFFICIAL_CONTEXT


def middle_truncate(ids: Sequence[int], max_len: int) -> list[int]:
    """LongBench's cut, verbatim: ``ids[:max_len//2] + ids[-max_len//2:]``."""
    if len(ids) <= max_len:
        return list(ids)
    return list(ids[: max_len // 2]) + list(ids[-max_len // 2:])


def uses_chat_template(tokenizer: Any, mode: str) -> bool:
    has = bool(getattr(tokenizer, "chat_template", None))
    if mode == "on" and not has:
        raise LcError(f"the spec asks for chat_template = \"on\" but tokenizer {tokenizer.name_or_path!r} has none; "
                      "set chat_template = \"off\" or use a tokenizer with a template")
    return has and mode != "off"


def apply_chat(tokenizer: Any, text: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)


def _as_list(ids: Sequence[int]) -> list[int]:
    return ids.tolist() if hasattr(ids, "tolist") else list(ids)


def _decode(tokenizer: Any, ids: Sequence[int], skip: bool) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=skip, clean_up_tokenization_spaces=False)


class PromptBuilder:
    """Builds prompts for one model at one context length and one generation budget."""

    def __init__(self, tokenizer: Any, ctx: int, max_new_tokens: int, chat_mode: str = "auto",
                 max_len: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.ctx = ctx
        self.max_new_tokens = max_new_tokens
        self.chat = uses_chat_template(tokenizer, chat_mode)
        probe = tokenizer.encode("a")
        bare = tokenizer.encode("a", add_special_tokens=False)
        at = next(i for i in range(len(probe)) if probe[i:i + len(bare)] == bare)
        self.pre_ids = probe[:at]  # what encode() adds around the text (Llama: BOS)
        self.post_ids = probe[at + len(bare):]
        self.special_ids = set(tokenizer.all_special_ids)
        self._special_array = np.fromiter(self.special_ids, dtype=np.int64)
        if self.chat:
            rendered = apply_chat(tokenizer, _SENTINEL)
            self.chat_prefix, _, self.chat_suffix = rendered.partition(_SENTINEL)
            self.frame = (tokenizer.encode(self.chat_prefix, add_special_tokens=False),
                          tokenizer.encode(self.chat_suffix, add_special_tokens=False))
        else:
            self.chat_prefix = self.chat_suffix = ""
            self.frame = (list(self.pre_ids), list(self.post_ids))
        self.overhead = len(self._final_ids("")) if self.chat else 0
        # the longest filled prompt (its ids from encode(), special tokens included) kept before the
        # chat template goes around it; ``max_len`` (the official budget) caps it, the context bounds it
        self.max_len = ctx - max_new_tokens - self.overhead
        if max_len is not None:
            self.max_len = min(self.max_len, max_len)
        if self.max_len < 16:
            raise LcError(f"context {ctx} leaves {self.max_len} prompt tokens after {max_new_tokens} new tokens "
                          f"and a chat template of {self.overhead} tokens; use a longer context")

    # -- the official steps, text in and text out (reference path) --------------------------
    def _final_ids(self, body: str) -> list[int]:
        if self.chat:
            return self.tokenizer.encode(apply_chat(self.tokenizer, body), add_special_tokens=False)
        return self.tokenizer.encode(body)

    def official(self, text: str) -> tuple[str, list[int], bool]:
        """Text the model reads, its ids, whether cut: the slow, literal reading of the protocol
        (plus our fit rule: if re-tokenizing the cut text overflows, cut that many tokens more)."""
        ids = self.tokenizer.encode(text)
        limit, max_len = self.ctx - self.max_new_tokens, self.max_len
        while True:
            truncated = len(ids) > max_len
            body = _decode(self.tokenizer, middle_truncate(ids, max_len), True) if truncated else text
            final = self._final_ids(body)
            if len(final) <= limit:
                return (apply_chat(self.tokenizer, body) if self.chat else body), final, truncated
            max_len -= len(final) - limit

    # -- the fast path: ids in, ids out ------------------------------------------------------
    def _strip_special(self, ids: list[int]) -> list[int]:
        """What ``decode(skip_special_tokens=True)`` drops, removed from the ids directly."""
        if not self.special_ids:
            return ids
        arr = np.asarray(ids, dtype=np.int64)
        keep = ~np.isin(arr, self._special_array)
        return ids if keep.all() else arr[keep].tolist()

    def content_ids(self, text: str) -> list[int]:
        """A document's ids without added special tokens: what the token cache stores."""
        return self.tokenizer.encode(text, add_special_tokens=False)

    def splice(self, left: list[int], right: list[int], k: int = 16) -> list[int]:
        """``left + right`` re-tokenized at the seam, as tokenizing their joined text would."""
        if not left or not right:
            return left + right
        while True:
            a, b = left[-k:], right[:k]
            window = self.tokenizer.encode(_decode(self.tokenizer, a + b, False), add_special_tokens=False)
            guard = max(1, min(len(a), len(b)) // 4)
            whole = k >= len(left) and k >= len(right)
            if whole or (window[:guard] == a[:guard] and window[-guard:] == b[-guard:]):
                return left[: max(0, len(left) - k)] + window + right[k:]
            k *= 2

    def build(self, text: str, content: Sequence[int] | None = None, want_text: bool = False) -> BuiltPrompt:
        """Fit a filled prompt (its text, and its content ids if cached) into the budget.

        The first prompts a tokenizer sees are built both ways; if splicing ever disagrees with the
        official steps (SentencePiece tokenizers that prepend a space do), this tokenizer takes the
        official path from then on.
        """
        key = (getattr(self.tokenizer, "name_or_path", ""), type(self.tokenizer).__name__, self.chat)
        verdict = _SPLICE_OK.get(key)
        if verdict is False:
            final_text, ids, truncated = self.official(text)
            return BuiltPrompt(ids=tuple(ids), original_tokens=len(self.tokenizer.encode(text)),
                               truncated=truncated, text=final_text if want_text else None)
        built = self._build_fast(text, content, want_text)
        if verdict is None or _SPLICE_CHECKS.get(key, 0) < _CALIBRATION:
            final_text, ids, truncated = self.official(text)
            _SPLICE_CHECKS[key] = _SPLICE_CHECKS.get(key, 0) + 1
            same = list(built.ids) == ids and truncated == built.truncated
            _SPLICE_OK[key] = same and verdict is not False
            if not same:
                return BuiltPrompt(ids=tuple(ids), original_tokens=built.original_tokens, truncated=truncated,
                                   text=final_text if want_text else None)
        return built

    def _build_fast(self, text: str, content: Sequence[int] | None, want_text: bool) -> BuiltPrompt:
        if content is None:
            content = self.content_ids(text)
        pre, post = list(self.pre_ids), list(self.post_ids)
        full_len = len(pre) + len(content) + len(post)
        limit = self.ctx - self.max_new_tokens
        max_len = self.max_len
        for _ in range(8):
            truncated = full_len > max_len
            if truncated:  # the official slice of pre + content + post, without building the whole list
                h, t = max_len // 2, -(-max_len // 2)
                head = (pre + _as_list(content[:h]))[:h]
                tail = (_as_list(content[-t:]) + post)[-t:]
                body = self.splice(self._strip_special(head), self._strip_special(tail))
            else:
                body = _as_list(content)
            prefix, suffix = self.frame
            ids = self.splice(self.splice(list(prefix), body), list(suffix)) if self.chat else prefix + body + suffix
            if len(ids) <= limit:
                shown = None
                if want_text:
                    body_text = text
                    if truncated:
                        body_text = _decode(self.tokenizer, middle_truncate(pre + _as_list(content) + post, max_len), True)
                    shown = apply_chat(self.tokenizer, body_text) if self.chat else body_text
                return BuiltPrompt(ids=tuple(ids), original_tokens=full_len, truncated=truncated, text=shown)
            max_len -= len(ids) - limit
        raise LcError(f"could not fit a prompt of {full_len} tokens into context {self.ctx}")
