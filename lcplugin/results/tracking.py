"""Optional experiment tracking with Weights & Biases (``--lc-wandb PROJECT``).

Logs the run's summary table and its per-item records table once the session ends. Runs offline
unless ``WANDB_MODE`` says otherwise, so it works without a network; ``wandb sync`` uploads later.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import figures
from .store import iter_records


def summary_columns() -> tuple[str, ...]:
    """The summary table's columns: which test, then every tracked figure (figures.py)."""
    return ("benchmark", "model", "ctx", *(f.key for f in figures.reaching("tracked")))


def log_run(project: str, run_dir: Path, meta: dict[str, Any], tests: list[dict[str, Any]]) -> str:
    try:
        import wandb
    except ImportError:
        return "wandb is not installed (pip install wandb); nothing was logged"
    os.environ.setdefault("WANDB_MODE", "offline")
    run = wandb.init(project=project, name=meta.get("run_id"), config={k: meta.get(k) for k in
                     ("settings", "settings_hash", "versions", "device", "git_revision")}, dir=str(run_dir))
    columns = summary_columns()
    run.log({"summary": wandb.Table(columns=list(columns), data=[[t.get(c) for c in columns] for t in tests])})
    rows = []
    for path in sorted((run_dir / "records").rglob("*.jsonl")):
        for r in iter_records(path):
            rows.append([r.get("benchmark"), r.get("model"), r.get("ctx"), str(r.get("id")), r.get("pred"),
                         r.get("gold"), r.get("correct"), r.get("null"), r.get("prompt_tokens"), r.get("ttft_s")])
    run.log({"items": wandb.Table(columns=["benchmark", "model", "ctx", "id", "pred", "gold", "correct", "null",
                                           "prompt_tokens", "ttft_s"], data=rows)})
    run.finish()
    return f"logged {len(tests)} tests and {len(rows)} items to wandb project {project!r} ({os.environ['WANDB_MODE']})"
