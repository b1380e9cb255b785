"""Reports: PNG plots and a markdown table of figures versus context length, across runs.

One plot per benchmark and figure (accuracy with its Wilson 95 % band, null rate, prefill and
decode tokens/s, peak memory, and perplexity for PG-19), one line per model, context on a log2
axis. Figures a run did not measure (memory on CPU) are left out of the plot, never drawn as zero.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config.contexts import ctx_label
from ..errors import LcError
from .runfolder import RunFolder, SummaryUnreadable

FIGURES = [  # (summary key, axis label, log scale)
    ("accuracy", "accuracy", False),
    ("null_rate", "null rate (no parseable answer)", False),
    ("prefill_tok_s", "prefill tokens/s", True),
    ("decode_tok_s", "decode tokens/s", True),
    ("peak_mem_gb", "peak GPU memory, torch allocator (GB)", False),
    ("perplexity", "token perplexity (last 100 tokens)", True),
]


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


def plot(tests: list[dict[str, Any]], benchmark: str, key: str, label: str, log: bool, out: Path,
         several_runs: bool) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        if key == "accuracy" and all(r.get("accuracy_ci95") for r in rows):
            ax.fill_between(xs, [r["accuracy_ci95"][0] for r in rows], [r["accuracy_ci95"][1] for r in rows],
                            color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ticks), [ctx_label(x) for x in sorted(ticks)])
    ax.minorticks_off()
    if log:
        ax.set_yscale("log")
    if key in ("accuracy", "null_rate"):
        ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel(label)
    ax.set_title(f"{benchmark}: {label}" + (" (band: Wilson 95 %)" if key == "accuracy" else ""), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    path = out / f"{benchmark}-{key}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def markdown(tests: list[dict[str, Any]], images: dict[str, list[Path]]) -> str:
    out = ["# lcplugin report", ""]
    for bench in sorted({t["benchmark"] for t in tests}):
        rows = sorted((t for t in tests if t["benchmark"] == bench), key=lambda t: (t["model"], t["ctx"], t["run_id"]))
        budget = any("budget" in t for t in rows)  # LongBench-v2: which max_len cut its prompts
        out += [f"## {bench}", "",
                "| model | run | ctx |" + (" budget |" if budget else "") + " n | accuracy [95 % CI] | null rate | "
                "prefill tok/s | decode tok/s | TTFT s | peak mem GB | perplexity |",
                "| --- | --- | --- |" + (" --- |" if budget else "") + " --- | --- | --- | --- | --- | --- | --- | --- |"]
        for t in rows:
            ci = t.get("accuracy_ci95")
            acc = f"{_fmt(t.get('accuracy'), '.3f')} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else _fmt(t.get("accuracy"), ".3f")
            shown = f" {t.get('budget') or '–'} |" if budget else ""
            out.append(f"| {t['model']} | {t['run_id']} | {ctx_label(t['ctx'])} |{shown} {t['n']} | {acc} | "
                       f"{_fmt(t.get('null_rate'), '.3f')} | {_fmt(t.get('prefill_tok_s'), ',.0f')} | "
                       f"{_fmt(t.get('decode_tok_s'), ',.1f')} | {_fmt(t.get('ttft_s'), '.3f')} | "
                       f"{_fmt(t.get('peak_mem_gb'), '.2f')} | {_fmt(t.get('perplexity'), '.3f')} |")
        out.append("")
        out += [f"![{p.stem}]({p.name})" for p in images.get(bench, [])]
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
        for key, label, log in FIGURES:
            path = plot(tests, bench, key, label, log, out, several)
            if path:
                images[bench].append(path)
    md = out / "report.md"
    md.write_text(markdown(tests, images), encoding="utf-8")
    return [md, *(p for paths in images.values() for p in paths)]
