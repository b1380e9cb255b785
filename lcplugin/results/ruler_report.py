"""RULER in the report: depth × length heat maps per model and task, and each model's effective length.

RULER's point is where and from which length a model stops finding what it was given, so the report
shows both axes at once (one map per model and task, and one averaged over the tasks) and the single
number RULER ranks models by. Kept apart from ``report.py``: these read RULER's own summary keys
(``ruler_score``, ``depth_accuracy``, ``depth_n``), not the figure table every benchmark shares.

Effective length, as NVIDIA/RULER's README and paper state it: a length passes when the average of
``ruler_score`` over the tasks is *exceeding* 85.6 (Llama-2-7B-chat at 4k), and the effective length is
"the maximum length passing this threshold". Here a length counts only if it and every shorter
measured length pass (a pass after a failure does not extend it): the reading that agrees with every
row RULER's authors measured (none of them passes again after failing), and the one that never names
a length a model does not reach dependably. A length where some of the model's tasks are missing
cannot be compared with the threshold and ends the count too.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.contexts import ctx_label

THRESHOLD = 85.6  # RULER: Llama-2-7B-chat's average over its 13 tasks at 4k
PREFIX = "ruler_"
NO_DEPTH = -1  # the row of a task without a needle depth (cwe, fwe): its whole accuracy


def is_ruler(test: Mapping[str, Any]) -> bool:
    return str(test.get("benchmark", "")).startswith(PREFIX) and "ruler_score" in test


@dataclass(frozen=True)
class Length:
    """One model's RULER figures at one context: the mean ``ruler_score`` over the tasks it has there."""

    ctx: int
    average: float | None
    tasks: int
    missing: tuple[str, ...]  # tasks the model ran at another length but not here
    beyond_window: bool

    @property
    def passes(self) -> bool:
        return not self.missing and self.average is not None and self.average > THRESHOLD


@dataclass(frozen=True)
class Effective:
    """A model's effective length (None when not even its shortest length passes) and how to say it."""

    ctx: int | None
    text: str


def lengths(tests: Sequence[Mapping[str, Any]]) -> list[Length]:
    """Per context, the average over tasks of one model's RULER tests (tests without a score are left out)."""
    scored = [t for t in tests if is_ruler(t) and t.get("ruler_score") is not None]
    tasks = sorted({t["benchmark"] for t in scored})
    out = []
    for ctx in sorted({t["ctx"] for t in scored}):
        here = {t["benchmark"]: t for t in scored if t["ctx"] == ctx}
        scores = [float(t["ruler_score"]) for t in here.values()]
        out.append(Length(ctx, sum(scores) / len(scores), len(scores),
                          tuple(b.removeprefix(PREFIX) for b in tasks if b not in here),
                          any(t.get("beyond_window") for t in here.values())))
    return out


def effective_length(measured: Sequence[Length]) -> Effective:
    """RULER's effective length over the measured lengths, shortest first (see the module's docstring)."""
    if not measured:
        return Effective(None, "no RULER score")
    ordered = sorted(measured, key=lambda m: m.ctx)
    best: int | None = None
    stop: Length | None = None
    for m in ordered:
        if not m.passes:
            stop = m
            break
        best = m.ctx
    if stop is None:
        return Effective(best, f"≥ {ctx_label(ordered[-1].ctx)}: not reached within the measured lengths")
    why = (f"{ctx_label(stop.ctx)} lacks {', '.join(stop.missing)}" if stop.missing
           else f"{ctx_label(stop.ctx)} is below")
    later = [m for m in ordered if m.ctx > stop.ctx and m.passes]
    again = (f"; {', '.join(ctx_label(m.ctx) for m in later)} pass{'es' if len(later) == 1 else ''} again, "
             "not counted") if later else ""
    if best is None:
        if not any(m.passes for m in ordered) and not any(m.missing for m in ordered):
            return Effective(None, "below the threshold at every measured length")
        return Effective(None, f"< {ctx_label(ordered[0].ctx)}: {why}{again}")
    return Effective(best, f"{ctx_label(best)} ({why}{again})")


@dataclass
class Grid:
    """A depth × length map: rows are depths (``NO_DEPTH`` for a task without one), columns contexts; a
    cell is the accuracy in % and its number of samples, None where nothing was measured."""

    ctxs: list[int]
    depths: list[int]
    acc: dict[tuple[int, int], float]
    n: dict[tuple[int, int], int]

    def cell(self, depth: int, ctx: int) -> float | None:
        return self.acc.get((depth, ctx))

    def rows(self) -> list[list[float | None]]:
        """The cells as drawn: a row per depth (shallowest first), a column per context, None where unmeasured."""
        return [[self.cell(d, c) for c in self.ctxs] for d in self.depths]


def task_grid(tests: Sequence[Mapping[str, Any]]) -> Grid:
    """One model's one task: ``depth_accuracy`` (share fully right) per depth and context, in %. A task
    without depths (cwe, fwe) gets one row, its accuracy over all samples."""
    acc: dict[tuple[int, int], float] = {}
    n: dict[tuple[int, int], int] = {}
    for t in tests:
        by_depth = t.get("depth_accuracy") or {}
        counts = t.get("depth_n") or {}
        if by_depth:
            for depth, share in by_depth.items():
                if share is not None:
                    acc[int(depth), t["ctx"]] = 100 * float(share)
                    n[int(depth), t["ctx"]] = int(counts.get(depth, 0))
        elif t.get("accuracy") is not None:
            acc[NO_DEPTH, t["ctx"]] = 100 * float(t["accuracy"])
            n[NO_DEPTH, t["ctx"]] = int(t.get("n") or 0)
    return Grid(sorted({c for _, c in acc}), sorted({d for d, _ in acc}), acc, n)


