"""The work of each model, known before anything runs, and how it splits over workers.

A test's work is estimated as items x (context + generation budget) tokens: items from
``--lc-limit`` (or the 8 synthetic items a tiny model gets by default), the generation budget the
benchmarks declare (``Benchmark.new_tokens``: 128 new tokens; 1,152 with ``--lc-mode cot``). No model is
loaded and no data read: the estimate only orders and balances models, it is not a figure. Where
earlier runs in the results folder (or baselines recorded on this machine) measured a model on this
device, its prefill and decode rates at each context they measured turn the estimate into hours: a
cell at a measured context at its own rates, any other through the model's cost law fitted on them
(``costlaw.py``: quadratic prefill where the model has attention layers, linear where it has none), so
that 256k, 512k and 1m are priced from what 8k to 128k measured and marked as fitted.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence

from ..benchmarks.base import BENCHMARKS, get_benchmark
from ..config.contexts import ctx_label
from ..config.session import LcSession
from .costlaw import ModelCost, has_attention, model_cost
from .progress import duration, rate_points

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


def model_costs(lc: LcSession, models: Iterable[str], device: str) -> dict[str, ModelCost]:
    """Each model's cost law on this device, from every context an earlier run (or a baseline recorded on
    this machine) measured it at; models never measured here are absent."""
    specs = {s.name: s for s in lc.selected}
    costs = {}
    for model in models:
        measured = rate_points(lc.results_root(), lc.baselines_dir(), model, device)
        if measured and model in specs:
            attention, layers_from = has_attention(specs[model], lc.settings.allow_remote_code)
            cost = model_cost(measured, attention, layers_from)
            if cost is not None:
                costs[model] = cost
    return costs


def cell_lines(lc: LcSession, model: str, tests: Mapping[int, int], cost: ModelCost | None
               ) -> tuple[list[str], float | None]:
    """One line per context of ``model`` (its tests there, their price and how it was priced, the trained
    window and hard limit where the cell meets them), and the model's seconds (None: not every cell priced).
    A cell past the hard limit is skipped when it runs, so it is not priced."""
    spec = next(s for s in lc.selected if s.name == model)
    items, out = items_per_test(lc, model) or 1, new_tokens(lc)
    lines, total = [], 0.0
    for ctx, count in sorted(tests.items()):
        text = f"{ctx_label(ctx)}: {count} tests"
        if spec.hard_limit is not None and ctx > spec.hard_limit:
            lines.append(f"{text}, skipped when run: past the hard limit {ctx_label(spec.hard_limit)}")
            continue
        priced = cost.item(ctx, out) if cost else None
        if priced is None:
            total = float("nan")
        else:
            total += count * items * priced[0]
            text += f", ~{duration(count * items * priced[0])} ({priced[1]})"
        if spec.beyond_window(ctx):
            text += f", beyond the trained window {ctx_label(spec.trained_window)}"
        lines.append(text)
    return lines, None if total != total else total


def plan_lines(lc: LcSession, nodeids: Sequence[str], workers: int) -> list[str]:
    work = estimate_tokens(lc, nodeids)
    names = [f"gw{i}" for i in range(workers)] if workers > 1 else ["main"]
    device = device_name()
    costs = model_costs(lc, work, device)
    cells: dict[str, dict[int, int]] = {m: {} for m in work}
    for nodeid in nodeids:
        case = case_of(lc, nodeid)
        if case:
            cells[case[0]][case[1]] = cells[case[0]].get(case[1], 0) + 1
    priced = {m: cell_lines(lc, m, cells[m], costs.get(m)) for m in work}
    unknown = [m for m in work if items_per_test(lc, m) is None]
    lines = [f"lcplugin plan: {len(nodeids)} tests of {len(work)} models on {len(names)} worker(s), "
             f"largest first; device {device}"]
    for w, models in assign(work, names).items():
        total = sum(work[m] for m in models)
        seconds = [priced[m][1] for m in models if priced[m][1] is not None]
        known = f", ~{duration(sum(seconds))}" if len(seconds) == len(models) and models else \
            (", time unknown (no earlier run of every model on this device)" if models else "")
        lines.append(f"{w}: {total:,} tokens{known}")
        for m in models:
            spent = priced[m][1]
            lines.append(f"    {m}: {sum(cells[m].values())} tests, {work[m]:,} tokens"
                         + (f", ~{duration(spent)}" if spent is not None else ""))
            lines += [f"      {line}" for line in (costs[m].law_lines() if m in costs else [])]
            lines += [f"      {line}" for line in priced[m][0]]
    if unknown:
        lines.append(f"items per test unknown for {', '.join(unknown)} (real data, no --lc-limit): "
                     "counted as 1 each, so their tokens are relative weights only")
    return lines
