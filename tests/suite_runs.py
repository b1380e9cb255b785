"""``pytest benches`` as users run it, in a subprocess: a test's own run, or one shared by many tests.

An end-to-end run costs 15-60 s on 2 cores (python, torch and an engine worker start, a model loads),
and most tests read a few facts from it. So a command that several tests read is a ``SharedRun``: run
once per test session, on first use, by the session-scoped ``shared_run`` fixture, and read by all of
them. Readers must not write into its folders. A test that changes what a run meets (baselines it
edits, a run it kills, a folder it resumes) uses the function-scoped ``run_benches``: its own folders.

Either way a test gets a ``BenchRun``, whose ``result`` is pytest's own ``RunResult`` over the output:
outcomes are read with ``assert_outcomes`` / ``parseoutcomes``, not by matching "16 passed" (which
pytest words differently under -q, xdist or warnings).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lcplugin.benchmarks.base import BENCHMARKS, DataSource, get_benchmark

REPO = Path(__file__).resolve().parents[1]

# CI/BUILD_NUMBER change pytest's own output (whole messages in the short summary), OMP_NUM_THREADS the
# engines' threads, PYTEST_XDIST_* would tell the inner pytest it is an outer worker: a test that
# cares sets them itself, so results do not depend on where the suite runs.
# pytest-xdist sets these in its workers' environment (tests/conftest.py also clears them for each test)
XDIST_ENV = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")
_NOT_INHERITED = ("CI", "BUILD_NUMBER", "OMP_NUM_THREADS", *XDIST_ENV, "PYTEST_ADDOPTS")


# the benchmarks that run on the tiny models' seeded data, and those that need files the suite does not ship
# (RULER's QA tasks): these skip in every offline run, saying which --lc-data they want
NEED_FILES = frozenset(b for b in BENCHMARKS
                       if get_benchmark(b).skip_reason(DataSource(kind="synthetic", location="seeded"), 1024))
OFFLINE = tuple(b for b in BENCHMARKS if b not in NEED_FILES)

@dataclass(frozen=True)
class BenchRun:
    """One finished ``python -m pytest benches ...``: its exit code, its output, the folders it wrote."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    results: Path
    baselines: Path
    duration: float

    @property
    def folder(self) -> Path:
        """The folder given to the run: results/, baselines/ and whatever ``{out}`` named."""
        return self.results.parent

    @property
    def result(self) -> pytest.RunResult:
        """pytest's view of the output: ``assert_outcomes``, ``parseoutcomes``, ``stdout.fnmatch_lines``."""
        return pytest.RunResult(self.returncode, self.stdout.splitlines(), self.stderr.splitlines(), self.duration)

    def assert_outcomes(self, **outcomes: int) -> None:
        """pytest's ``assert_outcomes``, with the run's command and last output when it fails."""
        __tracebackhide__ = True
        try:
            self.result.assert_outcomes(**outcomes)
        except (AssertionError, ValueError):  # ValueError: no summary line (killed, crashed)
            raise AssertionError(f"pytest benches {' '.join(self.args)}: outcomes {self.outcomes()}, expected "
                                 f"{outcomes} (exit {self.returncode})\n{self.tail()}") from None

    def outcomes(self) -> dict[str, int]:
        """pytest's counts from the last line ({} when the run never printed one: a crash, a usage error)."""
        try:
            return self.result.parseoutcomes()
        except ValueError:
            return {}

    def tail(self, chars: int = 3000) -> str:
        """The end of both streams, for an assertion's message."""
        return self.stdout[-chars:] + "\n--- stderr ---\n" + self.stderr[-chars:]

    def run_dirs(self) -> list[Path]:
        """The run folders under ``results``, oldest first (each finished run gets its own)."""
        return sorted(p for p in self.results.iterdir() if p.is_dir()) if self.results.is_dir() else []

    def run_dir(self) -> Path:
        """The one run folder this run wrote."""
        runs = self.run_dirs()
        assert len(runs) == 1, runs
        return runs[0]

    def summary(self) -> dict[str, Any]:
        return json.loads((self.run_dir() / "summary.json").read_text())

    def records(self, bench: str, model: str, ctx: int) -> list[dict[str, Any]]:
        path = self.run_dir() / "records" / bench / f"{model}-{ctx}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    def save(self, path: Path) -> None:
        fields = {**asdict(self), "results": str(self.results), "baselines": str(self.baselines)}
        path.write_text(json.dumps(fields))

    @classmethod
    def load(cls, path: Path) -> BenchRun:
        fields = json.loads(path.read_text())
        return cls(**{**fields, "args": tuple(fields["args"]), "results": Path(fields["results"]),
                      "baselines": Path(fields["baselines"])})


