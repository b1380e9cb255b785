"""The engine worker: one model loaded in its own process, driven over a pipe.

Why a process: a CUDA error poisons the whole CUDA context, the kernel's OOM killer takes the whole
process, and a segfault in a kernel extension takes the interpreter. In a worker, any of these costs
one test: the parent sees the death, fails the current test with the cause and the worker's last
output (its stdout/stderr go to a log file), and the next test starts a fresh worker.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ..errors import EngineError, WorkerDied
from .base import EngineConfig, engine_class, engine_target

_FATAL_MARKERS = ("CUDA error", "illegal memory access", "CUBLAS_STATUS", "device-side assert")


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        note = " (killed from outside, often the kernel's out-of-memory killer)" if -code == signal.SIGKILL else ""
        return f"{name}{note}"
    return f"exit code {code}"


def _serve(conn: Any, config: EngineConfig, target: str, log_path: str) -> None:
    """Worker main: load the engine, then answer requests until told to close."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    try:
        engine = engine_class(config.engine, target)(config)
    except BaseException as exc:  # noqa: BLE001 - report any load failure to the parent
        traceback.print_exc()
        conn.send(("error", type(exc).__name__, str(exc), traceback.format_exc()))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            method, args = conn.recv()
        except EOFError:
            break
        if method == "close":
            engine.close()
            conn.send(("ok", None))
            break
        try:
            conn.send(("ok", getattr(engine, method)(*args)))
        except BaseException as exc:  # noqa: BLE001
            traceback.print_exc()
            conn.send(("error", type(exc).__name__, str(exc), traceback.format_exc()))
            if any(m in str(exc) for m in _FATAL_MARKERS):
                sys.stderr.write("lcplugin worker: fatal device error, exiting\n")
                os._exit(3)


class EngineWorker:
    """Parent-side handle of a worker process running one engine."""

    def __init__(self, config: EngineConfig, log_dir: Path, start_timeout_s: float = 1800.0) -> None:
        self.config = config
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"worker-{config.model}-{config.key()[:8]}.log"
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, config, engine_target(config.engine), str(self.log_path)), daemon=True,
                                 name=f"lcplugin-engine-{config.model}")
        self._proc.start()
        child.close()
        reply = self._receive(start_timeout_s, "loading the model")
        if reply[0] == "error":
            self.close()
            raise EngineError(f"engine {config.engine!r} could not load {config.model} ({config.source}): "
                              f"{reply[1]}: {reply[2]}", detail=self._log_tail())
        self.pid: int = reply[1]

    @property
    def alive(self) -> bool:
        return self._proc.is_alive()

    def last_output(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no worker log)"
        return "\n".join(text.rstrip().splitlines()[-lines:]) or "(worker printed nothing)"

    def _died(self, doing: str) -> WorkerDied:
        self._proc.join(timeout=5)
        return WorkerDied(
            f"engine worker for {self.config.model} died while {doing}: {_describe_exit(self._proc.exitcode)}",
            detail=self._log_tail(),
        )

    def _log_tail(self) -> str:
        return f"last output of the worker ({self.log_path}):\n{self.last_output()}"

    def _receive(self, timeout_s: float | None, doing: str) -> tuple:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                if self._conn.poll(0.2):
                    return self._conn.recv()
            except (EOFError, OSError):
                raise self._died(doing) from None
            if not self._proc.is_alive() and not self._conn.poll(0):
                raise self._died(doing)
            if deadline is not None and time.monotonic() > deadline:
                self.kill()
                raise EngineError(f"engine worker for {self.config.model} did not answer within {timeout_s:.0f} s "
                                  f"while {doing}; it was killed", detail=self._log_tail())

    def call(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        """Run ``engine.<method>(*args)`` in the worker and return its result."""
        if not self._proc.is_alive():
            raise self._died(f"idle before {method}")
        try:
            self._conn.send((method, args))
        except (BrokenPipeError, OSError):
            raise self._died(f"receiving {method}") from None
        reply = self._receive(timeout_s, f"running {method}")
        if reply[0] == "error":
            raise EngineError(f"engine {self.config.engine!r} failed in {method} for {self.config.model}: "
                              f"{reply[1]}: {reply[2]}", detail=reply[3])
        return reply[1]

    def kill(self) -> None:
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join(timeout=10)

    def close(self, timeout_s: float = 60.0) -> None:
        """Ask the engine to release its memory and exit; kill it if it does not."""
        if self._proc.is_alive():
            try:
                self._conn.send(("close", ()))
                self._receive(timeout_s, "closing")
            except (EngineError, OSError):
                pass
            self._proc.join(timeout=timeout_s)
        self.kill()
        self._conn.close()
