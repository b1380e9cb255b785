"""Telemetry measured where the work happens (inside the engine worker).

Each figure is either measured or ``None`` with a reason; nothing is ever estimated to fill a gap.
Timers synchronize the device before reading the clock, because CUDA launches are asynchronous and
an unsynchronized timer measures only the launch.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def synchronize() -> None:
    """Wait for queued device work; a no-op on CPU."""
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()


@dataclass
class Elapsed:
    seconds: float = 0.0


@contextmanager
def stopwatch() -> Iterator[Elapsed]:
    """Wall time of the block, with the device synchronized at both ends."""
    out = Elapsed()
    synchronize()
    start = time.perf_counter()
    try:
        yield out
    finally:
        synchronize()
        out.seconds = time.perf_counter() - start


def rss_peak_gb() -> float:
    """Peak resident memory of this process since it started (Linux reports KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024 / 1e9 if sys.platform.startswith("linux") else kib / 1e9


def torch_peak_gb() -> tuple[float | None, str | None]:
    """The torch CUDA allocator's peak since the last reset, or None with the reason."""
    if not cuda_available():
        return None, "no CUDA device"
    import torch

    return torch.cuda.max_memory_allocated() / 1e9, None


def reset_torch_peak() -> None:
    if cuda_available():
        import torch

        torch.cuda.reset_peak_memory_stats()


def device_name() -> str:
    if cuda_available():
        import torch

        return torch.cuda.get_device_name(0)
    import platform

    return f"cpu ({platform.processor() or platform.machine()})"


def process_snapshot() -> dict[str, Any]:
    """Memory figures for the summary; absent ones are None with ``*_why`` saying why."""
    torch_peak, why = torch_peak_gb()
    return {"rss_peak_gb": round(rss_peak_gb(), 4), "torch_peak_gb": torch_peak, "torch_peak_why": why}
