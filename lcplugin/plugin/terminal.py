"""The terminal summary: one row per test, the engine loads, the run folder and its report."""

from __future__ import annotations

from typing import Any

import pytest

from ..results.runfolder import RunFolder


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def write_summary(terminalreporter: Any, run: RunFolder, config: pytest.Config) -> None:
    tr = terminalreporter
    tr.write_sep("=", "lcplugin summary")
    header = (f"{'test':<44} {'n':>4} {'acc':>6} {'ci95':>13} {'null':>6} {'prefill/s':>10} {'decode/s':>9} "
              f"{'ttft_s':>7} {'mem_gb':>7} {'ppl':>8} {'test_s':>7} {'load_s':>7} {'worker':>6} {'vs baseline':>18}")
    tr.write_line(header)
    for s in run.summaries:
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
    loads = run.store.meta.get("engine_loads", [])
    tr.write_line(f"engine loads: {len(loads)}, {sum(x['load_s'] for x in loads):.1f} s "
                  f"({', '.join(sorted({x['model'] + '@' + x['worker'] for x in loads}))}); "
                  f"tests: {sum(s.get('wall_s') or 0 for s in run.summaries):.1f} s")
    tr.write_line(f"run folder: {run.store.dir}  (per-item records under records/, summary.json)")
    try:
        from ..results.report import write_report

        write_report([run.store.dir], run.store.dir / "report")
        tr.write_line(f"report: {run.store.dir / 'report'}  (report.md and PNG plots versus context length)")
    except ImportError:
        tr.write_line("report: pip install 'lcplugin[plots]' for plots, then python -m lcplugin report RUN_DIR --out DIR")
    project = config.getoption("--lc-wandb")
    if project:
        from ..results.tracking import log_run

        tr.write_line("wandb: " + log_run(project, run.store.dir, run.store.meta, run.summaries))
