"""Every figure a test reports, declared once; each output iterates this table.

A figure is a key of a test's summary (``summary.json``). Where it goes follows from its row: the
terminal table and report.md (a column each, with its header and format), the plots versus context
length, JUnit properties ``lc_<key>`` and pytest-benchmark's ``extra_info``, the efficiency gate
(``--lc-efficiency-tolerance``, its help and its error) and the wandb summary table. Adding a figure
is its producer (e.g. ``summary.efficiency``) plus one row here.

The outputs read ``FIGURES`` when they run, never a copy taken at import, so the table is the
single place every output agrees on. Order matters: it is the column order of every table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Better = Literal["higher", "lower"]
Axis = Literal["linear", "log"]
Output = Literal["terminal", "markdown", "plot", "gated", "recorded", "tracked"]  # Figure's fields of that name

FRACTION = "fraction"  # a share between 0 and 1: plotted on a fixed 0..1 axis, so runs compare by eye


@dataclass(frozen=True)
class Column:
    """How one table shows a figure: its header, its format spec, and (terminal only) its width.

    Each table has its own format because they print some figures differently (prefill tokens/s:
    ``12346`` in the terminal, ``12,346`` in report.md); the terminal right-aligns cells in fixed
    widths, markdown needs none."""

    header: str
    fmt: str = ""
    width: int = 0


@dataclass(frozen=True)
class Figure:
    """One reported figure and every output it reaches.

    ``gated``: may carry an efficiency tolerance in a baseline (needs ``better``: the gate fails a
    move in the worse direction). ``plot``: drawn versus context on a linear or log y axis, None: not
    plotted. ``interval``: the summary key of its Wilson 95 % interval (a band in its plot, inline in
    its markdown cell). ``recorded``: a JUnit property ``lc_<key>`` and benchmark ``extra_info``.
    ``tracked``: a column of the wandb summary table. ``session``: measured over the session that ran the
    test's items (telemetry, wall time), not read from its per-item records; a resumed test takes it from the
    session that ran them or reports none (``summary.carry_resumed``)."""

    key: str
    label: str
    unit: str
    better: Better | None = None
    gated: bool = False
    plot: Axis | None = None
    terminal: Column | None = None
    markdown: Column | None = None
    interval: str | None = None
    recorded: bool = False
    tracked: bool = False
    session: bool = False

    def __post_init__(self) -> None:
        if not self.key.isidentifier():
            raise ValueError(f"figures.py: figure key {self.key!r} is not an identifier; it names options "
                             "(KEY=PCT), properties (lc_KEY) and plot files, so use letters, digits and _")
        if self.gated and self.better not in ("higher", "lower"):
            raise ValueError(f"figures.py: figure {self.key!r} is gated but its 'better' is {self.better!r}; "
                             "set better='higher' or 'lower' so the gate knows which way is a regression")
        if self.plot not in (None, "linear", "log"):
            raise ValueError(f"figures.py: figure {self.key!r} has plot={self.plot!r}; use 'linear', 'log' "
                             "or None")

    @property
    def worse(self) -> str:
        """The verb for a move in the worse direction, as gate messages say it."""
        return "fell" if self.better == "higher" else "grew"

    def beyond(self, old: float, new: float, pct: float) -> bool:
        """Whether ``new`` is worse than ``old`` by more than ``pct`` percent."""
        if self.better == "higher":
            return new < old * (1 - pct / 100)
        return new > old * (1 + pct / 100)

    def terminal_heading(self) -> str:
        column = self.terminal or Column(self.key)
        return f"{column.header:>{column.width}}"

    def terminal_cell(self, summary: Mapping[str, Any]) -> str:
        column = self.terminal or Column(self.key)
        return f"{show(summary.get(self.key), column.fmt, '-'):>{column.width}}"

    def markdown_heading(self) -> str:
        return (self.markdown or Column(self.key)).header

    def markdown_cell(self, summary: Mapping[str, Any]) -> str:
        column = self.markdown or Column(self.key)
        cell = show(summary.get(self.key), column.fmt, "–")
        band = summary.get(self.interval) if self.interval else None
        return f"{cell} {show(band, column.fmt, '–', ', ')}" if band else cell


def show(value: Any, fmt: str, missing: str, sep: str = ",") -> str:
    """A value in its format; an interval (a pair) as ``[lo,hi]``; unmeasured (None) as ``missing``."""
    if value is None:
        return missing
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + sep.join(show(v, fmt, missing) for v in value) + "]" if value else missing
    return format(value, fmt)


FIGURES: tuple[Figure, ...] = (
    Figure("n", "items scored", "items", terminal=Column("n", "", 4), markdown=Column("n"), recorded=True,
           tracked=True),
    Figure("accuracy", "accuracy", FRACTION, "higher", plot="linear", interval="accuracy_ci95",
           terminal=Column("acc", ".3f", 6), markdown=Column("accuracy [95 % CI]", ".3f"), recorded=True,
           tracked=True),
    Figure("accuracy_ci95", "accuracy, Wilson 95 % interval", FRACTION, terminal=Column("ci95", ".2f", 13)),
    Figure("null_rate", "null rate (no parseable answer)", FRACTION, "lower", plot="linear",
           terminal=Column("null", ".3f", 6), markdown=Column("null rate", ".3f"), recorded=True, tracked=True),
    Figure("prefill_tok_s", "prefill tokens/s", "tokens/s", "higher", gated=True, plot="log",
           terminal=Column("prefill/s", ".0f", 10), markdown=Column("prefill tok/s", ",.0f"), recorded=True,
           tracked=True),
    Figure("decode_tok_s", "decode tokens/s", "tokens/s", "higher", gated=True, plot="log",
           terminal=Column("decode/s", ".1f", 9), markdown=Column("decode tok/s", ",.1f"), recorded=True,
           tracked=True),
    Figure("ttft_s", "time to first token, median over batches (s)", "s", "lower",
           terminal=Column("ttft_s", ".3f", 7), markdown=Column("TTFT s", ".3f"), recorded=True, tracked=True),
    Figure("latency_p50_s", "latency per item, median (s)", "s", "lower", recorded=True),
    Figure("latency_p95_s", "latency per item, 95th percentile (s)", "s", "lower", recorded=True),
    Figure("peak_mem_gb", "peak GPU memory, torch allocator (GB)", "GB", "lower", gated=True, plot="linear",
           terminal=Column("mem_gb", ".2f", 7), markdown=Column("peak mem GB", ".2f"), recorded=True,
           tracked=True, session=True),
    # the memory preflight's estimate, made before the model loaded (engines/memory.py), beside the measured peak
    Figure("mem_estimate_gb", "estimated peak memory, before loading: weights + KV + states + activations (GB)",
           "GB", recorded=True, tracked=True),
    Figure("mem_estimate_error", "memory estimate / measured peak - 1 (vLLM: its own count)", "", recorded=True),
    # vLLM pre-allocates its pool (peak_mem_gb holds it): what the test's sequences needed (engines/vllm.py)
    Figure("mem_used_gb", "GPU memory the test needed: weights + KV blocks held (GB)", "GB", "lower", plot="linear",
           recorded=True, session=True),
    Figure("kv_used_gb", "KV cache the longest sequence held (GB)", "GB", "lower", recorded=True, session=True),
    Figure("nvml_device_gb", "GPU memory in use on the device, NVML (GB)", "GB", "lower", recorded=True,
           session=True),
    Figure("nvml_process_gb", "GPU memory of the engine's processes, NVML (GB)", "GB", "lower", recorded=True,
           session=True),
    Figure("energy_j_per_item", "GPU energy per item, NVML (J)", "J", "lower", recorded=True, session=True),
    Figure("peak_rss_gb", "peak resident memory of the engine worker (GB)", "GB", "lower", recorded=True,
           session=True),
    Figure("truncated", "items cut in the middle to fit the context", "items", recorded=True),
    Figure("perplexity", "token perplexity (last 100 tokens)", "", "lower", plot="log",
           terminal=Column("ppl", ".2f", 8), markdown=Column("perplexity", ".3f"), recorded=True, tracked=True),
    Figure("bits_per_byte", "bits per byte (PG-19)", "bits/byte", "lower", recorded=True),
    Figure("wall_s", "the test's wall time, less compile and warm-up (s)", "s", "lower", terminal=Column("test_s", ".1f", 7),
           recorded=True, session=True),
    Figure("items_per_hour", "items finished per hour of wall time", "items/h", "higher", recorded=True,
           session=True),
    Figure("warmup_s", "compile and warm-up of new shapes, left out of wall time and energy (s)", "s", "lower",
           recorded=True, session=True),
    Figure("engine_load_s", "engine load paid by this test (s)", "s", "lower",
           terminal=Column("load_s", ".1f", 7)),
)


def get(key: str) -> Figure | None:
    return next((f for f in FIGURES if f.key == key), None)


def reaching(output: Output) -> tuple[Figure, ...]:
    """The figures an output shows, in table order; read from ``FIGURES`` at each call, so a row added
    at run time reaches every output."""
    return tuple(f for f in FIGURES if getattr(f, output))
