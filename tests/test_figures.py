"""One table of figures (``lcplugin.results.figures``), and every figure reaches every output it is
declared for, through the code that writes each output: the terminal table, report.md and its plots,
the efficiency gate and its option's help, wandb's summary table, and (in a run of ``pytest`` with
the fake engine) the summary, JUnit properties and pytest-benchmark's ``extra_info``.

The same checks run on the table with a figure added at run time: adding a figure is its producer
plus one row, with no edit to any output.
"""

from __future__ import annotations

import json
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lcplugin.errors import LcError
from lcplugin.plugin.terminal import write_summary
from lcplugin.results import baselines, figures
from lcplugin.results.figures import Column, Figure
from lcplugin.results.report import write_report
from lcplugin.results.tracking import log_run

from .conftest import REPO
from .test_figures_pinned import Lines, run_folder

pytest_plugins = ["pytester"]

# inter-token latency p99, as a contributor would add it: every output it is declared for
ITL = Figure("itl_p99_s", "inter-token latency, 99th percentile (s)", "s", "lower", gated=True, plot="log",
             terminal=Column("itl_p99", ".3f", 7), markdown=Column("ITL p99 s", ".3f"), recorded=True, tracked=True)


@pytest.fixture(params=["as shipped", "with a figure added at run time"])
def table(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> tuple[Figure, ...]:
    if request.param != "as shipped":
        monkeypatch.setattr(figures, "FIGURES", (*figures.FIGURES, ITL))
    return figures.FIGURES


def known_summary(table: tuple[Figure, ...]) -> dict[str, Any]:
    """A test's summary where every figure has its own value: a whole number (printed exactly by any
    format), and a pair for the figures that are another's interval."""
    intervals = {f.interval for f in table if f.interval}
    values = {f.key: [0.25, 0.75] if f.key in intervals else float(10 + i) for i, f in enumerate(table)}
    return {**values, "benchmark": "longbench_v2", "model": "m", "test": "m-1k", "ctx": 1024, "worker": "main",
            "baseline": {"status": "recorded"}, "device": "cpu", "correct": None, "nulls": None}


def cells_by_heading(header: str, row: str) -> dict[str, str]:
    """The terminal table's cells under their headings: both are right-aligned, so they end together."""
    ends = {m.end(): m.group() for m in re.finditer(r"\S+", header)}
    return {ends[m.end()]: m.group() for m in re.finditer(r"\S+", row) if m.end() in ends}


def markdown_cells(report: str, model: str) -> dict[str, str]:
    lines = report.splitlines()
    header = next(line for line in lines if line.startswith("| model |"))
    row = next(line for line in lines if line.startswith(f"| {model} |"))
    return dict(zip(header.strip("| ").split(" | "), row.strip("| ").split(" | "), strict=True))


def number(cell: str) -> float:
    return float(cell.split()[0].replace(",", ""))


def test_the_table_is_well_formed() -> None:
    keys = [f.key for f in figures.FIGURES]
    assert len(keys) == len(set(keys)), "a key twice would be two columns of one figure"
    for f in figures.FIGURES:
        assert f.interval is None or figures.get(f.interval) is not None, f"{f.key}: its interval is no figure"
    with pytest.raises(ValueError, match="gated but its 'better' is None"):
        Figure("x", "x", "", gated=True)
    with pytest.raises(ValueError, match="not an identifier"):
        Figure("x-y", "x", "")


def test_every_figure_reaches_the_terminal_table(table, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the table alone, no plots
    summary = known_summary(table)
    tr = Lines()
    folder = run_folder(tmp_path, [summary])
    write_summary(tr, SimpleNamespace(summaries=[summary], store=SimpleNamespace(meta={}, dir=folder)),
                  SimpleNamespace(getoption=lambda name: None))  # type: ignore[arg-type]
    cells = cells_by_heading(tr.lines[1], tr.lines[2])
    for f in table:
        if f.terminal is None:
            assert f.key not in tr.lines[1]
            continue
        shown = cells[f.terminal.header]
        if isinstance(summary[f.key], list):
            assert [float(x) for x in shown.strip("[]").split(",")] == summary[f.key], f.key
        else:
            assert number(shown) == summary[f.key], f.key


def test_every_figure_reaches_the_report(table, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    summary = known_summary(table)
    paths = write_report([run_folder(tmp_path, [summary])], tmp_path / "out")
    cells = markdown_cells((tmp_path / "out" / "report.md").read_text(), "m")
    pngs = {p.name for p in paths}
    for f in table:
        if f.markdown is not None:
            cell = cells.pop(f.markdown.header)
            assert number(cell) == summary[f.key], f.key
            if f.interval:
                assert cell.endswith(f"[{summary[f.interval][0]:.3f}, {summary[f.interval][1]:.3f}]"), cell
        assert (f"longbench_v2-{f.key}.png" in pngs) == bool(f.plot), f.key
    assert set(cells) == {"model", "run", "ctx"}  # no column without its figure


def gate(folder: Path, key: str, old: float, new: float) -> list[str]:
    """The failures of a test whose ``key`` moved from ``old`` (recorded with a 10 % tolerance) to ``new``."""
    start = {"n": 0, "correct": None, "nulls": None, "accuracy": None, "null_rate": None, key: old}
    baselines.record(folder, "m", "b", 1024, start, machine="cpu",
                     tolerances=baselines.parse_tolerances(f"{key}=10"), settings={})
    return baselines.judge(folder, "m", "b", 1024, {**start, key: new, "device": "cpu"}, settings={}).failures


def test_every_gated_figure_reaches_the_gate(table, tmp_path: Path) -> None:
    for f in table:
        if not f.gated:
            with pytest.raises(LcError, match="with FIGURE one of"):
                baselines.parse_tolerances(f"{f.key}=10")
            continue
        worse, within, better = (50.0, 95.0, 200.0) if f.better == "higher" else (200.0, 105.0, 50.0)
        failures = gate(tmp_path / f.key, f.key, 100.0, worse)
        assert len(failures) == 1 and failures[0].startswith(f"{f.key} {f.worse} from 100 to "), failures
        assert gate(tmp_path / f.key, f.key, 100.0, within) == []  # 5 % worse: within the 10 %
        assert gate(tmp_path / f.key, f.key, 100.0, better) == []


def test_the_tolerance_help_lists_every_gated_figure(table, pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    text = result.stdout.str()
    start = text.index("--lc-efficiency-tolerance")
    block = text[start:text.index("\n  --", start)]
    assert [f.key for f in table if f.gated and f.key in block] == [f.key for f in table if f.gated]


def test_every_tracked_figure_reaches_wandb(table, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[Mapping[str, Any]] = []
    run = SimpleNamespace(log=logged.append, finish=lambda: None)
    wandb = SimpleNamespace(init=lambda **kw: run, Table=lambda columns, data: dict(zip(columns, data[0], strict=True))
                            if data else {})
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setenv("WANDB_MODE", "offline")  # log_run sets it when unset: keep it this test's
    summary = known_summary(table)
    log_run("p", tmp_path, {}, [summary])
    row = logged[0]["summary"]
    assert {k: row[k] for k in ("benchmark", "model", "ctx")} == {"benchmark": "longbench_v2", "model": "m", "ctx": 1024}
    assert {k: v for k, v in row.items() if k not in ("benchmark", "model", "ctx")} == {
        f.key: summary[f.key] for f in table if f.tracked}


# A run as a user makes it, with the fake engine; a -p plugin adds ITL to the table and a producer
# for it to summary.efficiency, as a contributor's two-file change would.
ADD_ITL = f"""
from lcplugin.results import figures, summary
from lcplugin.results.figures import Column, Figure

figures.FIGURES = (*figures.FIGURES, {ITL!r})
measured = summary.efficiency
summary.efficiency = lambda records: {{**measured(records), "itl_p99_s": 0.125}}
"""

BENCHES = """
import pytest

@pytest.mark.lc_benchmark("longbench_v2")
def test_longbench_v2(lc_case, lc_run):
    lc_run(lc_case)

@pytest.mark.lc_benchmark("pg19")
def test_pg19(lc_case, lc_run):
    lc_run(lc_case)
"""


@pytest.mark.slow
def test_a_run_writes_every_figure_and_one_added_at_run_time(pytester: pytest.Pytester,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # the subprocess imports tests.fake_engines from the checkout (its cwd is pytester's folder)
    # the figure arrives in a -p plugin: options are checked when parsed, before any conftest.py loads
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), str(pytester.path),
                                                                   os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("LC_FAKE_TELEMETRY", '{"mem_used_gb": 2.5}')  # a figure the engine measures itself
    pytester.makepyfile(itl_plugin=ADD_ITL)
    pytester.makepyfile(test_benches=BENCHES)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "tests.fake_engines", "-p", "itl_plugin", "--lc-engine", "fake", "--lc-models", "tiny-llama",
        "--lc-ctx", "1k", "--lc-limit", "1", "--lc-results", "res", "--lc-baselines", "bl",
        "--lc-update-baselines", "--lc-efficiency-tolerance", "itl_p99_s=10",
        "--junitxml", "junit.xml", "--benchmark-json", "bench.json")
    result.assert_outcomes(passed=2)
    table = (*figures.FIGURES, ITL)
    (folder,) = (pytester.path / "res").iterdir()
    tests = {t["benchmark"]: t for t in json.loads((folder / "summary.json").read_text())["tests"]}
    assert [f.key for f in table if not any(f.key in t for t in tests.values())] == []
    assert tests["longbench_v2"]["itl_p99_s"] == 0.125
    assert tests["longbench_v2"]["mem_used_gb"] == 2.5  # from the engine's telemetry, by its figure key
    for case in ET.parse(pytester.path / "junit.xml").getroot().iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert [f.key for f in table if f.recorded and f"lc_{f.key}" not in props] == [], case.get("name")
        assert props["lc_itl_p99_s"] == "0.125"
    for bench in json.loads((pytester.path / "bench.json").read_text())["benchmarks"]:
        assert [f.key for f in table if f.recorded and f.key not in bench["extra_info"]] == [], bench["name"]
        assert bench["extra_info"]["itl_p99_s"] == 0.125
    lines = result.stdout.lines
    header = next(i for i, line in enumerate(lines) if line.startswith("test ") and "vs baseline" in line)
    row = next(line for line in lines[header:] if line.startswith("longbench_v2["))
    assert cells_by_heading(lines[header], row)["itl_p99"] == "0.125"
    assert markdown_cells((folder / "report" / "report.md").read_text(), "tiny-llama")["ITL p99 s"] == "0.125"
    assert (folder / "report" / "longbench_v2-itl_p99_s.png").stat().st_size > 10_000
    entry = json.loads((pytester.path / "bl" / "tiny-llama.json").read_text())["entries"]["longbench_v2/1k"]
    assert entry["efficiency"]["itl_p99_s"] == 0.125 and entry["tolerance_pct"] == {"itl_p99_s": 10.0}
    assert set(entry["efficiency"]) == {f.key for f in table if f.gated}
