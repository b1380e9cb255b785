"""One engine worker at a time per pytest process, swapped between models, every load recorded.

Tests are ordered by model (see ``plugin.pytest_collection_modifyitems``) and, under pytest-xdist,
all tests of a model go to one worker (``distributed.ModelScheduling``), so each model's engine
loads once and serves all its tests; the previous model's worker is shut down before the next one
starts, so two models never share a GPU. A worker that died is discarded, and the next test that
needs it gets a fresh one. Each load is recorded (model, pytest worker, seconds), so a summary can
show that a model loaded once and how much of the session its loads took.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import EngineConfig
from .worker import EngineWorker


class EngineManager:
    def __init__(self, log_dir: Path, worker: str = "main",
                 on_load: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.log_dir = log_dir
        self.worker = worker  # the pytest-xdist worker id ("gw0"), or "main" without xdist
        self.on_load = on_load
        self.current: EngineWorker | None = None
        self.loads: list[dict[str, Any]] = []  # every engine started this session
        self.last_load_s: float | None = None  # the load the latest get() paid for; None when reused

    def get(self, config: EngineConfig) -> EngineWorker:
        cur = self.current
        if cur is not None and cur.config.key() == config.key() and cur.alive:
            self.last_load_s = None
            return cur
        self.shutdown()
        started = time.perf_counter()
        self.current = EngineWorker(config, self.log_dir)
        load = {"model": config.model, "worker": self.worker, "load_s": time.perf_counter() - started,
                "engine": config.engine, "max_model_len": config.max_model_len}
        self.last_load_s = load["load_s"]
        self.loads.append(load)
        if self.on_load is not None:
            self.on_load(load)
        return self.current

    def discard(self) -> None:
        """Forget a broken worker (killing it if it lingers)."""
        if self.current is not None:
            self.current.kill()
            self.current = None

    def shutdown(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None
