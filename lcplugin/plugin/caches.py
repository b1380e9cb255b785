"""What a session loads once and every later test reuses: tokenizers, benchmark items, token-id
caches and data digests.

Held by the session-scoped ``lc_caches`` fixture and passed to the runner, so a test session starts
with empty caches and ``LcSession`` stays plain settings and matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..benchmarks.base import Item
from ..engines.base import EngineConfig

if TYPE_CHECKING:
    from ..benchmarks.token_cache import TokenCache  # numpy: imported when a test first needs it


@dataclass(frozen=True)
class SessionCaches:
    """One session's caches, each keyed by everything its value depends on."""

    tokenizers: dict[str, Any] = field(default_factory=dict)  # by tokenizer source
    items: dict[Hashable, list[Item]] = field(default_factory=dict)  # by benchmark, data, limit, items key
    token_caches: dict[int, TokenCache] = field(default_factory=dict)  # by tokenizer object
    digests: dict[tuple[str, str], str] = field(default_factory=dict)  # by (benchmark, data path)

    def tokenizer(self, config: EngineConfig) -> Any:
        if config.tokenizer not in self.tokenizers:
            from transformers import AutoTokenizer

            self.tokenizers[config.tokenizer] = AutoTokenizer.from_pretrained(
                config.tokenizer, revision=config.revision, trust_remote_code=config.trust_remote_code)
        return self.tokenizers[config.tokenizer]

    def token_cache(self, tokenizer: Any) -> TokenCache:
        from ..benchmarks.token_cache import TokenCache
        from ..models.tiny import cache_root

        key = id(tokenizer)
        if key not in self.token_caches:
            self.token_caches[key] = TokenCache(
                cache_root(), tokenizer, lambda text: tokenizer.encode(text, add_special_tokens=False))
        return self.token_caches[key]

    def items_for(self, key: Hashable, load: Callable[[], list[Item]]) -> list[Item]:
        if key not in self.items:
            self.items[key] = load()
        return self.items[key]
