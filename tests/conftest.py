"""Shared helpers for the plugin's own tests.

The hub is never reachable here, and each attempt would hang 23-50 s: every test runs offline.
Real data and tokenizers come from ``../shared/data`` beside the checkout; tests that need them
skip with the reason when it is absent (a user's machine has no such folder).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

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

    def run(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "pytest", "benches", "-p", "no:cacheprovider",
               "--lc-results", str(tmp_path / "results"), "--lc-baselines", str(tmp_path / "baselines"), *args]
        # CI/BUILD_NUMBER change pytest's own output (whole messages in the short summary) and
        # OMP_NUM_THREADS the engines' threads: a test that cares sets them itself, so results do not
        # depend on where the suite runs.
        base = {k: v for k, v in os.environ.items() if k not in ("CI", "BUILD_NUMBER", "OMP_NUM_THREADS")}
        full_env = {**base, "HF_HUB_OFFLINE": "1", **(env or {})}
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env)

    run.results = tmp_path / "results"  # type: ignore[attr-defined]
    run.baselines = tmp_path / "baselines"  # type: ignore[attr-defined]
    return run


def only_run_summary(results: Path) -> dict:
    runs = sorted(p for p in results.iterdir() if p.is_dir())
    assert len(runs) == 1, runs
    return json.loads((runs[0] / "summary.json").read_text())
