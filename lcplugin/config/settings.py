"""The options as typed, frozen settings, and the parsers that turn option strings into them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..benchmarks.base import DATA_KEY_NAMES, BenchOptions
from ..errors import LcError


@dataclass(frozen=True, kw_only=True)
class Settings:
    models: str | None = None
    ctx: tuple[int, ...] | None = None
    limit: int | None = None
    data: dict[str, str] = field(default_factory=dict)
    results: Path = Path("results")
    baselines: Path = Path("baselines")
    update_baselines: bool = False
    engine: str | None = None
    engine_args: tuple[tuple[str, Any], ...] = ()  # --lc-engine-arg, over every spec's engine_args
    specs_dirs: tuple[Path, ...] = ()
    alpha: float = 0.05
    sampling: str = "official"  # or "greedy"
    bench: BenchOptions = field(default_factory=BenchOptions)
    resume: str | None = None
    allow_remote_code: bool = False
    tolerances: dict[str, float] = field(default_factory=dict)

    def settings_hash(self) -> str:
        """The run's settings as one key (``run.settings_hash`` in summary.json): which unfinished run folder
        a session resumes, and which shards merge. What one test's result depends on is config/inputs.py's."""
        blob = json.dumps({"limit": self.limit, "data": self.data, "engine": self.engine,
                           "engine_args": [list(kv) for kv in self.engine_args],
                           "sampling": self.sampling, "bench": self.bench.as_dict(), "version": __version__},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def parse_engine_arg(value: str) -> tuple[str, Any]:
    """One ``KEY=VALUE`` pair; VALUE read as TOML (``8192``, ``true``, ``"x"``), a bare word as a string."""
    import tomllib

    key, sep, raw = value.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier() or not raw.strip():
        raise LcError(f"--lc-engine-arg {value!r}: write KEY=VALUE, e.g. --lc-engine-arg prefill_chunk=8192")
    try:
        return key, tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return key, raw.strip()


def parse_data_option(value: str) -> tuple[str, str]:
    """One ``BENCH=PATH`` pair, BENCH a benchmark's data key."""
    bench, sep, path = value.partition("=")
    if not sep or not bench or not path:
        raise LcError(f"--lc-data {value!r}: write BENCH=PATH, e.g. --lc-data longbench_v2=data/lb2.jsonl")
    if bench.strip() not in DATA_KEY_NAMES:  # a typo would silently fall back to other data
        raise LcError(f"--lc-data {value!r}: unknown data key {bench.strip()!r}; accepted: {', '.join(DATA_KEY_NAMES)}")
    return bench.strip(), path.strip()


