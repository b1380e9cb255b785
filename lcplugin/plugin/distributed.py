"""pytest-xdist, in one place: GPUs counted and shared, whole models to workers largest first,
one run folder, one ``--benchmark-json``.

The controller never collects tests (pytest-xdist's workers do), and the plugin is loaded in every
pytest session of a machine where it is installed. So nothing here acts before it is known that
lcplugin tests are in the session: workers change their environment at their first lcplugin test
(``Worker.share_devices``, before its engine worker process starts and reads it), the scheduler
checks GPUs and groups by model only when the collection holds lcplugin tests, and the controller
merges a run folder only if a worker made one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import LoadScheduling, LoadScopeScheduling

from ..config.session import LcSession
from ..errors import LcError
from ..results.store import RunStore, summary_slot
from .plan import estimate_tokens, group_of


def gpus_per_worker(lc: LcSession) -> int:
    """GPUs one worker needs: ``LCPLUGIN_GPUS_PER_WORKER``, else the largest vLLM
    ``tensor_parallel_size`` among the selected models (spec, ``--lc-engine-arg`` or ``LCPLUGIN_TP``),
    so a worker can hold any model it may be given."""
    from ..engines.base import tensor_parallel_size

    if os.environ.get("LCPLUGIN_GPUS_PER_WORKER"):
        return int(os.environ["LCPLUGIN_GPUS_PER_WORKER"])
    return max([tensor_parallel_size(lc.engine_args_for(spec)) for spec in lc.selected
                if lc.engine_of(spec) == "vllm"] or [1])


def visible_gpus() -> list[str]:
    """The GPUs this machine lets us use, without importing torch in the controller.

    ``LCPLUGIN_GPU_COUNT=N`` (GPUs 0..N-1; for tests and machines where detection fails), else the
    entries of ``CUDA_VISIBLE_DEVICES`` when set (``""``: none), else ``nvidia-smi -L``, else NVML.
    """
    if os.environ.get("LCPLUGIN_GPU_COUNT"):
        return [str(i) for i in range(int(os.environ["LCPLUGIN_GPU_COUNT"]))]
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [d.strip() for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
            return [str(i) for i, _ in enumerate(line for line in out.stdout.splitlines()
                                                 if line.startswith("GPU "))]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML library, no driver: no GPU
        return []


def check_gpus(workers: int, per_worker: int, pool: Sequence[str]) -> str | None:
    """Why ``workers`` workers of ``per_worker`` GPUs each cannot run here, or None.

    With no GPU visible there is nothing to share: CPU runs stay allowed, and a model that needs a
    GPU skips with that reason as it does without xdist (``--lc-strict`` turns that into a failure)."""
    need = workers * per_worker
    if pool and need > len(pool):
        return (f"-n {workers}: {workers} workers x {per_worker} GPU(s) each need {need} GPUs, but {len(pool)} "
                f"are visible ({','.join(pool)}); use -n {max(1, len(pool) // per_worker)} or -n auto")
    return None


class Worker:
    """A pytest-xdist worker's part: its run id, and its share of the GPUs and CPU cores."""

    def __init__(self, workerinput: dict[str, Any]) -> None:
        self.id: str = workerinput["workerid"]
        self.count = int(workerinput.get("workercount", 1))
        self.gpus = int(workerinput.get("lc_gpus", 1))
        self.pool: list[str] = list(workerinput.get("lc_gpu_pool", []))
        self.shared = False

    def share_devices(self) -> None:
        """Give worker gwN its own GPUs and its share of the CPU cores, unless the user chose; once.

        Called at the worker's first lcplugin test, before its engine worker process starts (that
        process reads the environment when it starts). GPUs: ``gpus`` entries of the controller's pool,
        the Nth slice for gwN. CPU threads: cores / workers through ``OMP_NUM_THREADS``; left to each
        torch's default (all cores), N workers' thread pools fight over the same cores and a CPU run
        with ``-n 2`` took 3.5 times as long as with ``-n 1`` (BENCHMARKS.md).
        """
        if self.shared or not self.id.startswith("gw"):
            return
        self.shared = True
        if not os.environ.get("OMP_NUM_THREADS"):
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            os.environ["OMP_NUM_THREADS"] = str(max(1, cores // max(1, self.count)))
        index = int(self.id[2:])
        mine = self.pool[index * self.gpus:(index + 1) * self.gpus]
        if mine:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(mine)


class ModelScheduling(LoadScopeScheduling):
    """Whole models to workers, the largest estimated work first, each to the first worker free.

    A model's tests form one unit (so its engine loads once, on one worker); units are queued largest
    first and the next unit goes to a worker when it holds at most one pending test (a worker keeps
    its last test until it knows the next one). Tests of no lcplugin model each form their own unit.
    """

    def __init__(self, config: pytest.Config, log: Any, lc: LcSession) -> None:
        super().__init__(config, log)
        self.lc = lc

    def _split_scope(self, nodeid: str) -> str:
        return group_of(self.lc, nodeid) or nodeid

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is not None:
            for node in self.nodes:
                self._reschedule(node)
            return
        if not self._check_nodes_have_same_collection():
            self.log("**Different tests collected, aborting run**")
            return
        self.collection = list(next(iter(self.registered_collections.values())))
        if not self.collection:
            return
        units: dict[str, dict[str, bool]] = {}
        for nodeid in self.collection:
            units.setdefault(self._split_scope(nodeid), {})[nodeid] = False
        work = estimate_tokens(self.lc, self.collection)
        for scope, nodeids in sorted(units.items(), key=lambda kv: -work.get(kv[0], 0)):
            self.workqueue[scope] = nodeids
        for _ in range(max(0, len(self.nodes) - len(self.workqueue))):  # more workers than models
            unused, _assigned = self.assigned_work.popitem()
            unused.shutdown()
        for node in self.nodes:
            self._assign_work_unit(node)
        for node in self.nodes:
            self._reschedule(node)
        if not self.workqueue:
            for node in self.nodes:
                node.shutdown()

    def _reschedule(self, node: Any) -> None:
        if node.shutting_down:
            return
        if not self.workqueue:
            node.shutdown()
            return
        if self._pending_of(self.assigned_work[node]) <= 1:
            self._assign_work_unit(node)


class _Deferred:
    """pytest-xdist's scheduler, chosen once the workers' collection is known: ModelScheduling when it
    holds lcplugin tests (after checking the GPUs), else plain load scheduling, untouched (it even
    reports that class's name, so a project without lcplugin tests sees nothing of this plugin)."""

    def __init__(self, config: pytest.Config, log: Any, lc: LcSession, workers: int) -> None:
        self.candidates = [ModelScheduling(config, log, lc), LoadScheduling(config, log)]
        self.chosen: Any = None
        self.lc, self.workers = lc, workers

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # what pytest-xdist names in its "scheduling tests via" line
        return type(self.chosen or self.candidates[1])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.chosen or self.candidates[0], name)

    def add_node(self, node: Any) -> None:
        for s in ([self.chosen] if self.chosen else self.candidates):
            s.add_node(node)

    def add_node_collection(self, node: Any, collection: Sequence[str]) -> None:
        for s in ([self.chosen] if self.chosen else self.candidates):
            s.add_node_collection(node, collection)
        if self.chosen is None and self.candidates[0].collection_is_completed:
            if any(group_of(self.lc, nodeid) for nodeid in collection):
                why = check_gpus(self.workers, gpus_per_worker(self.lc), visible_gpus())
                if why:
                    pytest.exit(why, returncode=pytest.ExitCode.USAGE_ERROR)
                try:  # the controller holds the run folder's lock while its workers write into it
                    self.lc.hold_run_folder()
                except LcError as exc:
                    pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)
                self.chosen = self.candidates[0]
            else:
                self.chosen = self.candidates[1]

    def remove_node(self, node: Any) -> Any:
        if self.chosen is None:
            return [s.remove_node(node) for s in self.candidates][0]
        return self.chosen.remove_node(node)


