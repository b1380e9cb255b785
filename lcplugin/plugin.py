"""The pytest plugin: options, the model x context matrix, test order, fixtures, terminal summary.

It only wires: options and specs become parameters, each test gets its engine and runs
``runner.run_case``, and a gate verdict becomes pass or fail. Nothing here knows how an engine or a
benchmark works. The plugin is inert in test sessions that collect no ``lc_case`` test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .baselines import parse_tolerances
from .benchmarks.base import BenchOptions
from .contexts import parse_ctx_list
from .engines.base import registered_engines
from .errors import LcError
from .session import Case, LcSession, Settings, parse_data_options, parse_engine_args, parse_select

_SESSION = pytest.StashKey[LcSession]()
_WORKER = pytest.StashKey[Any]()  # distributed.Worker, in a pytest-xdist worker
_PLAN_WORKERS = pytest.StashKey[int]()
# benchmarks that share a context window (Benchmark.context_window) run side by side: one vLLM load
_BENCH_ORDER = ("longbench_v2", "pg19", "ada_leval_bestanswer", "ada_leval_tsort")


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("lcplugin", "long-context benchmarks (lcplugin)")
    g.addoption("--lc-models", default=None, metavar="NAMES|all",
                help="comma-separated model spec names, or 'all' (default: all)")
    g.addoption("--lc-ctx", default=None, metavar="8k,32k,...",
                help="context lengths for every model (default: each spec's own 'contexts')")
    g.addoption("--lc-limit", type=int, default=None, metavar="N", help="items per test (default: all; 8 for synthetic data)")
    g.addoption("--lc-data", action="append", default=[], metavar="BENCH=PATH",
                help="local data file for a benchmark (repeatable)")
    g.addoption("--lc-results", default="results", metavar="DIR", help="where run folders go (default: results/)")
    g.addoption("--lc-baselines", default="baselines", metavar="DIR", help="baseline folder (default: baselines/)")
    g.addoption("--lc-update-baselines", action="store_true", help="record this run's figures as the baselines")
    g.addoption("--lc-engine", default=None, metavar="NAME", help="override every spec's engine (hf, vllm, mamba_ssm)")
    g.addoption("--lc-engine-arg", action="append", default=[], metavar="KEY=VALUE",
                help="set an engine argument for every selected model, overriding its spec's engine_args "
                     "(repeatable; VALUE is a TOML value, a bare word is a string), e.g. prefill_chunk=8192")
    g.addoption("--lc-specs", action="append", default=[], metavar="DIR",
                help="extra folder of model spec files (repeatable; a spec replaces a built-in of the same name)")
    g.addoption("--lc-alpha", type=float, default=0.05, metavar="A",
                help="significance level of the regression gates (default 0.05)")
    g.addoption("--lc-sampling", choices=("official", "greedy"), default="official",
                help="decode with each benchmark's official sampling (default) or greedily")
    g.addoption("--lc-mode", choices=("0shot", "cot", "nocontext"), default="0shot",
                help="LongBench-v2 protocol: 0-shot (official default), two-pass chain of thought, or no context")
    g.addoption("--lc-select", default=None, metavar="FIELD=V,..;...",
                help="keep items by the dataset's own labels, e.g. 'difficulty=hard;length=short,medium'")
    g.addoption("--lc-overlength", choices=("truncate", "skip"), default="truncate",
                help="a prompt longer than the context: cut in the middle (official) or skip the item")
    g.addoption("--lc-budget", choices=("context", "official"), default="context",
                help="LongBench-v2 prompt budget: context - new tokens - chat template (default), or official "
                     "(pred.py's max_len 120,000 at 128k, scaled: floor(ctx x 120000 / 131072))")
    g.addoption("--lc-resume", default=None, metavar="RUN_ID",
                help="continue a run folder (default: an unfinished run with the same settings is continued)")
    g.addoption("--lc-allow-remote-code", action="store_true",
                help="let specs that set trust_remote_code run the model's own Python code (off by default)")
    g.addoption("--lc-efficiency-tolerance", default=None, metavar="FIG=PCT,...",
                help="with --lc-update-baselines: gate prefill_tok_s, decode_tok_s, peak_mem_gb within these percentages")
    g.addoption("--lc-wandb", default=None, metavar="PROJECT",
                help="log the summary and per-item table to Weights & Biases (offline unless WANDB_MODE is set)")
    g.addoption("--lc-progress-every", type=float, default=180.0, metavar="S",
                help="non-interactive or -q: a progress line every S seconds (default 180; 0: none)")
    g.addoption("--lc-pg19-windows", type=int, default=10, metavar="N", help="PG-19 windows per book (default 10)")
    g.addoption("--lc-pg19-score-last", type=int, default=100, metavar="K",
                help="PG-19: score the last K tokens of each window (default 100)")
    g.addoption("--lc-strict", action="store_true",
                help="fail the session when no lcplugin test ran (all skipped, or none selected): for CI")
    g.addoption("--lc-plan", action="store_true",
                help="print each worker's models and estimated tokens (and hours, where an earlier run measured "
                     "them on this device), then exit without running (with -n N: for N workers)")


def _settings(config: pytest.Config) -> Settings:
    opt = config.getoption
    ctx = opt("--lc-ctx")
    limit = opt("--lc-limit")
    if limit is not None and limit <= 0:
        raise LcError(f"--lc-limit {limit}: give a positive number of items")
    alpha = opt("--lc-alpha")
    if not 0 < alpha < 1:
        raise LcError(f"--lc-alpha {alpha}: give a level between 0 and 1, e.g. 0.05")
    engine = opt("--lc-engine")
    if engine is not None and engine not in registered_engines():  # else every test skips, exit 0
        raise LcError(f"--lc-engine {engine!r}: unknown engine; accepted: {', '.join(registered_engines())}")
    tolerance = opt("--lc-efficiency-tolerance")
    if tolerance and not opt("--lc-update-baselines"):
        raise LcError(f"--lc-efficiency-tolerance {tolerance!r} only acts with --lc-update-baselines (the "
                      "tolerances are recorded into the baselines, which gate later runs); add it, or drop the option")
    return Settings(
        models=opt("--lc-models"), ctx=tuple(parse_ctx_list(ctx)) if ctx else None, limit=limit,
        data=parse_data_options(opt("--lc-data")), results=Path(opt("--lc-results")),
        baselines=Path(opt("--lc-baselines")), update_baselines=opt("--lc-update-baselines"),
        engine=engine, engine_args=parse_engine_args(opt("--lc-engine-arg")),
        specs_dirs=tuple(Path(d) for d in opt("--lc-specs")), alpha=alpha,
        sampling=opt("--lc-sampling"), resume=opt("--lc-resume"), allow_remote_code=opt("--lc-allow-remote-code"),
        tolerances=parse_tolerances(opt("--lc-efficiency-tolerance")),
        bench=BenchOptions(mode=opt("--lc-mode"), select=parse_select(opt("--lc-select")),
                           overlength=opt("--lc-overlength"), budget=opt("--lc-budget"), pg19_windows=opt("--lc-pg19-windows"),
                           pg19_score_last=opt("--lc-pg19-score-last")))


def pytest_configure(config: pytest.Config) -> None:
    for name, text in (("transformer", "Transformer models"), ("ssm", "pure state-space models"),
                       ("hybrid", "hybrid SSM/attention models"), ("engine_hf", "transformers engine"),
                       ("engine_vllm", "vLLM engine"), ("engine_mamba_ssm", "mamba-ssm engine"),
                       ("lc_benchmark(name)", "the lcplugin benchmark a test runs"),
                       ("xdist_group(name)", "pytest-xdist: tests of one model run on one worker")):
        config.addinivalue_line("markers", f"{name}: {text}")
    try:
        lc = config.stash[_SESSION] = LcSession(_settings(config), Path(str(config.rootpath)))
        if getattr(config, "workerinput", None) is None:  # xdist workers write under their controller's lock
            lc.claim_resume()
            if config.getoption("--lc-strict"):
                from .strict import StrictGate

                config.pluginmanager.register(StrictGate(), "lcplugin-strict")
    except LcError as exc:
        raise pytest.UsageError(str(exc)) from None
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "lc_run_id" in workerinput:  # a pytest-xdist worker
        from .distributed import Worker

        lc.worker_run = (workerinput["lc_run_id"], workerinput["workerid"])
        config.stash[_WORKER] = Worker(workerinput)
    elif config.pluginmanager.hasplugin("xdist") and getattr(config.option, "numprocesses", None):
        if config.getoption("--lc-plan"):  # collect here and plan for the workers, start none
            config.stash[_PLAN_WORKERS] = len(config.option.tx or []) or int(config.option.numprocesses)
            config.option.dist, config.option.tx = "no", []
            return
        from .distributed import XdistController

        config.pluginmanager.register(XdistController(lc, config), "lcplugin-xdist")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: one worker per GPU share on a GPU machine, in an lcplugin session (distributed.py)."""
    from .distributed import auto_workers

    try:
        return auto_workers(LcSession(_settings(config), Path(str(config.rootpath))), config)
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
                                              getattr(pytest.mark, f"engine_{c.spec.engine}"),
                                              pytest.mark.xdist_group(c.spec.name), quiet]) for c in cases]
    metafunc.parametrize("lc_case", params)


