"""The GPU decode check (issue 12) runs end to end on CPU with a tiny shape before device time is
spent on it: every part writes its figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_decode_check_smoke_runs_every_part(tmp_path: Path) -> None:
    out = tmp_path / "decode.json"
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    done = subprocess.run([sys.executable, "scripts/gpu/check_decode.py", str(out), "--smoke"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    parts = json.loads(out.read_text())["parts"]
    assert {name.split("_")[0] for name in parts} == {"a", "b", "c", "d"}
    assert all(p.get("decode_tok_s", 0) > 0 for p in parts.values()), parts