def average_grid(grids: Sequence[Grid]) -> Grid:
    """The tasks' maps averaged cell by cell, each task weighing the same (as the effective length does);
    tasks without depths are left out, since they have no row to add to. ``n`` sums the samples."""
    cells: dict[tuple[int, int], list[float]] = defaultdict(list)
    n: dict[tuple[int, int], int] = defaultdict(int)
    for g in grids:
        for key, value in g.acc.items():
            if key[0] != NO_DEPTH:
                cells[key].append(value)
                n[key] += g.n.get(key, 0)
    acc = {k: sum(v) / len(v) for k, v in cells.items()}
    return Grid(sorted({c for _, c in acc}), sorted({d for d, _ in acc}), acc, dict(n))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def draw(grid: Grid, title: str, beyond: set[int], path: Path) -> Path:
    """The map as a PNG: x context (equal steps, † past the trained window, a dashed line where it starts),
    y needle depth (0, the haystack's start, at the top), colour and text the accuracy %, with n below;
    an unmeasured cell is left blank, never drawn as 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values = np.array([[np.nan if v is None else v for v in row] for row in grid.rows()], dtype=float)
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="white")
    fig, ax = plt.subplots(figsize=(max(6.0, 2.0 + 0.9 * len(grid.ctxs)), max(2.6, 1.3 + 0.42 * len(grid.depths))),
                           dpi=120)
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    for i, depth in enumerate(grid.depths):
        for j, ctx in enumerate(grid.ctxs):
            if not np.isnan(values[i, j]):
                dark = values[i, j] < 25 or values[i, j] > 85  # the colour map's dark ends: white text reads there
                ax.text(j, i, f"{values[i, j]:.0f}\nn={grid.n.get((depth, ctx), 0)}", ha="center", va="center",
                        fontsize=8, linespacing=0.9, color="white" if dark else "black")
    ax.set_xticks(range(len(grid.ctxs)), [ctx_label(c) + (" †" if c in beyond else "") for c in grid.ctxs])
    ax.set_yticks(range(len(grid.depths)), ["all" if d == NO_DEPTH else f"{d}" for d in grid.depths])
    first_beyond = next((j for j, c in enumerate(grid.ctxs) if c in beyond), None)
    if first_beyond:
        ax.axvline(first_beyond - 0.5, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("context length (tokens)" + (" († past the trained window)" if beyond & set(grid.ctxs) else ""))
    ax.set_ylabel("needle depth %\n(0 = haystack start)" if grid.depths != [NO_DEPTH] else "no needle depth")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="accuracy %", fraction=0.05, pad=0.02)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _label(test: Mapping[str, Any], several_runs: bool) -> str:
    return f"{test['model']} ({test['run_id']})" if several_runs else str(test["model"])


def _cell(m: Length | None) -> str:
    if m is None or m.average is None:
        return "–"
    text = f"{m.average:.1f}"
    text = f"**{text}**" if m.passes else text
    return text + (" †" if m.beyond_window else "") + (" ‡" if m.missing else "")


def write(tests: Sequence[Mapping[str, Any]], out: Path, several_runs: bool) -> tuple[str, list[Path]]:
    """The report's RULER section (markdown) and its maps (PNG paths); ``("", [])`` without RULER tests."""
    ruler = [t for t in tests if is_ruler(t)]
    if not ruler:
        return "", []
    models: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for t in ruler:
        models[_label(t, several_runs)].append(t)
    all_ctxs = sorted({t["ctx"] for t in ruler})
    md = ["## RULER: effective length and depth × length maps", "",
          f"Per context the average of `ruler_score` over the tasks run (RULER averages 13; bold: above "
          f"{THRESHOLD}, Llama-2-7B-chat's 4k score). Effective length: the longest context that, with every "
          "shorter measured one, is above it.", "",
          "| model | effective length | tasks |" + "".join(f" {ctx_label(c)} |" for c in all_ctxs),
          "| --- | --- | --- |" + " --- |" * len(all_ctxs)]
    paths: list[Path] = []
    maps: list[str] = []
    incomplete = False
    for label, rows in sorted(models.items()):
        measured = lengths(rows)
        at = {m.ctx: m for m in measured}
        incomplete = incomplete or any(m.missing for m in measured)
        tasks = len({t["benchmark"] for t in rows if t.get("ruler_score") is not None})
        md.append(f"| {label} | {effective_length(measured).text} | {tasks} |"
                  + "".join(f" {_cell(at.get(c))} |" for c in all_ctxs))
        beyond = {t["ctx"] for t in rows if t.get("beyond_window")}
        by_task: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for t in rows:
            by_task[str(t["benchmark"]).removeprefix(PREFIX)].append(t)
        grids = {task: task_grid(v) for task, v in sorted(by_task.items())}
        with_depth = sum(1 for g in grids.values() if any(d != NO_DEPTH for d in g.depths))
        drawn = [(f"average over {with_depth} task{'s' if with_depth != 1 else ''} with a depth",
                  "average", average_grid(list(grids.values()))), *((task, task, g) for task, g in grids.items())]
        maps += [f"### {label}", ""]
        for title, name, grid in drawn:
            if not grid.acc:
                continue
            path = draw(grid, f"RULER {title}: {label}\naccuracy % (share of samples fully right) and samples per cell",
                        beyond, out / f"ruler-depth-{_slug(label)}-{name}.png")
            paths.append(path)
            maps.append(f"![{path.stem}]({path.name})")
        maps.append("")
    md.append("")
    if incomplete:
        md += ["‡ some of the model's tasks are missing at this length: not compared with the threshold.", ""]
    md += maps
    return "\n".join(md).rstrip("\n") + "\n", paths
