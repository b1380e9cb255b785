"""Telemetry measured where the work happens (inside the engine worker).

Each figure is either measured or ``None`` with a reason; nothing is ever estimated to fill a gap.
Engines call ``synchronize()`` before reading the clock, because CUDA launches are asynchronous and
an unsynchronized timer measures only the launch.
"""

from __future__ import annotations

import resource
import sys
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


def reset_rss_peak() -> str | None:
    """Reset this process's peak resident memory (Linux >= 4.0: ``5`` into ``/proc/self/clear_refs``
    resets VmHWM), so the next reading is one test's peak, not the worker's lifetime peak; returns
    why it could not, or None."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return None
    except OSError as exc:
        return f"the peak RSS cannot be reset here ({exc.strerror or exc}), so no per-test peak"


def rss_peak_gb() -> float:
    """Peak resident memory of this process since the last reset (VmHWM), else since it started."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
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


def cpu_threads() -> int | None:
    """torch's intra-op threads in this process: CPU timings mean little without it."""
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


def device_name() -> str:
    if cuda_available():
        import torch

        return torch.cuda.get_device_name(0)
    import platform

    return f"cpu ({platform.processor() or platform.machine()})"




class NvmlSampler:
    """Peak device memory (whole card, and this process with its children) and energy, from NVML.

    A background thread samples every ``interval_s`` while a test runs, because memory peaks come
    and go between batches and a reading at the end would miss them. Every figure it cannot measure
    (no NVML, no GPU, a card without an energy counter, a process table hidden by the container)
    is None and ``why`` says so.
    """

    def __init__(self, interval_s: float = 0.05, device_index: int = 0, refresh_s: float = 5.0) -> None:
        import os
        import threading

        self.interval_s = interval_s
        self.refresh_s = refresh_s
        self.why: dict[str, str] = {}
        self.peak_device = self.peak_process = None
        self.energy_start = self.energy_end = None
        self.energy_aside = 0.0  # joules spent in spans set aside (compile and warm-up), not the test's
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._family: set[int] = set()
        self._family_at = float("-inf")
        self.nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            index = int((os.environ.get("CUDA_VISIBLE_DEVICES") or str(device_index)).split(",")[0]) \
                if (os.environ.get("CUDA_VISIBLE_DEVICES") or "").split(",")[0].isdigit() else device_index
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self.nvml = pynvml
        except Exception as exc:  # noqa: BLE001 - no NVML library, no driver, no GPU
            reason = f"NVML unavailable ({type(exc).__name__}: {exc})" if not isinstance(exc, ImportError) \
                else "NVML unavailable (pip install nvidia-ml-py)"
            self.why = {"nvml_device_gb": reason, "nvml_process_gb": reason, "energy_j": reason}

    def _pids(self) -> set[int]:
        """This process and its children (vLLM's workers), rescanned every ``refresh_s`` only: a scan
        reads every process on the machine, and it runs beside a CPU-bound decode loop."""
        import time

        now = time.monotonic()
        if now - self._family_at >= self.refresh_s:
            pids = {self._pid}
            try:
                import psutil

                pids |= {c.pid for c in psutil.Process(self._pid).children(recursive=True)}
            except Exception:  # noqa: BLE001
                pass
            self._family, self._family_at = pids, now
        return self._family

    def _sample(self) -> None:
        nv = self.nvml
        used = nv.nvmlDeviceGetMemoryInfo(self.handle).used / 1e9
        self.peak_device = used if self.peak_device is None else max(self.peak_device, used)
        try:
            procs = nv.nvmlDeviceGetComputeRunningProcesses(self.handle)
        except Exception as exc:  # noqa: BLE001
            self.why["nvml_process_gb"] = f"process table unavailable ({exc})"
            return
        family = self._pids()
        mine = [p.usedGpuMemory for p in procs if p.pid in family and p.usedGpuMemory is not None]
        if mine:
            total = sum(mine) / 1e9
            self.peak_process = total if self.peak_process is None else max(self.peak_process, total)
            self.why.pop("nvml_process_gb", None)
        elif procs and self.peak_process is None:
            self.why["nvml_process_gb"] = "no NVML process entry matches this process (container PID namespace?)"

    def energy_now(self) -> float | None:
        """The card's energy counter (J), or None: where a span set aside begins."""
        return self._energy() if self._thread is not None else None

    def set_aside(self, since: float | None) -> None:
        """Leave the energy spent since ``since`` (``energy_now``) out of the test's."""
        now = self.energy_now()
        if since is not None and now is not None:
            self.energy_aside += now - since

    def _energy(self) -> float | None:
        try:
            return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1000.0  # mJ -> J
        except Exception as exc:  # noqa: BLE001
            self.why["energy_j"] = f"the card reports no energy counter ({exc})"
            return None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> NvmlSampler:
        if self.nvml is not None:
            import threading

            self._sample()
            self.energy_start = self._energy()
            self._thread = threading.Thread(target=self._loop, name="lcplugin-nvml", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._sample()
            self.energy_end = self._energy()
        energy = (self.energy_end - self.energy_start - self.energy_aside
                  if self.energy_start is not None and self.energy_end is not None else None)
        return {"nvml_device_gb": self.peak_device, "nvml_process_gb": self.peak_process, "energy_j": energy,
                "why": dict(self.why)}


class TestTelemetry:
    """What an engine measures around one test: allocator peak, NVML peaks and energy, RSS."""

    def __init__(self) -> None:
        self._sampler: NvmlSampler | None = None
        self._rss_why: str | None = None
        self.outside_s = 0.0  # seconds set aside: compile and warm-up of new shapes, not the test's work

    def mark(self) -> float | None:
        """Where a span set aside begins (the energy counter, where there is one)."""
        return self._sampler.energy_now() if self._sampler is not None else None

    def set_aside(self, seconds: float, mark: float | None) -> None:
        """A span that was no part of the test's work: its seconds go to ``outside_s`` (the runner takes
        them off the wall time) and its energy off the test's; its memory stays in the peaks (it was held)."""
        self.outside_s += seconds
        if self._sampler is not None:
            self._sampler.set_aside(mark)

    def begin(self) -> None:
        reset_torch_peak()
        self._rss_why = reset_rss_peak()
        self._sampler = NvmlSampler().start() if cuda_available() else None

    def stop(self) -> dict[str, Any]:
        """Stop the sampler thread (idempotent): NVML peaks and energy, or why they are missing."""
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            return sampler.stop()
        return {"nvml_device_gb": None, "nvml_process_gb": None, "energy_j": None,
                "why": dict.fromkeys(("nvml_device_gb", "nvml_process_gb", "energy_j"), "no CUDA device")}

    def end(self) -> dict[str, Any]:
        torch_peak, torch_why = torch_peak_gb()
        nv = self.stop()
        why = dict(nv.pop("why"))
        if torch_why:
            why["torch_peak_gb"] = torch_why
        if self._rss_why:
            why["rss_peak_gb"] = self._rss_why
        rss = None if self._rss_why else round(rss_peak_gb(), 4)
        return {"torch_peak_gb": torch_peak, **nv, "rss_peak_gb": rss, "warmup_s": self.outside_s,
                "device": device_name(), "cpu_threads": cpu_threads(), "why": why}
