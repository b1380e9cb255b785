"""Session state: the options as typed settings, the model matrix, caches, and the run store.

Everything here is pytest-independent data; the plugin builds one ``LcSession`` from the command
line and hands it to the fixtures.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..benchmarks.base import BENCHMARKS, DATA_KEYS, DataSource
from ..engines.base import check_engine_args
from ..errors import LcError
from ..results.store import RunLock, RunStore
from .contexts import ctx_label
from .settings import Settings
from .specs import ModelSpec, load_specs, select_specs


@dataclass(frozen=True)
class Case:
    """One parametrized test: a benchmark on a model at a context length."""

    benchmark: str
    spec: ModelSpec
    ctx: int

    @property
    def id(self) -> str:
        return f"{self.spec.name}-{ctx_label(self.ctx)}"


def unfinished_runs(root: Path, fingerprint: str) -> list[str]:
    """Runs under ``root`` with these settings that did not finish (killed, interrupted, or still
    running: the caller tells those apart by their lock), newest first."""
    if not root.is_dir():
        return []
    return [p.name for p in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True)
            if _unfinished(p, fingerprint)]


def _unfinished(folder: Path, fingerprint: str) -> bool:
    try:
        run = json.loads((folder / "summary.json").read_text(encoding="utf-8"))["run"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return run.get("settings_hash") == fingerprint and not run.get("finished")


def hub_digest(benchmark: str) -> str:
    """Hub data's key: the dataset, the revision the benchmark loads (``main``) and the commit that
    revision points at where it can be resolved (hub reachable, or a local hub cache that knows it)."""
    import importlib

    from ..models.hub import dataset_commit

    key = DATA_KEYS.get(benchmark, benchmark)
    hub_id = getattr(importlib.import_module(BENCHMARKS[benchmark].partition(":")[0]), "HUB_ID", None)
    if hub_id is None:
        return f"hub:{key}"
    commit = dataset_commit(hub_id, "main")
    return f"hub:{hub_id}@main" + (f":{commit}" if commit else "")


def _git_revision(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version(), "lcplugin": __version__}
    for pkg in ("torch", "transformers", "vllm", "mamba-ssm", "pytest"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


class LcSession:
    def __init__(self, settings: Settings, rootdir: Path) -> None:
        self.settings = settings
        self.rootdir = rootdir
        self.specs = load_specs(settings.specs_dirs)
        self.selected = select_specs(self.specs, settings.models)
        for spec in self.selected:
            engine = self.engine_of(spec)
            check_engine_args(engine, spec.engine_args, f"spec {spec.path} field engine_args")
            check_engine_args(engine, dict(settings.engine_args), f"--lc-engine-arg (model {spec.name})")
        self.summaries: list[dict[str, Any]] = []
        self.tokenizers: dict[str, Any] = {}
        self.items: dict[tuple, list] = {}
        self.token_caches: dict[int, Any] = {}
        self._store: RunStore | None = None
        self._lock: RunLock | None = None  # held from the run folder's choice to the session's end
        self._digests: dict[tuple[str, str], str] = {}  # data digests, computed once per session
        self._run_id: str | None = None
        self.worker_run: tuple[str, str] | None = None  # (run id, worker id) under pytest-xdist

    def engine_of(self, spec: ModelSpec) -> str:
        return self.settings.engine or spec.engine

    def engine_args_for(self, spec: ModelSpec) -> dict[str, Any]:
        """The spec's engine_args with every ``--lc-engine-arg`` over them."""
        return {**spec.engine_args, **dict(self.settings.engine_args)}

    def contexts_for(self, spec: ModelSpec) -> tuple[int, ...]:
        return self.settings.ctx or spec.contexts

    def cases(self, benchmark: str) -> list[Case]:
        return [Case(benchmark, spec, ctx) for spec in self.selected for ctx in self.contexts_for(spec)]

    def model_order(self, name: str) -> int:
        return [s.name for s in self.selected].index(name)

    def data_source(self, benchmark: str, spec: ModelSpec) -> DataSource:
        """Where a benchmark's items come from, with the digest that keys records and caches: a file's
        or a folder's content (the files the benchmark reads), or the hub dataset's resolved revision."""
        key = DATA_KEYS.get(benchmark, benchmark)
        if key in self.settings.data:
            path = Path(self.settings.data[key]).expanduser()
            if not path.is_absolute():
                path = self.rootdir / path
            return DataSource(kind="file", location=str(path), digest=self._digest(benchmark, path))
        if spec.default_data == "synthetic":
            return DataSource(kind="synthetic", location="seeded", digest="synthetic-v1")
        return DataSource(kind="hub", location=key, digest=self._digest(benchmark, None))

    def _digest(self, benchmark: str, path: Path | None) -> str:
        from ..benchmarks.base import get_benchmark
        from ..benchmarks.datafiles import file_digest, folder_digest

        memo = (benchmark, str(path))
        if memo not in self._digests:
            if path is None:
                digest = hub_digest(benchmark)
            elif path.is_file():
                digest = file_digest(path)
            elif path.is_dir() and (pattern := get_benchmark(benchmark).data_glob):
                digest = "dir:" + folder_digest(path, pattern)
            else:
                digest = f"path:{path}"  # absent, or a folder where a file is read: loading fails naming it
            self._digests[memo] = digest
        return self._digests[memo]

    def results_root(self) -> Path:
        results = self.settings.results
        return results if results.is_absolute() else self.rootdir / results

    def claim_resume(self) -> None:
        """``--lc-resume RUN_ID``: take that folder's lock now, at configure time, so that a missing
        folder or one another session holds is a usage error before anything runs."""
        run_id = self.settings.resume
        if not run_id or self._lock is not None:
            return
        folder = self.results_root() / run_id
        if not folder.is_dir():
            raise LcError(f"--lc-resume {run_id}: no such run folder under {self.results_root()}")
        self._lock = RunLock.acquire(folder)
        if self._lock is None:
            pid = RunLock.holder(folder)
            raise LcError(f"--lc-resume {run_id}: another session{f' (pid {pid})' if pid else ''} holds that run "
                          f"folder ({folder / '.lock'}); wait for it to end, or drop --lc-resume to start a new run")

    @property
    def run_id(self) -> str:
        """The run's folder name, chosen without creating a folder (a session that runs no lcplugin test
        must leave none): the xdist controller's, ``--lc-resume RUN_ID``, else the newest unfinished run
        with these settings that no running session holds (locked now), else a new name."""
        if self._run_id is None:
            root, fingerprint = self.results_root(), self.settings.settings_hash()
            if self.worker_run:  # an xdist worker writes into its controller's folder, under its lock
                self._run_id = self.worker_run[0]
            elif self.settings.resume:
                self.claim_resume()
                self._run_id = self.settings.resume
            else:
                self._run_id = self._claim_unfinished(root, fingerprint) or self._new_run_id(root, fingerprint)
        return self._run_id

    def _claim_unfinished(self, root: Path, fingerprint: str) -> str | None:
        for run_id in unfinished_runs(root, fingerprint):
            self._lock = RunLock.acquire(root / run_id)
            if self._lock is not None and _unfinished(root / run_id, fingerprint):
                return run_id  # (its holder may have finished it between the look and the lock)
            if self._lock is not None:
                self._lock.release()
                self._lock = None
        return None

    @staticmethod
    def _new_run_id(root: Path, fingerprint: str) -> str:
        base = time.strftime("%Y%m%d-%H%M%S") + "-" + fingerprint[:6]
        run_id, n = base, 1
        while (root / run_id).exists():  # two sessions started in the same second get two folders
            n += 1
            run_id = f"{base}-{n}"
        return run_id

    def close(self) -> None:
        """Let go of the run folder (the session is over)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def hold_run_folder(self) -> None:
        """Create this run's folder and lock it for the session's life: at the first test that records
        something, or (pytest-xdist) in the controller once its workers are known to run lcplugin tests.
        xdist workers write under their controller's lock."""
        if self.worker_run or self._lock is not None:
            return
        folder = self.results_root() / self.run_id
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = RunLock.acquire(folder)
        if self._lock is None:
            raise LcError(f"run folder {folder}: another session took it at the same moment; run again")

    @property
    def store(self) -> RunStore:
        """The run folder, created and locked on first use (the first test that records something):
        ``--lc-resume RUN_ID``, else an unfinished run with the same settings that no running session
        holds, else new; the lock is held for this session's life (``close``)."""
        if self._store is None:
            from ..engines import telemetry

            root, fingerprint, run_id = self.results_root(), self.settings.settings_hash(), self.run_id
            self.hold_run_folder()
            meta = {
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "settings": {**{k: (str(v) if isinstance(v, Path) else v)
                                for k, v in self.settings.__dict__.items() if k != "bench"},
                             "ctx": list(self.settings.ctx or []), "bench": self.settings.bench.as_dict()},
                "settings_hash": fingerprint,
                "versions": _versions(),
                "device": telemetry.device_name(),
                "git_revision": _git_revision(self.rootdir),
            }
            self._store = RunStore(root, run_id, meta, part=self.worker_run[1] if self.worker_run else None)
            if self._store.resumed and self._store.meta.get("settings_hash") not in (None, fingerprint):
                raise LcError(f"--lc-resume {run_id}: that run was made with other settings "
                              f"(hash {self._store.meta.get('settings_hash')}, now {fingerprint}); "
                              "resume it with the same options, or start a new run")
        return self._store

    def baselines_dir(self) -> Path:
        b = self.settings.baselines
        return b if b.is_absolute() else self.rootdir / b
