"""Token ids of documents, computed once and kept on disk.

Building prompts for five context lengths must not tokenize each document five times: each filled
prompt is tokenized once (without added special tokens), and the ids are stored under a key made of
the tokenizer's fingerprint (its serialized vocabulary, merges, normalizer and chat template) and
the data's digest, with a digest of every text checked on load. A repeated run, or the next context
length, reads the ids back instead of tokenizing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def tokenizer_fingerprint(tokenizer: Any) -> str:
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else repr(sorted(tokenizer.get_vocab().items())).encode())
    h.update(str(getattr(tokenizer, "chat_template", "")).encode())
    return h.hexdigest()[:16]


def _text_digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


class TokenCache:
    """``content_ids(key, [(id, text), ...])`` -> {id: int32 array}, from disk when possible."""

    def __init__(self, root: Path, tokenizer: Any, encode: Callable[[str], list[int]]) -> None:
        self.dir = root / "tokens" / tokenizer_fingerprint(tokenizer)
        self.encode = encode
        self.memory: dict[str, dict[str, np.ndarray]] = {}
        self.stats = {"encoded": 0, "loaded": 0}

    def _load(self, key: str) -> tuple[dict[str, Any], np.ndarray] | None:
        path = self.dir / f"{key}.npz"
        if not path.exists():
            return None
        try:
            with np.load(path) as npz:  # ids and their index in one file, replaced atomically
                return json.loads(str(npz["index"])), npz["data"]
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            return None  # a damaged cache is rebuilt, never trusted

    def content_ids(self, key: str, texts: Sequence[tuple[str, str]]) -> dict[str, np.ndarray]:
        known = self.memory.setdefault(key, {})
        missing = [(i, t) for i, t in texts if i not in known]
        if missing:
            loaded = self._load(key)
            index: dict[str, Any] = loaded[0] if loaded else {}
            data = loaded[1] if loaded else np.zeros(0, dtype=np.int32)
            fresh: dict[str, np.ndarray] = {}
            for item_id, text in missing:
                entry = index.get(item_id)
                digest = _text_digest(text)
                if entry and entry[2] == digest:
                    known[item_id] = np.asarray(data[entry[0]:entry[0] + entry[1]])
                    self.stats["loaded"] += 1
                else:
                    known[item_id] = fresh[item_id] = np.asarray(self.encode(text), dtype=np.int32)
                    self.stats["encoded"] += 1
            if fresh:
                self._save(key, index, data, fresh, {i: _text_digest(t) for i, t in missing if i in fresh})
        return {i: known[i] for i, _ in texts}

    def _save(self, key: str, index: dict[str, Any], data: np.ndarray, fresh: dict[str, np.ndarray],
              digests: dict[str, str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        keep = {i: e for i, e in index.items() if i not in fresh}
        parts, new_index, offset = [], {}, 0
        for item_id, (start, length, digest) in keep.items():
            parts.append(np.asarray(data[start:start + length]))
            new_index[item_id] = [offset, length, digest]
            offset += length
        for item_id, ids in fresh.items():
            parts.append(ids)
            new_index[item_id] = [offset, len(ids), digests[item_id]]
            offset += len(ids)
        tmp = self.dir / f".{key}.{os.getpid()}.npz"
        np.savez(tmp, data=np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32),
                 index=np.array(json.dumps(new_index)))
        os.replace(tmp, self.dir / f"{key}.npz")
