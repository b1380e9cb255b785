"""Context lengths: ``"32k" <-> 32768``.

Test ids use tokens/1024 + "k" (131072 -> ``128k``) so ``-k "32k"`` selects a context length, and
tokens/1024² + "m" for whole multiples of 1,048,576 (``1m``), the label a user types past 512k.
Plain integers are accepted on input for lengths that are not a multiple of 1024.
"""

from __future__ import annotations

import re

from ..errors import LcError

_LABEL = re.compile(r"^\s*(\d+)\s*([kKmM]?)\s*$")
_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024}


def parse_ctx(text: str | int) -> int:
    """Parse ``"8k"``, ``"128K"``, ``"1m"`` (1,048,576) or ``"32768"`` into a number of tokens."""
    if isinstance(text, int):
        tokens = text
    else:
        m = _LABEL.match(text)
        if not m:
            raise LcError(
                f"context length {text!r} does not parse: write a number of tokens (32768) "
                "or thousands of 1024 tokens (32k), or millions of 1024² tokens (1m)"
            )
        tokens = int(m.group(1)) * _UNITS[m.group(2).lower()]
    if tokens <= 0:
        raise LcError(f"context length {text!r} must be positive")
    return tokens


def parse_ctx_list(text: str) -> list[int]:
    """Parse a comma-separated list (``"8k,32k"``), keeping order and dropping repeats."""
    out: list[int] = []
    for part in text.split(","):
        if part.strip():
            value = parse_ctx(part)
            if value not in out:
                out.append(value)
    if not out:
        raise LcError(f"--lc-ctx {text!r} names no context length (example: --lc-ctx 8k,32k)")
    return out


def ctx_label(tokens: int) -> str:
    """``32768 -> "32k"``, ``1048576 -> "1m"``; a length that is not a multiple of 1024 keeps its number."""
    if tokens % (1024 * 1024) == 0:
        return f"{tokens // (1024 * 1024)}m"
    return f"{tokens // 1024}k" if tokens % 1024 == 0 else str(tokens)