class XdistController:
    """The controller's part: hands workers the run id and GPU pool, picks the scheduler, and at the
    end merges the workers' summary parts and writes ``--benchmark-json`` from their figures."""

    def __init__(self, lc: LcSession, config: pytest.Config) -> None:
        self.lc, self.config = lc, config
        self.pool = visible_gpus()
        self.reports: list[dict[str, Any]] = []

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["lc_run_id"] = self.lc.run_id
        node.workerinput["lc_gpus"] = gpus_per_worker(self.lc)
        node.workerinput["lc_gpu_pool"] = self.pool

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if config.getvalue("dist") not in ("load", "loadgroup"):
            return None  # the user chose another distribution: theirs
        return _Deferred(config, log, self.lc, len(config.getvalue("tx") or []))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        if report.when == "call" and "lc_wall_s" in props:
            self.reports.append({"nodeid": report.nodeid, "props": props})

    def finish(self) -> RunStore | None:
        """Merge the workers' parts into the run's ``summary.json``; None when no worker made the folder."""
        folder = self.lc.results_root() / self.lc.run_id
        if not folder.is_dir():
            return None
        return merge_parts(folder)

    def write_benchmark_json(self) -> Path | None:
        path = self.config.getoption("benchmark_json", None)
        if not path or not self.reports:
            return None
        from .benchjson import benchmark_json

        doc = benchmark_json(self.config, self.reports)
        Path(path).write_text(json.dumps(doc, indent=4, default=str), encoding="utf-8")
        return Path(path)


