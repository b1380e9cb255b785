"""The command line: lcplugin's options and the typed ``Settings`` built from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..benchmarks.base import BenchOptions
from ..config.contexts import parse_ctx_list
from ..config.settings import Settings, parse_data_options, parse_engine_args
from ..engines.base import registered_engines
from ..errors import LcError
from ..results.baselines import parse_tolerances


def add_options(parser: pytest.Parser) -> None:
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
    for flag, keywords in BenchOptions.command_line():  # the protocol options, declared with their fields
        g.addoption(flag, **keywords)
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
    g.addoption("--lc-strict", action="store_true",
                help="fail the session when no lcplugin test ran (all skipped, or none selected): for CI")
    g.addoption("--lc-plan", action="store_true",
                help="print each worker's models and estimated tokens (and hours, where an earlier run measured "
                     "them on this device), then exit without running (with -n N: for N workers)")


def settings_from(config: pytest.Config) -> Settings:
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
        tolerances=parse_tolerances(opt("--lc-efficiency-tolerance")), bench=BenchOptions.from_command_line(opt))


