"""The pytest plugin: options, the model x context matrix, test order, fixtures, terminal summary.

It only wires: options and specs become parameters, each test gets its engine and runs
``runner.run_case``, and a gate verdict becomes pass or fail. Nothing here knows how an engine or a
benchmark works. The plugin is inert in test sessions that collect no ``lc_case`` test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ..benchmarks.base import BENCHMARKS, get_benchmark
from ..config.session import Case, LcSession
from ..engines.registry import engine_entries
from ..errors import LcError
from ..results.runfolder import RunFolder
from . import options

if TYPE_CHECKING:
    from .caches import SessionCaches

_SESSION = pytest.StashKey[LcSession]()
_RUN_FOLDER = pytest.StashKey[RunFolder]()
_WORKER = pytest.StashKey[Any]()  # distributed.Worker, in a pytest-xdist worker
_PLAN_WORKERS = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    engines = [(f"engine_{e.name}", f"{e.marker}, the engine a test runs (--lc-engine, else its spec's)") for e in engine_entries()]
    for name, text in (("transformer", "Transformer models"), ("ssm", "pure state-space models"),
                       ("hybrid", "hybrid SSM/attention models"), *engines,
                       ("lc_benchmark(name)", "the lcplugin benchmark a test runs"),
                       ("xdist_group(name)", "pytest-xdist: tests of one model run on one worker")):
        config.addinivalue_line("markers", f"{name}: {text}")
    workerinput = getattr(config, "workerinput", None)
    try:
        lc = config.stash[_SESSION] = LcSession(options.settings_from(config), Path(str(config.rootpath)))
        adopted = workerinput is not None and "lc_run_id" in workerinput  # a worker of lcplugin's xdist controller
        adopt = (workerinput["lc_run_id"], workerinput["workerid"]) if adopted else None
        folder = config.stash[_RUN_FOLDER] = RunFolder(lc.results_root(), lc.settings.settings_hash(),
                                                       resume=lc.settings.resume, adopt=adopt)
        if workerinput is None:  # xdist workers write under their controller's lock
            folder.claim_resume()
            if config.getoption("--lc-strict"):
                from .strict import StrictGate

                config.pluginmanager.register(StrictGate(), "lcplugin-strict")
    except LcError as exc:
        raise pytest.UsageError(str(exc)) from None
    if folder.adopted:  # a pytest-xdist worker
        from .distributed import Worker

        config.stash[_WORKER] = Worker(workerinput)
    elif config.pluginmanager.hasplugin("xdist") and getattr(config.option, "numprocesses", None):
        if config.getoption("--lc-plan"):  # collect here and plan for the workers, start none
            config.stash[_PLAN_WORKERS] = len(config.option.tx or []) or int(config.option.numprocesses)
            config.option.dist, config.option.tx = "no", []
            return
        from .distributed import XdistController

        config.pluginmanager.register(XdistController(lc, folder, config), "lcplugin-xdist")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: one worker per GPU share on a GPU machine, in an lcplugin session (distributed.py)."""
    from .distributed import auto_workers

    try:
        return auto_workers(LcSession(options.settings_from(config), Path(str(config.rootpath))), config)
    except LcError:
        return None  # pytest_configure reports it


def lc_session_of(config: pytest.Config) -> LcSession:
    return config.stash[_SESSION]


def _benchmark_name(metafunc: pytest.Metafunc) -> str:
    mark = metafunc.definition.get_closest_marker("lc_benchmark")
    if mark is None or not mark.args:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: mark the test with "
                                "@pytest.mark.lc_benchmark('<benchmark name>') to use lc_case")
    return str(mark.args[0])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "lc_case" not in metafunc.fixturenames:
        return
    session = lc_session_of(metafunc.config)
    cases = session.cases(_benchmark_name(metafunc))
    # A case that fails before anything is timed (engine cannot load, data missing) already says why;
    # pytest-benchmark's "fixture was not used" warning on top of that would only be noise.
    quiet = pytest.mark.filterwarnings("ignore:Benchmark fixture was not used at all")
    params = [pytest.param(c, id=c.id, marks=[getattr(pytest.mark, c.spec.family),
                                              getattr(pytest.mark, f"engine_{session.engine_of(c.spec)}"),
                                              pytest.mark.xdist_group(c.spec.name), quiet]) for c in cases]
    metafunc.parametrize("lc_case", params)


