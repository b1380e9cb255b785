"""Reading data files: JSON, JSON Lines, optionally xz/gzip-compressed, with errors that say where.

Every record comes back with a ``where`` string (``file:line``) so that a bad item can be reported by
file, line and field. A file's digest keys caches and results, so a changed file never reuses stale
prompts or records.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import DataError


def _open(path: Path) -> IO[str]:
    if path.suffix == ".xz":
        return lzma.open(path, "rt", encoding="utf-8")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _kind(path: Path) -> str:
    name = path.name
    for comp in (".xz", ".gz"):
        name = name.removesuffix(comp)
    return "jsonl" if name.endswith(".jsonl") else "json"


def check_readable(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"{what}: data file {path} does not exist; pass an existing file (--lc-data)")
    if path.is_dir():
        raise DataError(f"{what}: {path} is a folder; pass a .json, .jsonl or .jsonl.xz file")


def read_records(path: Path, what: str = "data") -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, record)`` for each JSON object in a .json/.jsonl file (optionally compressed)."""
    check_readable(path, what)
    try:
        with _open(path) as fh:
            if _kind(path) == "jsonl":
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); "
                                        "fix or delete that line") from None
                    if not isinstance(obj, dict):
                        raise DataError(f"{path}:{lineno}: expected a JSON object, found {type(obj).__name__}")
                    yield f"{path}:{lineno}", obj
            else:
                try:
                    data = json.load(fh)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
                if isinstance(data, dict) and isinstance(data.get("data"), list):
                    data = data["data"]
                if not isinstance(data, list):
                    raise DataError(f"{path}: expected a JSON list of items")
                for index, obj in enumerate(data):
                    if not isinstance(obj, dict):
                        raise DataError(f"{path}: item {index} is a {type(obj).__name__}, not an object")
                    yield f"{path} item {index}", obj
    except (OSError, EOFError, lzma.LZMAError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc}); check the file is complete and not corrupt") from None


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes (first 16 hex digits)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def folder_digest(folder: Path, pattern: str) -> str:
    """sha256 over the sorted relative names and content digests of the files matching ``pattern``.

    Content, not size or modification time: a folder copied elsewhere keeps its key, a file
    rewritten with other text does not. Names count because they name the items (PG-19 books,
    Ada-LEval settings). Hidden files (editor and lock files) are left out.
    """
    h = hashlib.sha256()
    for path in sorted(folder.glob(pattern)):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            h.update(f"{rel.as_posix()}\0{file_digest(path)}\n".encode())
    return h.hexdigest()[:16]
