"""Session state: the options as typed settings and the model matrix.

Everything here is pytest-independent data; the plugin builds one ``LcSession`` from the command
line and hands it to the fixtures. The run folder is ``results.runfolder.RunFolder``'s, and what a
session loads once (tokenizers, items, data digests) is ``plugin.caches.SessionCaches``'.
"""

from __future__ import annotations

import platform
import subprocess
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from .. import __version__
from ..benchmarks.base import BENCHMARKS, DATA_KEYS, DataSource
from ..engines.registry import check_engine_args, engine_packages
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
    """HEAD's short hash, with ``-dirty`` when tracked files differ from it: a copy of a working tree (a GPU
    machine's, a CI runner's) can carry code newer than its HEAD, and the run must not name code it did not run."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    head = out.stdout.strip()
    if not head:
        return None
    try:
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                 capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return head  # HEAD known, its cleanliness not: the hash still names the run's base
    return f"{head}-dirty" if changed.returncode == 0 and changed.stdout.strip() else head


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version(), "lcplugin": __version__}
    for pkg in (*engine_packages(), "pytest"):
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

    def engine_of(self, spec: ModelSpec) -> str:
        """The engine a test of ``spec`` runs: ``--lc-engine``, else the spec's (the one accessor)."""
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

    @cached_property
    def case_ids(self) -> dict[str, tuple[str, int]]:
        """Each case id of the matrix (``model-ctx``) with its (model, context)."""
        return {f"{s.name}-{ctx_label(c)}": (s.name, c) for s in self.selected for c in self.contexts_for(s)}

    def data_source(self, benchmark: str, spec: ModelSpec,
                    digests: MutableMapping[tuple[str, str], str] | None = None) -> DataSource:
        """Where a benchmark's items come from, with the digest that keys records and caches: a file's
        or a folder's content (the files the benchmark reads), or the hub dataset's resolved revision.
        ``digests`` remembers them across calls (the session's caches); without it each is computed."""
        key = DATA_KEYS.get(benchmark, benchmark)
        memo = {} if digests is None else digests
        if key in self.settings.data:
            path = Path(self.settings.data[key]).expanduser()
            if not path.is_absolute():
                path = self.rootdir / path
            return DataSource(kind="file", location=str(path), digest=self._digest(benchmark, path, memo))
        if spec.default_data == "synthetic":
            return DataSource(kind="synthetic", location="seeded", digest="synthetic-v1")
        from ..benchmarks.base import get_benchmark

        if get_benchmark(benchmark).generates_items:
            return DataSource(kind="generated", location="", digest=f"generated:{key}")
        return DataSource(kind="hub", location=key, digest=self._digest(benchmark, None, memo))

    def _digest(self, benchmark: str, path: Path | None, digests: MutableMapping[tuple[str, str], str]) -> str:
        from ..benchmarks.base import get_benchmark
        from ..benchmarks.datafiles import file_digest, folder_digest

        memo = (benchmark, str(path))
        if memo not in digests:
            if path is None:
                digest = hub_digest(benchmark)
            elif path.is_file():
                digest = file_digest(path)
            elif path.is_dir() and (pattern := get_benchmark(benchmark).data_glob):
                digest = "dir:" + folder_digest(path, pattern)
            else:
                digest = f"path:{path}"  # absent, or a folder where a file is read: loading fails naming it
            digests[memo] = digest
        return digests[memo]

    def results_root(self) -> Path:
        results = self.settings.results
        return results if results.is_absolute() else self.rootdir / results

    def run_meta(self) -> dict[str, Any]:
        """A new run's metadata: when it started, the settings and their hash, versions, device, git
        revision (``RunFolder.open``; a resumed run keeps its own)."""
        from ..engines import telemetry

        return {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "settings": {**{k: (str(v) if isinstance(v, Path) else v)
                            for k, v in self.settings.__dict__.items() if k != "bench"},
                         "ctx": list(self.settings.ctx or []), "bench": self.settings.bench.as_dict()},
            "settings_hash": self.settings.settings_hash(),
            "versions": _versions(),
            "device": telemetry.device_name(),
            "git_revision": _git_revision(self.rootdir),
        }

    def baselines_dir(self) -> Path:
        b = self.settings.baselines
        return b if b.is_absolute() else self.rootdir / b
