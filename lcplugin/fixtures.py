"""The engine fixture's machinery: one worker per model, swapped between models.

Tests are ordered by model (see ``plugin.pytest_collection_modifyitems``), so each model's engine
loads once and serves all its tests; the previous model's worker is shut down before the next one
starts, so two models never share a GPU. A worker that died is discarded, and the next test that
needs it gets a fresh one.
"""

from __future__ import annotations

from pathlib import Path

from .engines.base import EngineConfig
from .engines.worker import EngineWorker


class EngineManager:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.current: EngineWorker | None = None
        self.loads = 0  # engines started this session (tests assert each model loads once)

    def get(self, config: EngineConfig) -> EngineWorker:
        cur = self.current
        if cur is not None and cur.config.key() == config.key() and cur.alive:
            return cur
        self.shutdown()
        self.current = EngineWorker(config, self.log_dir)
        self.loads += 1
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
