"""A fake engine and a fake NVML for the worker and telemetry tests.

Spawned engine workers import this module by name (``tests.fake_engines:FakeEngine``), so it lives
in an importable package rather than inside a test file. Loaded as a pytest plugin
(``-p tests.fake_engines``) it registers the engine as ``fake`` for a whole ``pytest benches`` run.

Environment knobs (the worker inherits them):

- ``LC_FAKE_LOG``: a JSONL file; every engine call appends ``{pid, event, nvml_threads}``;
- ``LC_FAKE_FAIL``: ``cuda-once`` / ``error-once`` make the first ``generate`` of the run (marker
  file beside the log) raise a fatal CUDA error / an ordinary one;
- ``LC_FAKE_NVML=1``: the worker's telemetry sees a fake GPU and a fake NVML, so the real sampler
  thread runs on a CPU machine;
- ``LC_FAKE_WARMUP_S``: each ``generate`` first spends that many seconds in a span set aside
  (``EngineTelemetry.outside``), as the hf engine compiles a new static-cache shape;
- ``LC_FAKE_LOAD_RANK``: a file; the load starts a process that would live for ten minutes (a vLLM
  tensor-parallel rank holding a GPU), writes its pid there, and then fails, as vLLM 0.26 did on two
  H200s.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lcplugin.engines import telemetry
from lcplugin.engines.base import Completion, EngineConfig, EngineTelemetry, LogLikelihood, SamplingSettings
from lcplugin.engines.registry import engine_entry, register_engine

CUDA_FATAL = "CUDA error: an illegal memory access was encountered"


def nvml_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "lcplugin-nvml" and t.is_alive())


class FakeNvml(SimpleNamespace):
    """The pynvml calls the sampler makes, answering like a card used by ``pids`` (1 GB each)."""

    def __init__(self, pids: Sequence[int] = ()) -> None:
        super().__init__()
        self.pids = list(pids) or [os.getpid()]
        self.calls = 0

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        pass

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:  # noqa: N802
        self.calls += 1
        return SimpleNamespace(used=len(self.pids) * 1e9)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Any]:  # noqa: N802
        return [SimpleNamespace(pid=p, usedGpuMemory=int(1e9)) for p in self.pids]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:  # noqa: N802
        return int(time.monotonic() * 1e5)  # mJ, 100 W


def fake_gpu(nvml: FakeNvml | None = None) -> list[tuple[Any, str, Any]]:
    """(object, attribute, value) patches that make ``lcplugin.engines.telemetry`` in this process believe in
    a GPU watched by a fake NVML; a test applies them with ``monkeypatch``, a worker for good."""
    nvml = nvml or FakeNvml()
    return [(sys.modules, "pynvml", nvml), (telemetry, "cuda_available", lambda: True),
            (telemetry, "reset_torch_peak", lambda: None), (telemetry, "torch_peak_gb", lambda: (None, "fake GPU")),
            (telemetry, "device_name", lambda: "fake GPU")]


def install_fake_gpu() -> None:
    for target, name, value in fake_gpu():
        if isinstance(target, dict):
            target[name] = value
        else:
            setattr(target, name, value)


def _child(path: str) -> None:
    Path(path).write_text(str(os.getpid()))


class FakeEngine(EngineTelemetry):
    """Answers every prompt with ``A1`` at once; extra methods let tests drive the worker."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.log = os.environ.get("LC_FAKE_LOG")
        if os.environ.get("LC_FAKE_NVML") == "1":
            install_fake_gpu()
        rank_file = os.environ.get("LC_FAKE_LOAD_RANK")
        if rank_file:
            self.start_rank(rank_file)
            raise RuntimeError("Worker failed with error 'CUDA error: CUBLAS_STATUS_EXECUTION_FAILED' (fake)")
        self._event("load")

    def _event(self, event: str, **extra: Any) -> None:
        if self.log:
            with open(self.log, "a") as f:
                f.write(json.dumps({"pid": os.getpid(), "event": event, "nvml_threads": nvml_threads(), **extra})
                        + "\n")

    def _fail_once(self) -> None:
        mode = os.environ.get("LC_FAKE_FAIL", "")
        marker = Path(f"{self.log}.failed") if self.log else None
        if not mode or marker is None or marker.exists():
            return
        marker.write_text(mode)
        if mode == "cuda-once":
            raise RuntimeError(CUDA_FATAL)
        raise ValueError("the fake engine fails once")

    def _fits(self, length: int) -> None:
        """What vLLM checks: the prompt plus the generation must fit ``max_model_len``."""
        limit = self.config.max_model_len
        if limit is not None and length > limit:
            raise ValueError(f"a sequence of {length} tokens does not fit max_model_len={limit}")

    # -- the Engine protocol -------------------------------------------------------------------
    def telemetry_begin(self) -> None:
        self._event("telemetry_begin")
        super().telemetry_begin()

    def telemetry_end(self) -> dict[str, Any]:
        self._event("telemetry_end")
        # LC_FAKE_TELEMETRY: figures this engine claims to measure itself (JSON), as vLLM's mem_used_gb
        return {**super().telemetry_end(), **json.loads(os.environ.get("LC_FAKE_TELEMETRY", "{}"))}

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingSettings) -> list[Completion]:
        self._event("generate", lengths=[len(p) for p in prompts])
        self._fail_once()
        if os.environ.get("LC_FAKE_WARMUP_S"):
            with self.outside():
                time.sleep(float(os.environ["LC_FAKE_WARMUP_S"]))
        for p in prompts:
            self._fits(len(p) + sampling.max_new_tokens)
        return [Completion(text="A1", prompt_tokens=len(p), output_tokens=1, output_ids=(65,), ttft_s=1e-3,
                           decode_s=1e-3, finish_reason="stop") for p in prompts]

    def loglikelihood(self, tokens: Sequence[int], score_last: int) -> LogLikelihood:
        self._event("loglikelihood", length=len(tokens))
        self._fits(len(tokens))
        return LogLikelihood(nll=float(score_last), n_tokens=score_last, seconds=1e-3)

    def close(self) -> None:
        self._event("close")

    # -- what the worker tests call ------------------------------------------------------------
    def getenv(self, name: str) -> str | None:
        return os.environ.get(name)

    def echo(self, value: Any, delay_s: float = 0.0) -> Any:
        time.sleep(delay_s)
        return value

    def fail(self, message: str) -> None:
        raise RuntimeError(message)

    def start_child(self, path: str) -> int | None:
        """Start a multiprocessing child (as vLLM does with tensor_parallel_size > 1)."""
        import multiprocessing as mp

        proc = mp.get_context("spawn").Process(target=_child, args=(path,))
        proc.start()
        proc.join(60)
        return proc.exitcode

    def start_rank(self, path: str) -> int:
        """Start a long-lived process that ignores SIGTERM (a rank stuck in a poisoned CUDA context)."""
        import subprocess

        code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
        proc = subprocess.Popen([sys.executable, "-c", code])
        Path(path).write_text(str(proc.pid))
        return proc.pid

    def allocate(self, megabytes: int) -> int:
        block = bytearray(megabytes << 20)
        for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
            block[i] = 1
        return len(block)


# reads what hf reads (the specs it stands in for are hf's), and is sized at load like vLLM: it checks
# max_model_len
FAKE = replace(engine_entry("hf"), name="fake", target="tests.fake_engines:FakeEngine", marker="fake engine (tests)",
               sized_by_context=True, packages=())


def register() -> None:
    register_engine(FAKE)


# registered on import: ``-p tests.fake_engines`` loads this module before lcplugin's own
# pytest_configure checks --lc-engine against the registry
register()


def pytest_configure(config: Any) -> None:
    register()
