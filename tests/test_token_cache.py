"""Token ids are computed once per document and read back from disk after."""

from __future__ import annotations

import numpy as np

from lcplugin.benchmarks.token_cache import TokenCache, tokenizer_fingerprint
from lcplugin.models.tiny import build_tokenizer


def _cache(tmp_path, tok, calls):
    def encode(text):
        calls.append(text)
        return tok.encode(text, add_special_tokens=False)

    return TokenCache(tmp_path, tok, encode)


def test_cold_then_warm_then_changed_text(tmp_path):
    tok = build_tokenizer()
    texts = [("a", "hello world"), ("b", "second document, longer " * 20)]
    calls: list[str] = []
    first = _cache(tmp_path, tok, calls).content_ids("k", texts)
    assert len(calls) == 2 and first["a"].tolist() == tok.encode("hello world", add_special_tokens=False)
    calls.clear()
    warm = _cache(tmp_path, tok, calls)  # a new process would start like this
    again = warm.content_ids("k", texts)
    assert calls == [] and warm.stats == {"encoded": 0, "loaded": 2}
    assert all(np.array_equal(first[i], again[i]) for i in ("a", "b"))
    changed = _cache(tmp_path, tok, calls).content_ids("k", [("a", "hello there"), texts[1]])
    assert calls == ["hello there"]  # only the changed text is tokenized again
    assert changed["a"].tolist() == tok.encode("hello there", add_special_tokens=False)
    calls.clear()
    assert _cache(tmp_path, tok, calls).content_ids("k", texts[1:])["b"].tolist() == first["b"].tolist()
    assert calls == []


def test_damaged_cache_is_rebuilt(tmp_path):
    tok = build_tokenizer()
    calls: list[str] = []
    _cache(tmp_path, tok, calls).content_ids("k", [("a", "x y z")])
    for f in (tmp_path / "tokens").rglob("*.npz"):
        f.write_bytes(b"garbage")
    calls.clear()
    assert _cache(tmp_path, tok, calls).content_ids("k", [("a", "x y z")])["a"].tolist() == \
        tok.encode("x y z", add_special_tokens=False)
    assert calls == ["x y z"]


def test_fingerprint_changes_with_the_chat_template():
    a, b = build_tokenizer(), build_tokenizer()
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b)
    b.chat_template = "{{ messages[0]['content'] }}"
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(b)
