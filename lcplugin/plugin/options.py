"""The command line: lcplugin's options, each value checked as it is parsed, and the typed ``Settings``.

Every option that takes a value has an argparse ``type=`` (as pytest-benchmark's options do): a bad
value is refused by pytest's own parser, a usage error (exit 4) naming the option, the value and the
fix, before any plugin is configured or a test collected. Checks that need two options together
stay in ``settings_from``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ..benchmarks.base import BenchOptions, whole_number
from ..config.contexts import parse_ctx_list
from ..config.settings import Settings, parse_data_option, parse_engine_arg
from ..engines.registry import registered_engines
from ..errors import LcError
from ..results import figures
from ..results.baselines import parse_tolerances

T = TypeVar("T")


def option_type(option: str, parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse`` as an argparse ``type=`` for ``option``: its LcError becomes argparse's own error.

    argparse starts the message with "argument OPTION:", so a leading OPTION in the parser's message
    (which it carries for use elsewhere) is dropped rather than said twice."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except LcError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(option).lstrip(": ")) from None

    convert.__name__ = option  # what argparse would name in a message of its own
    return convert


def number(low: float, high: float | None, example: str, inclusive: bool = True) -> Callable[[str], float]:
    """A number from ``low`` (included when ``inclusive``) up to ``high`` (excluded; None: no bound)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        above = value >= low if inclusive else value > low
        if not (above and (high is None or value < high)):  # also refuses nan
            where = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
            raise LcError(f"{text!r} is not a number {where}; give e.g. {example}")
        return value

    return parse


def contexts(text: str) -> tuple[int, ...] | None:
    """``8k,32k`` in order, repeats dropped; an empty value is the default (each spec's own contexts)."""
    return tuple(parse_ctx_list(text)) if text else None


def engine_name(text: str) -> str:
    """A registered engine: the built-ins and any a plugin registered when it was imported (``-p``)."""
    if text not in registered_engines():  # else every test would skip, and the session exit 0
        raise LcError(f"unknown engine {text!r}; accepted: {', '.join(registered_engines())} (a plugin's own "
                      "engine: lcplugin.engines.register_engine when its module is imported, loaded with -p)")
    return text


def add_options(parser: pytest.Parser) -> None:
    g = parser.getgroup("lcplugin", "long-context benchmarks (lcplugin)")

    def typed(name: str, parse: Callable[[str], Any], **attrs: Any) -> None:
        g.addoption(name, type=option_type(name, parse), **attrs)

    g.addoption("--lc-models", default=None, metavar="NAMES|all",
                help="comma-separated model spec names, or 'all' (default: all)")
    typed("--lc-ctx", contexts, default=None, metavar="8k,32k,...",
          help="context lengths for every model (default: each spec's own 'contexts')")
    typed("--lc-limit", whole_number(1, "--lc-limit 8"), default=None, metavar="N",
          help="items per test (default: all; 8 for synthetic data)")
    typed("--lc-data", parse_data_option, action="append", default=[], metavar="BENCH=PATH",
          help="local data file for a benchmark (repeatable)")
    g.addoption("--lc-results", default="results", metavar="DIR", help="where run folders go (default: results/)")
    g.addoption("--lc-baselines", default="baselines", metavar="DIR", help="baseline folder (default: baselines/)")
    g.addoption("--lc-update-baselines", action="store_true", help="record this run's figures as the baselines")
    typed("--lc-engine", engine_name, default=None, metavar="NAME",
          help=f"override every spec's engine ({', '.join(registered_engines())})")
    typed("--lc-engine-arg", parse_engine_arg, action="append", default=[], metavar="KEY=VALUE",
          help="set an engine argument for every selected model, overriding its spec's engine_args "
               "(repeatable; VALUE is a TOML value, a bare word is a string), e.g. prefill_chunk=8192")
    g.addoption("--lc-specs", action="append", default=[], metavar="DIR",
                help="extra folder of model spec files (repeatable; a spec replaces a built-in of the same name)")
    typed("--lc-alpha", number(0, 1, "--lc-alpha 0.05", inclusive=False), default=0.05, metavar="A",
          help="significance level of the regression gates (default 0.05)")
    g.addoption("--lc-sampling", choices=("official", "greedy"), default="official",
                help="decode with each benchmark's official sampling (default) or greedily")
    for flag, keywords, parse in BenchOptions.command_line():  # the protocol options, declared with their fields
        if parse is None:
            g.addoption(flag, **keywords)
        else:
            typed(flag, parse, **keywords)
    g.addoption("--lc-resume", default=None, metavar="RUN_ID",
                help="continue a run folder (default: an unfinished run with the same settings is continued)")
    g.addoption("--lc-allow-remote-code", action="store_true",
                help="let specs that set trust_remote_code run the model's own Python code (off by default)")
    typed("--lc-efficiency-tolerance", parse_tolerances, default=None, metavar="FIG=PCT,...",
          help="with --lc-update-baselines: gate "
               f"{', '.join(f.key for f in figures.reaching('gated'))} within these percentages")
    g.addoption("--lc-wandb", default=None, metavar="PROJECT",
                help="log the summary and per-item table to Weights & Biases (offline unless WANDB_MODE is set)")
    typed("--lc-progress-every", number(0, None, "--lc-progress-every 60"), default=180.0, metavar="S",
          help="non-interactive or -q: a progress line every S seconds (default 180; 0: none)")
    g.addoption("--lc-strict", action="store_true",
                help="fail the session when no lcplugin test ran (all skipped, or none selected): for CI")
    g.addoption("--lc-plan", action="store_true",
                help="print each worker's models and estimated tokens (and hours, from the rates earlier runs "
                     "measured on this device, fitted against the context past them), then exit without running "
                     "(with -n N: for N workers)")


def settings_from(config: pytest.Config) -> Settings:
    """The parsed options as ``Settings``; each value was checked when parsed, only combinations here."""
    opt = config.getoption
    tolerances: dict[str, float] | None = opt("--lc-efficiency-tolerance")
    if tolerances and not opt("--lc-update-baselines"):
        text = ",".join(f"{k}={v:g}" for k, v in tolerances.items())
        raise LcError(f"--lc-efficiency-tolerance {text!r} only acts with --lc-update-baselines (the "
                      "tolerances are recorded into the baselines, which gate later runs); add it, or drop the option")
    engine_args: list[tuple[str, Any]] = opt("--lc-engine-arg")
    return Settings(
        models=opt("--lc-models"), ctx=opt("--lc-ctx"), limit=opt("--lc-limit"),
        data=dict(opt("--lc-data")), results=Path(opt("--lc-results")),
        baselines=Path(opt("--lc-baselines")), update_baselines=opt("--lc-update-baselines"),
        engine=opt("--lc-engine"), engine_args=tuple(dict(engine_args).items()),
        specs_dirs=tuple(Path(d) for d in opt("--lc-specs")), alpha=opt("--lc-alpha"),
        sampling=opt("--lc-sampling"), resume=opt("--lc-resume"), allow_remote_code=opt("--lc-allow-remote-code"),
        tolerances=tolerances or {},
        bench=BenchOptions.from_command_line(opt))