def bench_command(args: tuple[str, ...], folder: Path, env: Mapping[str, str] | None = None, *,
                  timeout: int = 600, fresh_home: bool = False, threads: int | None = 1) -> BenchRun:
    """Run ``python -m pytest benches *args`` from the repository with results and baselines in ``folder``.

    ``{out}`` in an argument stands for ``folder`` (``--junitxml={out}/junit.xml``). ``fresh_home`` runs
    it as a new user would: HOME in ``folder`` (no tiny model, font or hub cache yet) and a bare PATH.
    ``threads`` is the engines' torch threads (OMP_NUM_THREADS): one by default, since tiny models gain
    little from a second (6 % on an idle 2-core machine, for 50 % more CPU time) and two threads
    waiting on each other slow a run several times over on a busy machine; ``None`` leaves the choice to
    lcplugin (all cores, or cores / xdist workers), for the runs that check that choice.
    """
    results, baselines = folder / "results", folder / "baselines"
    args = tuple(a.replace("{out}", str(folder)) for a in args)
    cmd = [sys.executable, "-m", "pytest", "benches", "-p", "no:cacheprovider", "--lc-results", str(results),
           "--lc-baselines", str(baselines), *args]
    if fresh_home:
        (folder / "home").mkdir(parents=True, exist_ok=True)
        base = {"PATH": "/usr/bin:/bin", "HOME": str(folder / "home")}
    else:
        base = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    # OMP_WAIT_POLICY: threads that wait without spinning (tests/conftest.py says why)
    full_env = {**base, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
                **({"OMP_NUM_THREADS": str(threads)} if threads else {}), **(env or {})}
    start = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env)
        code, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        code, out, err = -9, _text(exc.stdout), _text(exc.stderr) + f"\n(killed after {timeout} s)"
    return BenchRun(args, code, out, err, results, baselines, time.monotonic() - start)


def _text(stream: str | bytes | None) -> str:
    return stream.decode(errors="replace") if isinstance(stream, bytes) else stream or ""


@dataclass(frozen=True)
class SharedRun:
    """A ``pytest benches`` command that several tests read, and the outcomes it must report.

    ``outcomes`` (pytest's counts) is checked for every reader: a shared run that silently ran nothing
    (a -k that no longer matches, a model now skipped) fails its readers instead of feeding them empty
    folders (and tests/test_shared_runs.py checks each one by name).
    """

    name: str
    args: tuple[str, ...]
    outcomes: Mapping[str, int]
    env: Mapping[str, str] = field(default_factory=dict)
    fresh_home: bool = False
    threads: int | None = 1
    timeout: int = 900


Runner = Callable[..., BenchRun]


