"""The memory preflight: before a test loads its model, its estimate against the device's free memory.

A test whose estimate (``engines/memory.py``) exceeds what is free is skipped with one line naming the
figures, instead of loading for minutes and dying of an out-of-memory error; every other test carries
its estimate into its summary (``mem_estimate_gb``, beside the measured ``peak_mem_gb``). An estimate
that cannot be made (a config the estimator does not read) never stops a test: it is recorded as
unmeasured, with the reason.

Free memory is NVML's for the first visible GPU (no CUDA context is made in the pytest process) or
``MemAvailable`` on a CPU, plus what this session's own engine worker holds, since that worker is
reused or replaced by the test. ``LCPLUGIN_FREE_GIB`` stands in for it: tests use it, and so can a
run sized for a smaller device than the one at hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..benchmarks.base import get_benchmark
from ..config.contexts import ctx_label
from ..config.session import Case, LcSession
from ..engines.base import EngineConfig
from ..engines.memory import GIB, CellMemory, ModelMemory, local_folder, model_memory
from ..engines.prefill import static_expected
from ..engines.registry import engine_entry

FREE_ENV = "LCPLUGIN_FREE_GIB"
_MODELS: dict[tuple[str, str | None, str, int], ModelMemory] = {}  # per checkpoint, dtype and chunk: once


def _chunk(config: EngineConfig, folder: Path, device: str) -> tuple[int, Any]:
    """The tokens one forward of the engine reads (0: the whole prompt), by the engine's own rule, and the
    transformers config where one was read."""
    requested = config.engine_args.get("prefill_chunk")
    if config.engine == "mamba_ssm":
        import json

        from ..engines.layouts import mistral_config, resolve_prefill_chunk

        raw = folder / "config.json"
        cfg = json.loads(raw.read_text()) if raw.is_file() else mistral_config(json.loads((folder / "params.json").read_text()))
        return resolve_prefill_chunk(cfg, requested)[0], None
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(str(folder), trust_remote_code=config.trust_remote_code)
    if config.engine == "hf":
        from ..engines.prefill import choose_chunk

        return choose_chunk(hf, device, requested)[0], hf
    return int(requested or 0), hf  # vLLM: its chunk when given, else the whole prompt (an upper bound)


def estimate(case: Case, session: LcSession, config: EngineConfig, device: str) -> CellMemory:
    """The test's estimate: the longest sequence its benchmark sends (``Benchmark.context_window``), times the
    sequences the engine reads together (``EngineEntry.batch``: the spec's batch, at most the items asked for)."""
    folder = local_folder(config.source, config.revision)
    if folder is None:
        raise FileNotFoundError(f"no local config for {config.source}")
    chunk, hf = _chunk(config, folder, device)
    key = (str(folder), config.revision, config.dtype, chunk)
    if key not in _MODELS:
        _MODELS[key] = model_memory(folder, config.dtype, chunk, hf)
    bench = get_benchmark(case.benchmark, session.settings.bench)
    model, entry = _MODELS[key], engine_entry(config.engine)
    if not entry.counts_activations:  # before the peak moment is chosen: the cache alone
        model = replace(model, act_per_token=0)
    family = getattr(hf, "model_type", "")  # hf: the config _chunk read (None under mamba_ssm, which has no bucket)
    if entry.kv_bucket and device.startswith("cuda") and static_expected(family, config.engine_args.get("cache")):
        model = replace(model, kv_bucket=entry.kv_bucket)  # the static cache the engine picks on CUDA
    tokens = bench.context_window(case.ctx, case.spec.window_at(case.ctx))
    batch = entry.batch(config.engine_args, tokens, model.chunked(tokens), session.settings.limit) if bench.batched else 1
    return model.at(tokens, batch=batch)


def free_memory(device: str, pids: set[int]) -> tuple[int | None, str]:
    """(free bytes, device name) where the test will run, counting ``pids``' memory as free (this session's
    engine worker, replaced or reused by the test); None where it cannot be read."""
    override = os.environ.get(FREE_ENV)
    if override:
        return int(float(override) * GIB), f"{device} ({FREE_ENV}={override})"
    if device.startswith("cuda"):
        try:
            import pynvml

            pynvml.nvmlInit()
            first = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(first) if first.isdigit() else 0)
            ours = sum(p.usedGpuMemory or 0 for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                       if p.pid in pids)
            name = pynvml.nvmlDeviceGetName(handle)
            return pynvml.nvmlDeviceGetMemoryInfo(handle).free + ours, name.decode() if isinstance(name, bytes) else name
        except Exception:  # noqa: BLE001 - no NVML: the test runs unchecked, its estimate still recorded
            return None, device
    try:
        meminfo = Path("/proc/meminfo").read_text()
        free = int(next(line.split()[1] for line in meminfo.splitlines() if line.startswith("MemAvailable:"))) * 1024
        for pid in pids:
            status = Path(f"/proc/{pid}/status").read_text()
            free += int(next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), "0")) * 1024
    except (OSError, StopIteration, ValueError):
        return None, "cpu"
    return free, "cpu"


def engine_device(config: EngineConfig) -> str:
    """Where the engine will run: its ``device`` argument, else a GPU when one is visible."""
    from ..engines import telemetry

    return str(config.engine_args.get("device") or ("cuda" if telemetry.cuda_available() else "cpu"))


@dataclass(frozen=True)
class Preflight:
    """A test's estimate (None where none could be made, ``why`` saying so) and, when it does not fit, the
    skip line naming the figures."""

    cell: CellMemory | None
    skip: str | None = None
    why: str | None = None


def check(case: Case, session: LcSession, config: EngineConfig, pids: set[int]) -> Preflight:
    device = engine_device(config)
    try:
        cell = estimate(case, session, config, device)
    except Exception as exc:  # noqa: BLE001 - an estimate never stops a test; it says why it is missing
        return Preflight(None, why=f"no estimate: {type(exc).__name__}: {exc}")
    free, name = free_memory(device, pids)
    if free is not None and cell.total > free:
        return Preflight(cell, skip=f"{case.spec.name} {ctx_label(case.ctx)}: {cell.parts()} = {cell.total / GIB:.1f} "
                                    f"GiB > {free / GIB:.1f} GiB free on {name} (memory preflight)")
    return Preflight(cell)


TOLERANCE = 0.15  # issue 16: the estimate within 15 % of the measured peak


class MemoryEstimateWarning(UserWarning):
    """The preflight's estimate missed the measured peak by more than ``TOLERANCE``."""


def compare(summary: dict[str, Any]) -> str | None:
    """Set ``mem_estimate_error`` (estimate / measured - 1; measured: vLLM's own count where it has one,
    whose torch peak is its whole pool, else the torch peak) and return a warning line past ``TOLERANCE``."""
    measured = summary.get("mem_used_gb") or summary.get("peak_mem_gb")
    estimate_gb = summary.get("mem_estimate_gb")
    if not measured or not estimate_gb:
        summary["mem_estimate_error"] = None
        return None
    error = summary["mem_estimate_error"] = estimate_gb / measured - 1
    if abs(error) <= TOLERANCE:
        return None
    return (f"{summary['model']} {summary['ctx_label']}: memory estimate {estimate_gb:.1f} GB is {error:+.0%} off the "
            f"measured {measured:.1f} GB; engines/memory.py's activation widths need a look for this model")
