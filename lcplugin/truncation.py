"""Fitting a prompt into a context: middle truncation in the model's own tokens, the official way.

LongBench's rule: tokenize the whole filled prompt (default special tokens), and if it exceeds
``max_len`` keep ``ids[:max_len//2] + ids[-max_len//2:]`` (Python floor division: for odd
``max_len`` the tail keeps one token more) and decode with special tokens skipped; the chat template
is applied afterwards. Our ``max_len`` for a test at context C is C minus the generation budget minus
the chat template's measured overhead. Re-tokenizing decoded text can merge tokens differently at
the cut, so the final ids are checked against the budget and the cut is tightened until they fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import LcError


@dataclass(frozen=True, kw_only=True)
class BuiltPrompt:
    ids: tuple[int, ...]  # exactly what the engine receives
    text: str  # the text after truncation and chat template (decode of ``ids`` for people)
    original_tokens: int  # the filled prompt before truncation, in the model's tokens
    truncated: bool


def middle_truncate(ids: list[int], max_len: int) -> list[int]:
    """LongBench's cut, verbatim: ``ids[:max_len//2] + ids[-max_len//2:]``."""
    if len(ids) <= max_len:
        return ids
    return ids[: max_len // 2] + ids[-max_len // 2:]


def uses_chat_template(tokenizer: Any, mode: str) -> bool:
    has = bool(getattr(tokenizer, "chat_template", None))
    if mode == "on" and not has:
        raise LcError(f"the spec asks for chat_template = \"on\" but tokenizer {tokenizer.name_or_path!r} has none; "
                      "set chat_template = \"off\" or use a tokenizer with a template")
    return has and mode != "off"


def apply_chat(tokenizer: Any, text: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)


class PromptBuilder:
    """Builds prompts for one model at one context length and one generation budget."""

    def __init__(self, tokenizer: Any, ctx: int, max_new_tokens: int, chat_mode: str = "auto") -> None:
        self.tokenizer = tokenizer
        self.ctx = ctx
        self.max_new_tokens = max_new_tokens
        self.chat = uses_chat_template(tokenizer, chat_mode)
        self.overhead = len(self._final_ids("")) if self.chat else 0
        self.max_len = ctx - max_new_tokens - self.overhead
        if self.max_len < 16:
            raise LcError(f"context {ctx} leaves {self.max_len} prompt tokens after {max_new_tokens} new tokens "
                          f"and a chat template of {self.overhead} tokens; use a longer context")

    def _final_ids(self, text: str) -> list[int]:
        if self.chat:
            return self.tokenizer.encode(apply_chat(self.tokenizer, text), add_special_tokens=False)
        return self.tokenizer.encode(text)

    def encode(self, text: str) -> list[int]:
        """The filled prompt in the model's tokens, default special tokens (the official step)."""
        return self.tokenizer.encode(text)

    def build(self, text: str, ids: list[int] | None = None) -> BuiltPrompt:
        """Fit ``text`` (whose token ids may be passed in, already computed) into the budget."""
        ids = self.encode(text) if ids is None else ids
        limit = self.ctx - self.max_new_tokens
        max_len = self.max_len
        for _ in range(8):
            truncated = len(ids) > max_len
            body = (self.tokenizer.decode(middle_truncate(ids, max_len), skip_special_tokens=True)
                    if truncated else text)
            final = self._final_ids(body)
            if len(final) <= limit:
                shown = apply_chat(self.tokenizer, body) if self.chat else body
                return BuiltPrompt(ids=tuple(final), text=shown, original_tokens=len(ids), truncated=truncated)
            max_len -= len(final) - limit
        raise LcError(f"could not fit a prompt of {len(ids)} tokens into context {self.ctx}")