def merge_parts(folder: Path) -> RunStore:
    """Fold the workers' ``summary.<worker>.json`` into ``summary.json``, as if one process had run:
    their tests, their engine loads, and (for a new run) the first worker's metadata."""
    parts = []
    for part in sorted(folder.glob("summary.*.json")):
        try:
            parts.append((part, json.loads(part.read_text(encoding="utf-8"))))
        except (OSError, json.JSONDecodeError):
            continue
    first = min((doc.get("run", {}) for _, doc in parts), key=lambda m: str(m.get("started")), default={})
    store = RunStore(folder.parent, folder.name, {k: v for k, v in first.items() if k != "engine_loads"})
    loads = store.meta.setdefault("engine_loads", [])
    for part, doc in parts:
        loads.extend(doc.get("run", {}).get("engine_loads", []))
        for t in doc.get("tests", []):
            store.tests[summary_slot(t["benchmark"], t["model"], t["ctx"])] = t
        part.unlink()
    store.write_summary()
    return store


def auto_workers(lc: LcSession, config: pytest.Config) -> int | None:
    """``-n auto`` on a GPU machine, in an lcplugin session: one worker per (visible GPUs / GPUs per
    worker). An lcplugin session, before collection, is one whose command line names an ``--lc-``
    option or a path holding lcplugin tests; otherwise pytest-xdist's own count (CPU cores) stands."""
    pool = visible_gpus()
    if not pool or not _names_lcplugin(config):
        return None
    return max(1, len(pool) // gpus_per_worker(lc))


def _names_lcplugin(config: pytest.Config) -> bool:
    args = [str(a) for a in config.invocation_params.args]
    if any(a.startswith("--lc-") for a in args):
        return True
    for arg in args:
        path = Path(config.invocation_params.dir, arg.split("::")[0])
        files = [path] if path.is_file() else sorted(path.glob("test_*.py"))[:50] if path.is_dir() else []
        for f in files:
            try:
                if "lc_case" in f.read_text(encoding="utf-8", errors="replace"):
                    return True
            except OSError:
                continue
    return False
