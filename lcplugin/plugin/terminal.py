"""The terminal summary: one row per test, the engine loads, the run folder and its report."""

from __future__ import annotations

from typing import Any

import pytest

from ..config.contexts import ctx_label
from ..results import figures
from ..results.runfolder import RunFolder


def write_summary(terminalreporter: Any, run: RunFolder, config: pytest.Config) -> None:
    tr = terminalreporter
    tr.write_sep("=", "lcplugin summary")
    columns = figures.reaching("terminal")
    tr.write_line(" ".join([f"{'test':<44}", *(f.terminal_heading() for f in columns),
                            f"{'worker':>6}", f"{'vs baseline':>18}"]))
    for s in run.summaries:
        b = s.get("baseline", {})
        if b.get("status") == "recorded":
            vs = "recorded"
        elif b.get("status") == "none":
            vs = "no baseline"
        else:
            delta = b.get("delta_accuracy")
            vs = f"{figures.show(delta, '+.3f', '-')} {b.get('status')}"
        name = f"{s['benchmark']}[{s['test']}]" + (f" budget={s['budget']}" if s.get("budget") else "")
        if s.get("fill") == "full":  # LongBench-v2 past 128k: how many items filled the context, of how many
            name += f" fill=full({s.get('n', 0)}/{s.get('n', 0) + (s.get('skipped_underfill') or 0)})"
        if s.get("beyond_window"):  # ran past the model's trained window: the experiment, marked in every row
            name += f" beyond-window({ctx_label(s['trained_window'])})"
        tr.write_line(" ".join([f"{name:<44}", *(f.terminal_cell(s) for f in columns),
                                f"{s.get('worker') or '-':>6}", f"{vs:>18}"]))
    loads = run.store.meta.get("engine_loads", [])
    # compiling, capturing and warming up a shape happens once per shape per session, outside every timing
    # (hf's static cache, mamba_ssm's graph; the engines set it aside): its total is part of what the session cost
    warmups = [w for s in run.summaries if (w := s.get("warmup_s"))]
    warm = f"compile and warm-up: {sum(warmups):.1f} s (outside the timings); " if warmups else ""
    tr.write_line(f"engine loads: {len(loads)}, {sum(x['load_s'] for x in loads):.1f} s "
                  f"({', '.join(sorted({x['model'] + '@' + x['worker'] for x in loads}))}); {warm}"
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
