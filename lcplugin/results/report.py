"""Reports: PNG plots and a markdown table of figures versus context length, across runs.

One plot per benchmark and plotted figure (``figures.reaching("plot")``: accuracy with its Wilson
95 % band, null rate, tokens/s, peak memory, PG-19's perplexity), one line per model, context on a
log2 axis; one markdown column per ``figures.reaching("markdown")``. Figures a run did not measure
(memory on CPU) are left out of the plot, never drawn as zero. Where SSMs and hybrids get cheaper per
item than Transformers: ``crossover``. RULER's depth × length maps and effective length: ``ruler_report``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config.contexts import ctx_label
from ..errors import LcError
from . import crossover, figures, ruler_report
from .figures import Figure
from .runfolder import RunFolder, SummaryUnreadable


def load_tests(run_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    tests = []
    for folder in run_dirs:
        try:
            summary = RunFolder.read(folder)
        except SummaryUnreadable as exc:
            raise LcError(f"report: {exc}; pass run folders (results/<run-id>)") from None
        for t in summary.tests:
            tests.append({**t, "run_id": summary.run.get("run_id", folder.name)})
    return tests


def _series(tests: list[dict[str, Any]], key: str, several_runs: bool) -> dict[str, list[dict[str, Any]]]:
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in tests:
        if t.get(key) is None:
            continue
        label = f"{t['model']} ({t['run_id']})" if several_runs else t["model"]
        lines[label].append(t)
    return {k: sorted(v, key=lambda t: t["ctx"]) for k, v in sorted(lines.items())}


def plot(tests: list[dict[str, Any]], benchmark: str, figure: Figure, out: Path,
         several_runs: bool) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key, label, band = figure.key, figure.label, figure.interval
    lines = _series([t for t in tests if t["benchmark"] == benchmark], key, several_runs)
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=120)
    ticks: set[int] = set()
    for name, rows in lines.items():
        xs = [r["ctx"] for r in rows]
        ys = [r[key] for r in rows]
        ticks.update(xs)
        (line,) = ax.plot(xs, ys, marker="o", label=name)
        if band and all(r.get(band) for r in rows):
            ax.fill_between(xs, [r[band][0] for r in rows], [r[band][1] for r in rows],
                            color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ticks), [ctx_label(x) for x in sorted(ticks)])
    shaded = _shade_beyond_window(ax, lines)
    ax.minorticks_off()
    if figure.plot == "log":
        ax.set_yscale("log")
    if figure.unit == figures.FRACTION:
        ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel(label)
    ax.set_title(f"{benchmark}: {label}" + (" (band: Wilson 95 %)" if band else "")
                 + (" (shaded: past the model's trained window)" if shaded else ""), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    path = out / f"{benchmark}-{key}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def _shade_beyond_window(ax: Any, lines: dict[str, list[dict[str, Any]]]) -> bool:
    """Shade, in each line's colour, the contexts past its model's trained window, with a dashed line at
    the window, where the line has points past it: those cells ran beyond what the model was trained
    for, which is the experiment, and a reader must see where it starts. Returns whether any was shaded."""
    lo, hi = ax.get_xlim()
    shaded = False
    for line, rows in zip(ax.get_lines(), lines.values(), strict=True):
        windows = {r["trained_window"] for r in rows if r.get("beyond_window") and r.get("trained_window")}
        for window in windows:
            ax.axvspan(window, hi, color=line.get_color(), alpha=0.08, linewidth=0)
            ax.axvline(window, color=line.get_color(), linestyle="--", linewidth=0.8, alpha=0.7)
            shaded = True
    ax.set_xlim(lo, hi)
    return shaded


def markdown(tests: list[dict[str, Any]], images: dict[str, list[Path]], extra: str = "") -> str:
    """report.md: a table and the plots per benchmark, then ``extra`` (RULER's section), then the notes."""
    out = ["# lcplugin report", ""]
    columns = figures.reaching("markdown")
    for bench in sorted({t["benchmark"] for t in tests}):
        rows = sorted((t for t in tests if t["benchmark"] == bench), key=lambda t: (t["model"], t["ctx"], t["run_id"]))
        budget = any("budget" in t for t in rows)  # LongBench-v2: which max_len cut its prompts
        out += [f"## {bench}", "",
                "| model | run | ctx |" + (" budget |" if budget else "")
                + "".join(f" {f.markdown_heading()} |" for f in columns),
                "| --- | --- | --- |" + (" --- |" if budget else "") + " --- |" * len(columns)]
        for t in rows:
            shown = f" {t.get('budget') or '–'} |" if budget else ""
            ctx = ctx_label(t["ctx"]) + (" †" if t.get("beyond_window") else "")
            out.append(f"| {t['model']} | {t['run_id']} | {ctx} |{shown}"
                       + "".join(f" {f.markdown_cell(t)} |" for f in columns))
        out.append("")
        out += [f"![{p.stem}]({p.name})" for p in images.get(bench, [])]
        out.append("")
    if extra:
        out += extra.splitlines() + [""]
    if any(t.get("beyond_window") for t in tests):
        out.append("† past the model's trained window (its spec's `trained_window`; shaded in the plots): "
                   "run on request, the experiment rather than an error.")
        out.append("")
    out.append("Missing figures (–) were not measured (memory on CPU, accuracy for PG-19), never zero.")
    return "\n".join(out) + "\n"


def write_report(run_dirs: Sequence[Path], out: Path) -> list[Path]:
    tests = load_tests(run_dirs)
    if not tests:
        raise LcError(f"report: no finished tests in {', '.join(map(str, run_dirs))}")
    out.mkdir(parents=True, exist_ok=True)
    several = len({t["run_id"] for t in tests}) > 1
    images: dict[str, list[Path]] = defaultdict(list)
    for bench in sorted({t["benchmark"] for t in tests}):
        for figure in figures.reaching("plot"):
            path = plot(tests, bench, figure, out, several)
            if path:
                images[bench].append(path)
    ruler_md, ruler_maps = ruler_report.write(tests, out, several)
    md = out / "report.md"
    md.write_text(markdown(tests, images, "\n".join(filter(None, [crossover.markdown(tests), ruler_md]))),
                  encoding="utf-8")
    return [md, *(p for paths in images.values() for p in paths), *ruler_maps]
