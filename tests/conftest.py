"""Shared helpers for the plugin's own tests.

The hub is never reachable here, and each attempt would hang 23-50 s: every test runs offline.
Real data and tokenizers come from ``../shared/data`` beside the checkout; tests that need them
skip with the reason when it is absent (a user's machine has no such folder).

End-to-end runs of ``pytest benches`` (tests/suite_runs.py) are the suite's cost: a command several
tests read is run once per session (``shared_run``), a test that must change what a run meets has its
own (``run_benches``). Tests that use either are marked ``slow``: ``pytest tests -m "not slow"`` is the
quick loop. Tiny models that a test only runs forward are loaded once per session (``tiny_model``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .suite_runs import XDIST_ENV, BenchRun, SharedRuns, bench_command

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# torch's OpenMP threads wait for each other by spinning: with two of them on a machine whose other core
# is busy (another xdist worker, another run), each parallel region waits for a descheduled thread. The
# offline default on two threads beside one busy core took 191 s spinning, 70 s waiting passively (66 s
# on one thread). Set before any test imports torch; suite_runs passes it to the runs it starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs the shared real data at {path} (absent on this machine)")
    return path


@pytest.fixture
def run_benches(tmp_path: Path):
    """Run ``python -m pytest benches ...`` as a user would, in a subprocess, with private folders."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: int = 600, threads: int | None = 1) -> BenchRun:
        return bench_command(args, tmp_path, env, timeout=timeout, threads=threads)

    run.results = tmp_path / "results"  # type: ignore[attr-defined]
    run.baselines = tmp_path / "baselines"  # type: ignore[attr-defined]
    return run


@pytest.fixture(autouse=True)
def _not_an_xdist_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test sees the environment of a plain ``pytest tests``, also under ``pytest tests -n 2``: a
    pytest that a test starts would take itself for a worker (pytest-benchmark then writes no
    --benchmark-json)."""
    for name in XDIST_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def shared_run(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> SharedRuns:
    """``shared_run(suite_runs.DEFAULT)``: that run's ``BenchRun``, run once per session. Read only."""
    root = tmp_path_factory.getbasetemp()
    if hasattr(pytestconfig, "workerinput"):  # an xdist worker: one folder for all, their basetemps' parent
        root = root.parent
    return SharedRuns(root / "shared-runs")


@pytest.fixture(scope="session")
def tiny_model() -> Callable[[str], Any]:
    """``tiny_model("tiny-llama")``: the fp32 model in eval mode, loaded once per session. Tests only run
    it forward; one that would change it (weights, config, hooks left behind) loads its own."""
    loaded: dict[str, Any] = {}

    def load(name: str) -> Any:
        if name not in loaded:
            import torch
            from transformers import AutoModelForCausalLM

            from lcplugin.models.tiny import materialize

            loaded[name] = AutoModelForCausalLM.from_pretrained(str(materialize(name)), dtype=torch.float32).eval()
        return loaded[name]

    return load


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that runs ``pytest benches`` (its own run, or the first reader of a shared one) is slow.

    The vLLM part (tests/test_vllm_environment.py, minutes long) goes first: under xdist one worker
    runs it while the other goes through the suite, instead of it starting last, beside an idle core.
    """
    for item in items:
        if {"run_benches", "shared_run"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.nodeid.split("::")[0] != "tests/test_vllm_environment.py")


def only_run_summary(results: Path) -> dict:
    runs = sorted(p for p in results.iterdir() if p.is_dir())
    assert len(runs) == 1, runs
    return json.loads((runs[0] / "summary.json").read_text())
