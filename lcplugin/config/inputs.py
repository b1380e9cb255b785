"""What a test's result depends on: one function, and the two keys made from it.

``result_inputs`` is the one answer. Its hash is the test key, written into every record, so a resumed
run never reuses a record made under other inputs (results/store.py moves those aside). Its quality
part is stored in each baseline entry and compared before any gate (results/baselines.py). A benchmark
adds only the options it declares it reads (``Benchmark.reads``, an allow-list): an option of another
benchmark changes neither key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import MutableMapping
from dataclasses import asdict
from typing import Any

from .. import __version__
from ..benchmarks.base import get_benchmark
from ..engines.registry import efficiency_only_args
from .session import Case, LcSession

# Inputs that quality does not depend on: the baseline entry's own key (benchmark, ctx), the item count
# (the paired tests use the items both runs scored) and the lcplugin version. The sampling seed (chance,
# which the tests account for) and the efficiency-only engine arguments are left out as well.
NOT_QUALITY = frozenset({"benchmark", "ctx", "limit", "version"})


def result_inputs(case: Case, session: LcSession, digests: MutableMapping[tuple[str, str], str] | None = None,
                  ) -> dict[str, Any]:
    """Everything one test's result depends on, as plain JSON-able data: the model as its spec loads it,
    the engine and its arguments, the context, the data's digest, the item count, the lcplugin version,
    and what the benchmark reads (its protocol options; sampling and chat template if it generates).
    ``digests``: the session's data digests, so a data file is hashed once per session."""
    spec, settings = case.spec, session.settings
    bench = get_benchmark(case.benchmark, settings.bench)
    readable = {**settings.bench.as_dict(), "chat_template": spec.chat_template,
                "sampling": asdict(bench.sampling(settings.sampling == "greedy"))}
    return {
        "benchmark": case.benchmark, "ctx": case.ctx, "source": spec.source, "revision": spec.revision,
        "tokenizer": spec.tokenizer or spec.source, "dtype": spec.dtype, "rope": spec.rope_for(case.ctx),
        "engine": session.engine_of(spec), "engine_args": dict(sorted(session.engine_args_for(spec).items())),
        "data": session.data_source(case.benchmark, spec, digests).digest, "limit": settings.limit, "version": __version__,
        **bench.inputs(case.ctx, readable),
    }


def test_key(inputs: dict[str, Any]) -> str:
    """The inputs' hash: every record carries it, and a resumed record with another is never reused."""
    blob = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


test_key.__test__ = False  # type: ignore[attr-defined]  # named test_*, but pytest must not collect it


def quality_settings(inputs: dict[str, Any]) -> dict[str, Any]:
    """The inputs a test's quality depends on: stored in its baseline entry and compared, field by field,
    before any gate. The inputs less NOT_QUALITY, the sampling seed and efficiency-only engine arguments."""
    out = {name: value for name, value in inputs.items() if name not in NOT_QUALITY}
    fast = efficiency_only_args(inputs["engine"])
    out["engine_args"] = {k: v for k, v in inputs["engine_args"].items() if k not in fast}
    if "sampling" in out:
        out["sampling"] = {k: v for k, v in out["sampling"].items() if k != "seed"}
    return out