class SharedRuns:
    """The session's shared runs: each run at most once, on first use, in ``root/<name>``.

    Under pytest-xdist every worker has its own session fixtures, so the outcome is kept on disk
    (``root/<name>/bench-run.json``) and the first worker to need a run holds ``root/<name>.lock``
    while it runs; the others wait and read it. ``root`` is then one folder for all workers.
    """

    def __init__(self, root: Path, runner: Runner = bench_command) -> None:
        self._root = root
        self._runner = runner

    def __call__(self, run: SharedRun) -> BenchRun:
        __tracebackhide__ = True
        folder = self._root / run.name
        record = folder / "bench-run.json"
        self._root.mkdir(parents=True, exist_ok=True)
        with open(self._root / f"{run.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if record.exists():
                done = BenchRun.load(record)
            else:
                shutil.rmtree(folder, ignore_errors=True)  # what a reader that crashed mid-run left
                folder.mkdir()
                done = self._runner(run.args, folder, run.env, timeout=run.timeout, fresh_home=run.fresh_home,
                                    threads=run.threads)
                done.save(record)
        try:
            done.assert_outcomes(**run.outcomes)
        except AssertionError as exc:
            raise AssertionError(f"shared run {run.name!r} (tests/suite_runs.py): {exc}") from None
        return done


# -- the shared runs, and who reads them --------------------------------------------------------------

DEFAULT = SharedRun(
    "offline-default",
    ("-rs", "--lc-models", "tiny-llama,tiny-mamba2,llama-3.1-8b-instruct,zamba2-7b", "--lc-limit", "3",
     "--junitxml={out}/junit.xml", "--benchmark-autosave", "--benchmark-storage=file://{out}/bench"),
    {"passed": len(OFFLINE) * 2 * 2, "skipped": len(BENCHMARKS) * 2 * 6 + len(NEED_FILES) * 2 * 2}, fresh_home=True,
    threads=None)
"""The offline default as a new user runs it (test_plugin, test_ada_leval, test_reporting): every
registered benchmark x two tiny models x their contexts 1k and 2k pass; every benchmark x two real models
x six contexts skip, needing a GPU (zamba2-7b's contexts past its 4k window would run, marked beyond it)."""

LB2_1K = ("--lc-ctx", "1k", "--lc-limit", "2", "-k", "longbench_v2")
LLAMA_1K = SharedRun("tiny-llama-1k", ("--lc-models", "tiny-llama", *LB2_1K, "--benchmark-autosave",
                                       "--benchmark-storage=file://{out}/bench"), {"passed": 1})
"""One shard (test_distributed) and a second run to report and compare (test_reporting)."""
MAMBA2_1K = SharedRun("tiny-mamba2-1k", ("--lc-models", "tiny-mamba2", *LB2_1K), {"passed": 1})
MAMBA_1K = SharedRun("tiny-mamba-1k", ("--lc-models", "tiny-mamba", *LB2_1K), {"passed": 1})
THREE_1K = SharedRun("three-models-1k", ("--lc-models", "tiny-llama,tiny-mamba,tiny-mamba2", *LB2_1K),
                     {"passed": 3})
"""The three shards above in one run (test_distributed)."""
LLAMA_1K_GREEDY = SharedRun("tiny-llama-1k-greedy", ("--lc-models", "tiny-llama", *LB2_1K, "--lc-sampling", "greedy"),
                            {"passed": 1})
"""A shard under other settings, which merge refuses (test_distributed)."""

XDIST_MODELS = ("tiny-llama", "tiny-mamba", "tiny-mamba2", "tiny-zamba2")
XDIST_ARGS = ("--lc-models", ",".join(XDIST_MODELS), "--lc-ctx", "1k,2k", "--lc-limit", "2",
              "-k", "longbench_v2 or pg19")
XDIST_ONE = SharedRun("xdist-n1", (*XDIST_ARGS, "-n", "1"), {"passed": 16}, threads=None, timeout=1800)
XDIST_TWO = SharedRun("xdist-n2", (*XDIST_ARGS, "-n", "2", "--benchmark-json={out}/bench.json"), {"passed": 16},
                      threads=None, timeout=1800)
"""Four models on one and on two xdist workers, threads chosen by lcplugin (test_distributed, and
test_xdist's benchmark JSON)."""

GREEDY_2K = ("--lc-ctx", "2k", "--lc-sampling", "greedy", "--lc-limit", "3", "-k", "not ruler")  # real-data shapes
ONE_FORWARD = SharedRun("one-forward-2k", ("--lc-models", "tiny-llama,tiny-mamba2,tiny-zamba2", *GREEDY_2K),
                        {"passed": 12}, timeout=1800)
"""The CPU default: prefill in one forward, dynamic cache (test_hf_prefill's two comparisons)."""
CHUNKED = SharedRun("chunked-2k", (*ONE_FORWARD.args, "--lc-engine-arg", "prefill_chunk=300"), {"passed": 12},
                    timeout=1800)
STATIC = SharedRun("static-cache-2k", ("--lc-models", "tiny-llama", *GREEDY_2K, "--lc-engine-arg", "cache=static",
                                       "--lc-engine-arg", "compile=false"), {"passed": 4}, timeout=1800)

ALL = (DEFAULT, LLAMA_1K, MAMBA2_1K, MAMBA_1K, THREE_1K, LLAMA_1K_GREEDY, XDIST_ONE, XDIST_TWO, ONE_FORWARD,
       CHUNKED, STATIC)