def _case_of(item: pytest.Item) -> Case | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("lc_case") if callspec else None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order benchmark tests model by model, so each model's engine loads once."""
    lc = lc_session_of(config)

    def key(pair: tuple[int, pytest.Item]) -> tuple:
        index, item = pair
        case = _case_of(item)
        if case is None:
            return (0, index)
        bench = _BENCH_ORDER.index(case.benchmark) if case.benchmark in _BENCH_ORDER else len(_BENCH_ORDER)
        return (1, lc.model_order(case.spec.name), case.ctx, bench, index)

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
def lc_engines(lc_session: LcSession, request: pytest.FixtureRequest) -> Iterator[Any]:
    """One engine worker at a time, reused by all tests of a model; every load recorded in the run."""
    from .engines.manager import EngineManager
    from .store import record_load

    worker = request.config.stash.get(_WORKER, None)
    if worker is not None:  # now that this pytest-xdist worker runs lcplugin tests: its GPUs and cores
        worker.share_devices()
    manager = EngineManager(lc_session.store.dir / "logs", worker.id if worker else "main",
                            on_load=record_load(lambda: lc_session.store))
    yield manager
    manager.shutdown()


@pytest.fixture
def lc_run(lc_session: LcSession, lc_engines: Any, benchmark: Any, record_property: Any,
           request: pytest.FixtureRequest) -> Any:
    """Call with the test's ``lc_case`` to run it; returns the test's summary."""
    from .runner import run_case

    return lambda case: run_case(case, lc_session, lc_engines, benchmark, record_property, request.node)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run that went through (passed or failed) is finished; a killed or interrupted one is not,
    so the next session with the same settings continues it."""
    lc = session.config.stash.get(_SESSION, None)
    if lc is None or lc.worker_run is not None:
        return
    controller = session.config.pluginmanager.get_plugin("lcplugin-xdist")
    if controller is not None:  # the tests ran in xdist workers: merge and show what they recorded
        lc._store = controller.finish()
        if lc._store is not None:
            lc.summaries.extend(lc._store.tests.values())
        controller.write_benchmark_json()
    if lc._store is None:  # no lcplugin test recorded anything: nothing to finish
        return
    if exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        lc.store.finish()


def pytest_unconfigure(config: pytest.Config) -> None:
    lc = config.stash.get(_SESSION, None)
    if lc is not None:
        lc.close()  # the run folder's lock: another session may continue this run now


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lc = config.stash.get(_SESSION, None)
    if lc is None or not lc.summaries or lc.worker_run is not None:
        return
    tr = terminalreporter
    tr.write_sep("=", "lcplugin summary")
    header = (f"{'test':<44} {'n':>4} {'acc':>6} {'ci95':>13} {'null':>6} {'prefill/s':>10} {'decode/s':>9} "
              f"{'ttft_s':>7} {'mem_gb':>7} {'ppl':>8} {'test_s':>7} {'load_s':>7} {'worker':>6} {'vs baseline':>18}")
    tr.write_line(header)
    for s in lc.summaries:
        ci = s.get("accuracy_ci95")
        b = s.get("baseline", {})
        if b.get("status") == "recorded":
            vs = "recorded"
        elif b.get("status") == "none":
            vs = "no baseline"
        else:
            delta = b.get("delta_accuracy")
            vs = f"{_fmt(delta, '+.3f')} {b.get('status')}"
        name = f"{s['benchmark']}[{s['test']}]" + (f" budget={s['budget']}" if s.get("budget") else "")
        tr.write_line(
            f"{name:<44} {s['n']:>4} {_fmt(s.get('accuracy'), '.3f'):>6} "
            f"{('[' + _fmt(ci[0], '.2f') + ',' + _fmt(ci[1], '.2f') + ']') if ci else '-':>13} "
            f"{_fmt(s.get('null_rate'), '.3f'):>6} {_fmt(s.get('prefill_tok_s'), '.0f'):>10} "
            f"{_fmt(s.get('decode_tok_s'), '.1f'):>9} {_fmt(s.get('ttft_s'), '.3f'):>7} "
            f"{_fmt(s.get('peak_mem_gb'), '.2f'):>7} {_fmt(s.get('perplexity'), '.2f'):>8} "
            f"{_fmt(s.get('wall_s'), '.1f'):>7} {_fmt(s.get('engine_load_s'), '.1f'):>7} {s.get('worker') or '-':>6} {vs:>18}")
    loads = lc.store.meta.get("engine_loads", [])
    tr.write_line(f"engine loads: {len(loads)}, {sum(x['load_s'] for x in loads):.1f} s "
                  f"({', '.join(sorted({x['model'] + '@' + x['worker'] for x in loads}))}); "
                  f"tests: {sum(s.get('wall_s') or 0 for s in lc.summaries):.1f} s")
    tr.write_line(f"run folder: {lc.store.dir}  (per-item records under records/, summary.json)")
    try:
        from .report import write_report

        write_report([lc.store.dir], lc.store.dir / "report")
        tr.write_line(f"report: {lc.store.dir / 'report'}  (report.md and PNG plots versus context length)")
    except ImportError:
        tr.write_line("report: pip install 'lcplugin[plots]' for plots, then python -m lcplugin report RUN_DIR --out DIR")
    project = config.getoption("--lc-wandb")
    if project:
        from .tracking import log_run

        tr.write_line("wandb: " + log_run(project, lc.store.dir, lc.store.meta, lc.summaries))