def _case_of(item: pytest.Item) -> Case | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("lc_case") if callspec else None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order benchmark tests model by model, so each model's engine loads once."""
    lc = lc_session_of(config)
    names = list(BENCHMARKS)
    by_model_window: dict[str, bool] = {}

    def key(pair: tuple[int, pytest.Item]) -> tuple:
        index, item = pair
        case = _case_of(item)
        if case is None:
            return (0, index)
        name = case.benchmark
        if name not in by_model_window:  # sized by the model's window, not the test's context (Ada-LEval)
            by_model_window[name] = get_benchmark(name).context_window(case.ctx, 0) != case.ctx
        # benchmarks that share an engine size (Benchmark.context_window) run side by side: one vLLM load
        order = names.index(name) if name in names else len(names)
        return (1, lc.model_order(case.spec.name), case.ctx, by_model_window[name], order, index)

    items[:] = [item for _, item in sorted(enumerate(items), key=key)]
    if config.getoption("--lc-plan"):
        from .plan import plan_lines

        tr = config.pluginmanager.getplugin("terminalreporter")
        lines = plan_lines(lc, [item.nodeid for item in items], config.stash.get(_PLAN_WORKERS, 1))
        for line in lines:
            tr.write_line(line) if tr else print(line)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    """``--lc-plan`` prints the plan at collection and runs nothing, like ``--collect-only``."""
    return True if session.config.getoption("--lc-plan") else None


@pytest.fixture(scope="session")
def lc_session(request: pytest.FixtureRequest) -> LcSession:
    return lc_session_of(request.config)


@pytest.fixture(scope="session")
def lc_run_folder(lc_session: LcSession, request: pytest.FixtureRequest) -> RunFolder:
    """This session's run folder, chosen, created and locked when the first test that records needs it."""
    worker = request.config.stash.get(_WORKER, None)
    if worker is not None:  # now that this pytest-xdist worker runs lcplugin tests: its GPUs and cores, before
        worker.share_devices()  # the run's metadata names the device and the engine process starts
    folder = request.config.stash[_RUN_FOLDER]
    folder.open(lc_session.run_meta)
    return folder


@pytest.fixture(scope="session")
def lc_caches() -> SessionCaches:
    """Tokenizers, items, token-id caches and data digests: loaded once, reused by every test."""
    from .caches import SessionCaches

    return SessionCaches()


@pytest.fixture(scope="session")
def lc_engines(lc_run_folder: RunFolder, request: pytest.FixtureRequest) -> Iterator[Any]:
    """One engine worker at a time, reused by all tests of a model; every load recorded in the run."""
    from ..engines.manager import EngineManager
    from ..results.store import record_load

    worker = request.config.stash.get(_WORKER, None)
    manager = EngineManager(lc_run_folder.store.dir / "logs", worker.id if worker else "main",
                            on_load=record_load(lambda: lc_run_folder.store))
    yield manager
    manager.shutdown()


@pytest.fixture
def lc_run(lc_session: LcSession, lc_run_folder: RunFolder, lc_caches: SessionCaches, lc_engines: Any, benchmark: Any,
           record_property: Any, request: pytest.FixtureRequest) -> Any:
    """Call with the test's ``lc_case`` to run it; returns the test's summary."""
    from .runner import run_case

    return lambda case: run_case(case, lc_session, lc_run_folder, lc_caches, lc_engines, benchmark, record_property,
                                 request.node)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run that went through (passed or failed) is finished; a killed or interrupted one is not,
    so the next session with the same settings continues it."""
    folder = session.config.stash.get(_RUN_FOLDER, None)
    if folder is None or folder.adopted:
        return
    controller = session.config.pluginmanager.get_plugin("lcplugin-xdist")
    if controller is not None:  # the tests ran in xdist workers: merge and show what they recorded
        try:
            controller.finish()
        except LcError as exc:  # two workers' parts hold one test: both kept, the run left unfinished
            pytest.exit(str(exc), returncode=pytest.ExitCode.INTERNAL_ERROR)
        controller.write_benchmark_json()
    if not folder.opened:  # no lcplugin test recorded anything: nothing to finish
        return
    if exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        folder.finish()


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_RUN_FOLDER, None)
    if folder is not None:
        folder.release()  # the run folder's lock: another session may continue this run now


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    folder = config.stash.get(_RUN_FOLDER, None)
    if folder is None or not folder.summaries or folder.adopted:
        return
    from .terminal import write_summary

    write_summary(terminalreporter, folder, config)
