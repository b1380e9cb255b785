"""The work of each model, known before anything runs, and how it splits over workers.

A test's work is estimated as items x (context + generation budget) tokens: items from
``--lc-limit`` (or the 8 synthetic items a tiny model gets by default), the generation budget the
benchmarks declare (``Benchmark.new_tokens``: 128 new tokens; 1,152 with ``--lc-mode cot``). No model is
loaded and no data read: the estimate only orders and balances models, it is not a figure. Where a
previous run in the results folder measured a model on this device, tokens per second from it turn
the estimate into hours.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..benchmarks.base import BENCHMARKS, get_benchmark
from ..config.session import LcSession
from ..results.runfolder import RunFolder
from .progress import duration

SYNTHETIC_ITEMS = 8  # runner.SYNTHETIC_DEFAULT_LIMIT, without importing the runner


def case_of(lc: LcSession, nodeid: str) -> tuple[str, int] | None:
    """(model, context) of an lcplugin test's node id, or None for any other test."""
    if not nodeid.endswith("]") or "[" not in nodeid:
        return None
    param = nodeid[nodeid.rindex("[") + 1:-1]
    found = [cid for cid in lc.case_ids if param == cid or param.startswith(cid + "-")
             or param.endswith("-" + cid) or f"-{cid}-" in param]
    return lc.case_ids[max(found, key=len)] if found else None


def group_of(lc: LcSession, nodeid: str) -> str | None:
    case = case_of(lc, nodeid)
    return case[0] if case else None


def items_per_test(lc: LcSession, model: str) -> int | None:
    """Items a test of ``model`` runs, when known without reading data (None: all of a data set)."""
    if lc.settings.limit:
        return lc.settings.limit
    spec = next(s for s in lc.selected if s.name == model)
    if spec.default_data == "synthetic" and not lc.settings.data:
        return SYNTHETIC_ITEMS
    return None


def new_tokens(lc: LcSession) -> int:
    """The generation budget an item is priced at: the largest any benchmark declares under this run's
    options, since a node id does not say which benchmark it runs."""
    return max(get_benchmark(name, lc.settings.bench).new_tokens() for name in BENCHMARKS)


def test_tokens(lc: LcSession, model: str, ctx: int) -> int:
    return (items_per_test(lc, model) or 1) * (ctx + new_tokens(lc))


def estimate_tokens(lc: LcSession, nodeids: Iterable[str]) -> dict[str, int]:
    """Estimated tokens per model over the given tests."""
    work: dict[str, int] = {}
    for nodeid in nodeids:
        case = case_of(lc, nodeid)
        if case:
            work[case[0]] = work.get(case[0], 0) + test_tokens(lc, *case)
    return work


def assign(work: dict[str, int], workers: Sequence[str]) -> dict[str, list[str]]:
    """Largest first, each to the least-loaded worker: what ``ModelScheduling`` does when the
    estimates hold (it hands the next model to the first worker that is free)."""
    plan: dict[str, list[str]] = {w: [] for w in workers}
    load = dict.fromkeys(workers, 0)
    for model, tokens in sorted(work.items(), key=lambda kv: -kv[1]):
        w = min(workers, key=lambda k: load[k])
        plan[w].append(model)
        load[w] += tokens
    return plan


def device_name() -> str:
    """This machine's device as the summaries name it (GPU 0's name), without importing torch."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.splitlines()[0].strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return f"cpu ({platform.processor() or platform.machine()})"


def measured_rates(lc: LcSession, device: str) -> dict[str, float]:
    """Estimated tokens per second of each model, from the newest run in the results folder that
    ran it on ``device`` (same estimate as the plan's, over the measured wall time of its tests)."""
    rates: dict[str, float] = {}
    for _, summary in RunFolder.summaries_under(lc.results_root()):
        by_model: dict[str, list[Mapping[str, Any]]] = {}
        for t in summary.tests:
            if t.get("device") == device and t.get("wall_s") and t.get("model") not in rates:
                by_model.setdefault(t["model"], []).append(t)
        out = new_tokens(lc)
        for model, rows in by_model.items():
            tokens = sum(t["n"] * (t["ctx"] + out) for t in rows)
            rates[model] = tokens / sum(t["wall_s"] for t in rows)
    return rates


def plan_lines(lc: LcSession, nodeids: Sequence[str], workers: int) -> list[str]:
    work = estimate_tokens(lc, nodeids)
    names = [f"gw{i}" for i in range(workers)] if workers > 1 else ["main"]
    device = device_name()
    rates = measured_rates(lc, device)
    tests = {m: sum(1 for n in nodeids if group_of(lc, n) == m) for m in work}
    unknown = [m for m in work if items_per_test(lc, m) is None]
    lines = [f"lcplugin plan: {len(nodeids)} tests of {len(work)} models on {len(names)} worker(s), "
             f"largest first; device {device}"]
    for w, models in assign(work, names).items():
        total = sum(work[m] for m in models)
        seconds = [work[m] / rates[m] for m in models if m in rates]
        known = f", ~{duration(sum(seconds))}" if len(seconds) == len(models) and models else \
            (", time unknown (no earlier run of every model on this device)" if models else "")
        lines.append(f"{w}: {total:,} tokens{known}")
        for m in models:
            h = f", ~{duration(work[m] / rates[m])} at {rates[m]:,.0f} tok/s measured" if m in rates else ""
            lines.append(f"    {m}: {tests[m]} tests, {work[m]:,} tokens{h}")
    if unknown:
        lines.append(f"items per test unknown for {', '.join(unknown)} (real data, no --lc-limit): "
                     "counted as 1 each, so their tokens are relative weights only")
    return lines
