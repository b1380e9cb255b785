"""The engine worker process: replies matched to requests, fatal device errors, no orphans, children.

Driven through a fake engine (tests/fake_engines.py) so the worker's behaviour is tested without a
model; the last test runs the suite the way users do, with the fake engine as a plugin.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lcplugin.benchmarks.base import BENCHMARKS
from lcplugin.engines.base import EngineConfig
from lcplugin.engines.worker import EngineWorker
from lcplugin.errors import EngineError, WorkerDied

from .conftest import REPO, only_run_summary
from .fake_engines import CUDA_FATAL, register

register()
FAKE = EngineConfig(engine="fake", model="fake-model", source="-", tokenizer="-")


@pytest.fixture
def worker(tmp_path):
    w = EngineWorker(FAKE, tmp_path / "logs", start_timeout_s=120)
    yield w
    w.close(timeout_s=10)


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody has reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.1)
    return gone(pid)


def test_the_worker_sets_its_engines_environment_unless_the_user_did(tmp_path, monkeypatch):
    # Zamba2 at 256k on the H200 died of an out-of-memory error with 42.2 GiB that torch had reserved
    # but not allocated: the engine's worker grows torch's allocator in expandable segments; a user's own
    # PYTORCH_CUDA_ALLOC_CONF stands, and vLLM, which sizes its own pool, keeps torch's default
    from lcplugin.engines.registry import engine_entry

    name = "PYTORCH_CUDA_ALLOC_CONF"
    monkeypatch.delenv(name, raising=False)
    for engine in ("hf", "mamba_ssm", "fake"):
        assert dict(engine_entry(engine).environment) == {name: "expandable_segments:True"}
    assert engine_entry("vllm").environment == ()
    for theirs, expected in ((None, "expandable_segments:True"), ("max_split_size_mb:512", "max_split_size_mb:512")):
        if theirs:
            monkeypatch.setenv(name, theirs)
        w = EngineWorker(FAKE, tmp_path / "logs", start_timeout_s=120)
        try:
            assert w.call("getenv", name) == expected
        finally:
            w.close(timeout_s=10)


def test_an_interrupted_call_never_hands_its_reply_to_the_next_call(worker):
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(KeyboardInterrupt):
            worker.call("echo", "reply to the interrupted call", 1.0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert worker.call("echo", "second") == "second"
    assert worker.call("echo", "third") == "third"


def test_a_fatal_cuda_error_is_a_dead_worker_with_its_cause(worker):
    assert worker.call("echo", 1) == 1
    with pytest.raises(WorkerDied) as info:
        worker.call("fail", CUDA_FATAL)
    assert CUDA_FATAL in str(info.value) and "fake-model" in str(info.value)
    assert not worker.alive


def test_an_ordinary_engine_error_keeps_the_worker(worker):
    with pytest.raises(EngineError) as info:
        worker.call("fail", "a bad argument")
    assert not isinstance(info.value, WorkerDied) and "a bad argument" in str(info.value)
    assert worker.alive and worker.call("echo", 2) == 2


def test_the_worker_may_start_child_processes(worker, tmp_path):
    # vLLM with tensor_parallel_size > 1 starts its own workers; a daemonic process may not
    assert worker.call("start_child", str(tmp_path / "child.pid")) == 0
    assert (tmp_path / "child.pid").read_text().isdigit()


def test_a_failed_load_leaves_none_of_the_engines_processes(tmp_path, monkeypatch):
    # vLLM with tensor_parallel_size=2 failed to load on two H200s (2026-12-01): its two ranks outlived
    # the worker holding 126 GiB of each GPU, and every later test was skipped for want of memory
    monkeypatch.setenv("LC_FAKE_LOAD_RANK", str(tmp_path / "rank.pid"))
    with pytest.raises(EngineError, match="could not load"):
        EngineWorker(FAKE, tmp_path / "logs", start_timeout_s=120)
    rank = int((tmp_path / "rank.pid").read_text())
    try:
        assert wait_gone(rank, 10), f"rank {rank} outlived the worker whose load failed"
    finally:
        if not gone(rank):
            os.kill(rank, signal.SIGKILL)


def test_a_killed_worker_takes_its_engines_processes_with_it(worker, tmp_path):
    # a worker that stops answering is killed (SIGKILL: it runs nothing more); its ranks must go too
    rank = worker.call("start_rank", str(tmp_path / "rank.pid"))
    try:
        with pytest.raises(WorkerDied, match="did not answer"):
            worker.call("echo", None, 30.0, timeout_s=1)
        assert wait_gone(rank, 10), f"rank {rank} outlived its killed worker"
    finally:
        if not gone(rank):
            os.kill(rank, signal.SIGKILL)


PARENT = textwrap.dedent('''
    import sys
    import time
    from pathlib import Path
    from lcplugin.engines.base import EngineConfig
    from lcplugin.engines.worker import EngineWorker
    from tests.fake_engines import register

    if __name__ == "__main__":  # spawned workers import this module again
        register()
        config = EngineConfig(engine="fake", model="fake-model", source="-", tokenizer="-")
        w = EngineWorker(config, Path(sys.argv[1]))
        print(w.pid, flush=True)
        if sys.argv[2] == "busy":
            w.call("echo", None, 300.0)  # the worker is busy when its parent dies
        elif sys.argv[2] == "idle":
            time.sleep(300)  # the worker waits for a request when its parent dies
''')


def _start_parent(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, int]:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "LC_FAKE_LOG": str(tmp_path / "engine.jsonl")}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "logs"), mode], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip().isdigit(), f"the parent printed {line!r}"
    return proc, int(line)


@contextlib.contextmanager
def _parent_and_worker(tmp_path, mode):
    """A parent process running a worker; whatever the test does, neither outlives it."""
    parent, pid = _start_parent(tmp_path, mode)
    try:
        yield parent, pid
    finally:
        if parent.poll() is None:
            parent.kill()
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_the_worker_exits_when_its_parent_is_killed(tmp_path):
    with _parent_and_worker(tmp_path, "busy") as (parent, pid):
        time.sleep(0.5)
        assert not gone(pid)
        parent.kill()  # SIGKILL: no atexit, no finally, nothing in the parent runs
        parent.wait()
        assert wait_gone(pid, 5), f"worker {pid} outlived its parent"


def test_an_idle_worker_closes_its_engine_when_its_parent_is_killed(tmp_path):
    with _parent_and_worker(tmp_path, "idle") as (parent, pid):
        parent.kill()
        parent.wait()
        assert wait_gone(pid, 5), f"worker {pid} outlived its parent"
        events = [json.loads(line)["event"] for line in (tmp_path / "engine.jsonl").read_text().splitlines()]
        assert events == ["load", "close"]  # shut down cleanly (vLLM removes its shared memory), not killed


def test_a_parent_that_exits_without_closing_leaves_no_worker(tmp_path):
    with _parent_and_worker(tmp_path, "exit") as (parent, pid):
        assert parent.wait(timeout=30) == 0  # a non-daemonic worker must not hold the exit up
        assert wait_gone(pid, 5)


@pytest.mark.slow
def test_cuda_error_fails_one_test_and_the_next_gets_a_fresh_worker(run_benches, tmp_path):
    log = tmp_path / "engine.jsonl"
    out = run_benches("-p", "tests.fake_engines", "--lc-engine", "fake", "--lc-models", "tiny-llama",
                      "--lc-ctx", "1k", "--lc-limit", "2", "-k", "longbench_v2 or pg19",  # one engine for both
                      env={"LC_FAKE_LOG": str(log), "LC_FAKE_FAIL": "cuda-once"})
    text = out.stdout
    assert out.returncode == 1, text[-3000:]
    assert "FAILED benches/test_longbench_v2.py::test_longbench_v2[tiny-llama-1k]" in text
    assert "engine worker for tiny-llama died" in text and CUDA_FATAL in text
    out.assert_outcomes(passed=1, failed=1, deselected=len(BENCHMARKS) - 2)
    loads = [e["pid"] for e in map(json.loads, log.read_text().splitlines()) if e["event"] == "load"]
    assert len(loads) == 2 and loads[0] != loads[1]  # the dead worker was discarded, not reused
    assert [t["benchmark"] for t in only_run_summary(run_benches.results)["tests"]] == ["pg19"]
