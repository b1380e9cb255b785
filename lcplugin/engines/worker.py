"""The engine worker: one model loaded in its own process, driven over a pipe.

Why a process: a CUDA error poisons the whole CUDA context, the kernel's OOM killer takes the whole
process, and a segfault in a kernel extension takes the interpreter. In a worker, any of these costs
one test: the parent sees the death, fails the current test with the cause and the worker's last
output (its stdout/stderr go to a log file), and the next test starts a fresh worker.

Requests carry an increasing id that the worker echoes, so the reply to a call the parent gave up
on (Ctrl-C, a timeout) is discarded, never read as the next call's. A fatal device error ends the
worker and reaches the parent as its death (``WorkerDied``), with the cause. The worker is not
daemonic, because vLLM with ``tensor_parallel_size > 1`` starts processes of its own, which a
daemonic process may not; so the parent closes every worker at exit (``atexit``), and a worker
whose parent dies without doing so (SIGKILL) notices within a second and exits, taking its own
children with it, instead of holding a GPU as an orphan. The same holds for every other end: a
failed load, a close, a fatal error and the parent's kill take the engine's processes down too (on
two H200s, vLLM's ranks outlived a failed TP=2 load holding 126 GiB of each GPU).
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from ..errors import EngineError, WorkerDied
from .base import EngineConfig
from .registry import engine_class, engine_entry, engine_target

_FATAL_MARKERS = ("CUDA error", "illegal memory access", "CUBLAS_STATUS", "device-side assert")
_WATCH_S = 0.5  # how often a worker checks that its parent is alive
_GRACE_S = 30.0  # how long an idle orphan may take to close its engine before it is killed
_LIVE: set[EngineWorker] = set()  # workers to close at exit: non-daemonic ones would hold the exit up


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


def _descendants(pid: int | None = None) -> list[Any]:
    """The processes ``pid`` (default: this one) started, and theirs: an engine's ranks (vLLM's
    tensor-parallel workers). Read before their parent is killed: orphans can no longer be found."""
    try:
        import psutil

        return psutil.Process(pid).children(recursive=True)
    except Exception:  # noqa: BLE001 - best effort: the process may be gone already
        return []


def _kill_all(procs: list[Any]) -> None:
    """SIGKILL each: a rank stuck in a poisoned CUDA context ignores anything gentler and holds its GPU."""
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.kill()


def _kill_descendants() -> None:
    _kill_all(_descendants())


def _watch_parent(parent: int, idle: threading.Event) -> None:
    """Exit when the parent is gone (re-parented: its pid is no longer our parent's).

    An idle worker sees the pipe close too and shuts its engine down itself (vLLM then removes its
    shared memory and stops its ranks); this thread gives it ``_GRACE_S`` for that. A busy worker
    cannot, so its descendants are killed and it exits at once. A thread, not PR_SET_PDEATHSIG:
    that signal fires when the parent *thread* that started the worker exits, and it would kill
    the worker before it could take its own children down.
    """
    while os.getppid() == parent:
        time.sleep(_WATCH_S)
    if idle.is_set():
        time.sleep(_GRACE_S)
    sys.stderr.write("lcplugin worker: the parent process is gone, exiting\n")
    _kill_descendants()
    os._exit(70)


def _serve(conn: Any, config: EngineConfig, target: str, log_path: str, parent: int,
           environment: tuple[tuple[str, str], ...] = ()) -> None:
    """Worker main: load the engine, then answer ``(id, method, args)`` requests until told to close."""
    for name, value in environment:  # the engine's entry's settings, before anything touches the GPU
        os.environ.setdefault(name, value)
    idle = threading.Event()
    threading.Thread(target=_watch_parent, args=(parent, idle), name="lcplugin-parent-watch", daemon=True).start()
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    try:
        engine = engine_class(config.engine, target)(config)
    except BaseException as exc:  # noqa: BLE001 - report any load failure to the parent
        traceback.print_exc()
        conn.send((0, "error", type(exc).__name__, str(exc), traceback.format_exc()))
        _kill_descendants()  # ranks a failed load started (vLLM TP=2 on the H200) would hold their GPUs
        return
    conn.send((0, "ready", os.getpid()))
    while True:
        idle.set()
        try:
            rid, method, args = conn.recv()
        except EOFError:  # the parent is gone without a word: shut down cleanly while we can
            sys.stderr.write("lcplugin worker: the parent closed the pipe, closing the engine\n")
            engine.close()
            _kill_descendants()
            break
        idle.clear()
        if method == "close":
            engine.close()
            _kill_descendants()  # whatever the engine's own shutdown left running
            conn.send((rid, "ok", None))
            break
        try:
            result = getattr(engine, method)(*args)
        except BaseException as exc:  # noqa: BLE001
            traceback.print_exc()
            fatal = any(m in str(exc) for m in _FATAL_MARKERS)
            conn.send((rid, "fatal" if fatal else "error", type(exc).__name__, str(exc), traceback.format_exc()))
            if fatal:  # the CUDA context is poisoned: nothing this process runs next can be trusted
                sys.stderr.write("lcplugin worker: fatal device error, exiting\n")
                _kill_descendants()
                os._exit(3)
            continue
        conn.send((rid, "ok", result))


def _close_all() -> None:
    for worker in list(_LIVE):
        worker.close(timeout_s=10)


class EngineWorker:
    """Parent-side handle of a worker process running one engine."""

    def __init__(self, config: EngineConfig, log_dir: Path, start_timeout_s: float = 1800.0) -> None:
        self.config = config
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"worker-{config.model}-{config.key()[:8]}.log"
        self._last_id = 0
        self._torn = False  # an interruption cut a reply in half: the stream cannot be trusted
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, daemon=False, name=f"lcplugin-engine-{config.model}",
                                 args=(child, config, engine_target(config.engine), str(self.log_path), os.getpid(),
                                       engine_entry(config.engine).environment))
        self._proc.start()
        if not _LIVE:
            atexit.register(_close_all)  # after multiprocessing's own exit hook, so it runs first
        _LIVE.add(self)
        child.close()
        reply = self._receive(0, start_timeout_s, "loading the model")
        if reply[1] == "error":
            self.close()
            raise EngineError(f"engine {config.engine!r} could not load {config.model} ({config.source}): "
                              f"{reply[2]}: {reply[3]}", detail=self._log_tail())
        self.pid: int = reply[2]

    @property
    def alive(self) -> bool:
        return self._proc.is_alive() and not self._torn

    def last_output(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no worker log)"
        return "\n".join(text.rstrip().splitlines()[-lines:]) or "(worker printed nothing)"

    def _died(self, doing: str) -> WorkerDied:
        self._proc.join(timeout=5)
        self.kill()
        return WorkerDied(
            f"engine worker for {self.config.model} died while {doing}: {_describe_exit(self._proc.exitcode)}",
            detail=self._log_tail(),
        )

    def _log_tail(self) -> str:
        return f"last output of the worker ({self.log_path}):\n{self.last_output()}"

    def _recv(self) -> tuple:
        self._torn = True
        reply = self._conn.recv()
        self._torn = False
        return reply

    def _receive(self, rid: int, timeout_s: float | None, doing: str) -> tuple:
        """The reply to request ``rid``; replies to earlier requests the caller gave up on are dropped."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                if self._conn.poll(0.2):
                    reply = self._recv()
                    if reply[1] == "fatal":  # whichever request it answers, the worker is gone
                        self._proc.join(timeout=10)
                        self.kill()
                        raise WorkerDied(f"engine worker for {self.config.model} died while {doing}: {reply[2]}: "
                                         f"{reply[3]} (a fatal device error ends the worker)", detail=self._log_tail())
                    if reply[0] == rid:
                        return reply
                    continue
            except (EOFError, OSError):
                raise self._died(doing) from None
            if not self._proc.is_alive() and not self._conn.poll(0):
                raise self._died(doing)
            if deadline is not None and time.monotonic() > deadline:
                self.kill()
                raise WorkerDied(f"engine worker for {self.config.model} did not answer within {timeout_s:.0f} s "
                                 f"while {doing}; it was killed", detail=self._log_tail())

    def _send(self, method: str, args: tuple) -> int:
        self._last_id += 1
        self._conn.send((self._last_id, method, args))
        return self._last_id

    def call(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        """Run ``engine.<method>(*args)`` in the worker and return its result."""
        if self._torn:
            self.kill()
            raise WorkerDied(f"engine worker for {self.config.model}: a reply was cut off by an interruption; "
                             "the worker was stopped", detail=self._log_tail())
        if not self._proc.is_alive():
            raise self._died(f"idle before {method}")
        try:
            rid = self._send(method, args)
        except (BrokenPipeError, OSError):
            raise self._died(f"receiving {method}") from None
        reply = self._receive(rid, timeout_s, f"running {method}")
        if reply[1] == "error":
            raise EngineError(f"engine {self.config.engine!r} failed in {method} for {self.config.model}: "
                              f"{reply[2]}: {reply[3]}", detail=reply[4])
        return reply[2]

    def kill(self) -> None:
        """SIGKILL the worker and every process it started (read first: an orphan cannot be traced)."""
        ranks = _descendants(self._proc.pid) if self._proc.is_alive() else []
        if self._proc.is_alive():
            self._proc.kill()
        _kill_all(ranks)
        self._proc.join(timeout=10)
        _LIVE.discard(self)

    def close(self, timeout_s: float = 60.0) -> None:
        """Ask the engine to release its memory and exit; kill it if it does not."""
        if self._proc.is_alive() and not self._torn:
            with contextlib.suppress(EngineError, OSError):
                self._receive(self._send("close", ()), timeout_s, "closing")
            self._proc.join(timeout=timeout_s)
        self.kill()
        self._conn.close()
