"""Session state: the options as typed settings, the model matrix, caches, and the run store.

Everything here is pytest-independent data; the plugin builds one ``LcSession`` from the command
line and hands it to the fixtures.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .benchmarks.base import DATA_KEYS, BenchOptions, DataSource
from .contexts import ctx_label
from .engines.base import check_engine_args
from .errors import LcError
from .specs import ModelSpec, load_specs, select_specs
from .store import RunStore


@dataclass(frozen=True)
class Case:
    """One parametrized test: a benchmark on a model at a context length."""

    benchmark: str
    spec: ModelSpec
    ctx: int

    @property
    def id(self) -> str:
        return f"{self.spec.name}-{ctx_label(self.ctx)}"


@dataclass(frozen=True, kw_only=True)
class Settings:
    models: str | None = None
    ctx: tuple[int, ...] | None = None
    limit: int | None = None
    data: dict[str, str] = field(default_factory=dict)
    results: Path = Path("results")
    baselines: Path = Path("baselines")
    update_baselines: bool = False
    engine: str | None = None
    engine_args: tuple[tuple[str, Any], ...] = ()  # --lc-engine-arg, over every spec's engine_args
    specs_dirs: tuple[Path, ...] = ()
    alpha: float = 0.05
    sampling: str = "official"  # or "greedy"
    bench: BenchOptions = field(default_factory=BenchOptions)
    resume: str | None = None
    allow_remote_code: bool = False
    tolerances: dict[str, float] = field(default_factory=dict)

    def fingerprint(self) -> str:
        blob = json.dumps({"limit": self.limit, "data": self.data, "engine": self.engine,
                           "engine_args": [list(kv) for kv in self.engine_args],
                           "sampling": self.sampling, "bench": self.bench.as_dict(), "version": __version__},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def parse_select(value: str | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``difficulty=hard;length=short,medium`` -> filters on the dataset's own labels."""
    if not value:
        return ()
    out = []
    for part in value.split(";"):
        key, sep, allowed = part.partition("=")
        if not sep or key.strip() not in ("difficulty", "length", "domain"):
            raise LcError(f"--lc-select {value!r}: write FIELD=V1,V2[;FIELD=...] with FIELD one of difficulty, "
                          "length, domain (e.g. --lc-select 'difficulty=hard;length=short,medium')")
        out.append((key.strip(), tuple(v.strip() for v in allowed.split(",") if v.strip())))
    return tuple(out)


def parse_engine_args(values: list[str]) -> tuple[tuple[str, Any], ...]:
    """``KEY=VALUE`` pairs; VALUE read as TOML (``8192``, ``true``, ``"x"``), a bare word as a string."""
    import tomllib

    out: dict[str, Any] = {}
    for value in values:
        key, sep, raw = value.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier() or not raw.strip():
            raise LcError(f"--lc-engine-arg {value!r}: write KEY=VALUE, e.g. --lc-engine-arg prefill_chunk=8192")
        try:
            out[key] = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = raw.strip()
    return tuple(out.items())


def parse_data_options(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        bench, sep, path = value.partition("=")
        if not sep or not bench or not path:
            raise LcError(f"--lc-data {value!r}: write BENCH=PATH, e.g. --lc-data longbench_v2=data/lb2.jsonl")
        out[bench.strip()] = path.strip()
    return out


def find_unfinished(root: Path, fingerprint: str) -> str | None:
    """The newest run under ``root`` with these settings that did not finish (killed or interrupted)."""
    if not root.is_dir():
        return None
    for folder in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True):
        try:
            run = json.loads((folder / "summary.json").read_text(encoding="utf-8"))["run"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if run.get("settings_hash") == fingerprint and not run.get("finished"):
            return folder.name
    return None


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
        from .datafiles import file_digest

        key = DATA_KEYS.get(benchmark, benchmark)
        if key in self.settings.data:
            path = Path(self.settings.data[key]).expanduser()
            if not path.is_absolute():
                path = self.rootdir / path
            digest = file_digest(path) if path.is_file() else f"path:{path}"
            return DataSource(kind="file", location=str(path), digest=digest)
        if spec.default_data == "synthetic":
            return DataSource(kind="synthetic", location="seeded", digest="synthetic-v1")
        return DataSource(kind="hub", location=key, digest=f"hub:{key}")

    @property
    def results_root(self) -> Path:
        results = self.settings.results
        return results if results.is_absolute() else self.rootdir / results

    @property
    def run_id(self) -> str:
        """The run's folder name, chosen without creating anything (a session that runs no lcplugin
        test must leave no folder): the xdist controller's, ``--lc-resume RUN_ID``, else an unfinished
        run with the same settings, else a new one."""
        if self._run_id is None:
            root, fingerprint = self.results_root, self.settings.fingerprint()
            run_id = (self.worker_run[0] if self.worker_run else None) or self.settings.resume \
                or find_unfinished(root, fingerprint)
            if self.settings.resume and not (root / self.settings.resume).is_dir():
                raise LcError(f"--lc-resume {run_id}: no such run folder under {root}")
            self._run_id = run_id or time.strftime("%Y%m%d-%H%M%S") + "-" + fingerprint[:6]
        return self._run_id

    @property
    def store(self) -> RunStore:
        """The run folder, created on first use (the first test that records something)."""
        if self._store is None:
            from . import telemetry

            root, fingerprint, run_id = self.results_root, self.settings.fingerprint(), self.run_id
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

    def test_key(self, benchmark: str, spec: ModelSpec, ctx: int, data_digest: str) -> str:
        """What a record's result depends on; resumed records with another key are never reused."""
        blob = json.dumps({"benchmark": benchmark, "source": spec.source, "revision": spec.revision,
                           "dtype": spec.dtype, "engine": self.settings.engine or spec.engine,
                           "engine_args": self.engine_args_for(spec), "rope": spec.rope_for(ctx),
                           "chat": spec.chat_template, "tokenizer": spec.tokenizer, "ctx": ctx,
                           "data": data_digest, "settings": self.settings.fingerprint()}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def baselines_dir(self) -> Path:
        b = self.settings.baselines
        return b if b.is_absolute() else self.rootdir / b
