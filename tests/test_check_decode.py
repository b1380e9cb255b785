"""The GPU decode check (issues 12 and 18) runs end to end on CPU with a tiny shape before device time
is spent on it: every part writes its figure."""

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
    assert {name.split("_")[0] for name in parts} == {"a", "b", "c", "d", "e", "f"}
    timed = {name: p for name, p in parts.items() if not name.startswith("f_")}
    assert all(p.get("decode_tok_s", 0) > 0 for p in timed.values()), parts
    # issue 18 side by side: every attention x loop at every context, each run as named
    variants = {(p["settings"]["decode_attention"], p["settings"]["decode_loop"]) for n, p in parts.items()
                if n.startswith("e_")}
    assert variants == {(a, loop) for a in ("transformers", "gqa") for loop in ("generate", "engine")}
    assert len([n for n in parts if n.startswith("e_")]) == 8
    for name in ("f_attention_alone_256", "f_attention_alone_512"):
        assert parts[name]["transformers_ms"] > 0 and parts[name]["gqa_ms"] > 0, parts[name]
        assert parts[name]["max_abs_diff"] < 1e-2
