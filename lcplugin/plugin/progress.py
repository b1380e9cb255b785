"""Progress of a long test on the terminal: items done of total, tokens/s, time left.

Interactive terminals get one line rewritten in place (at most twice a second) and cleared when the
test ends, so pytest's own output is not garbled. Under ``-q`` and in non-interactive logs (CI)
nothing is rewritten: one plain line every ``every_s`` seconds (default 180) suffices.

Time left is right from the first item when the model's prefill and decode rates on this device are
known from an earlier run (``known_rates``): each item is priced at prompt tokens / prefill rate +
output tokens / decode rate, and as items complete the price is scaled toward what they really
took. Without known rates the line says ``?`` until an item is done, then extrapolates.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..results.runfolder import RunFolder

BLEND_ITEMS = 2.0  # after this many finished items the observed pace weighs as much as the known rates


@dataclass(frozen=True)
class Rates:
    """Measured throughput of one model on one device, and where it was read."""

    prefill_tok_s: float
    decode_tok_s: float | None
    source: str = ""

    def seconds(self, prompt_tokens: int, output_tokens: int) -> float | None:
        """Predicted seconds of one item; None when it decodes and no decode rate is known."""
        if output_tokens and not self.decode_tok_s:
            return None
        return prompt_tokens / self.prefill_tok_s + (output_tokens / self.decode_tok_s if output_tokens else 0.0)


def duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(self, name: str, total: int, write: Callable[[str, bool], None], interactive: bool,
                 every_s: float = 180.0, tokens: Callable[[], int] | None = None, unit: str = "items",
                 plan: Sequence[tuple[int, int]] | None = None, rates: Rates | None = None) -> None:
        """``plan``: (prompt tokens, output tokens) expected per unit, in the order units finish."""
        self.name, self.total, self.write, self.interactive = name, total, write, interactive
        self.unit = unit  # what is counted: items, or generation passes where an item takes two
        priced = [rates.seconds(p, o) for p, o in plan] if rates and plan and len(plan) == total else None
        self.prices: list[float] | None = priced if priced and None not in priced else None  # type: ignore[assignment]
        self.every_s = every_s
        self.tokens = tokens or (lambda: 0)
        self.done = 0
        self.start = time.monotonic()
        self.last = 0.0 if interactive else self.start
        self.shown = False

    def seconds_left(self, elapsed: float) -> float | None:
        """Known rates price the items left; finished items scale that price toward their real pace."""
        if self.prices is None:
            return elapsed / self.done * (self.total - self.done) if self.done else None
        done = min(self.done, self.total)
        left, spent = sum(self.prices[done:]), sum(self.prices[:done])
        if not done or spent <= 0:
            return left
        weight = done / (done + BLEND_ITEMS)
        return left * ((1 - weight) + weight * elapsed / spent)

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.tokens() / elapsed if elapsed > 0 else 0.0
        left = self.seconds_left(elapsed)
        eta = duration(left) if left is not None else "?"
        return f"[lcplugin] {self.name}: {self.done}/{self.total} {self.unit}, {rate:,.0f} tok/s, {eta} left"

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.interactive and now - self.last >= 0.5:
            self.write("\r" + self.line(), False)
            self.last, self.shown = now, True
        elif not self.interactive and now - self.last >= self.every_s:
            self.write(self.line(), True)
            self.last = now

    def close(self) -> None:
        if self.interactive and self.shown:
            self.write("\r" + " " * (len(self.line()) + 4) + "\r", False)


Measured = tuple[int, float, float | None, str]  # (context, prefill tok/s, decode tok/s, source)


def _run_rates(folder: Path, tests: Sequence[dict[str, Any]], model: str, device: str) -> list[Measured]:
    return [(int(t["ctx"]), float(t["prefill_tok_s"]), t.get("decode_tok_s"), folder.name)
            for t in tests if t.get("model") == model and t.get("device") == device
            and t.get("prefill_tok_s") and t.get("ctx")]


def known_rates(results: Path, baselines: Path, model: str, ctx: int, device: str | None) -> Rates | None:
    """The model's prefill and decode rates on ``device`` from the newest earlier run that has them.

    Run folders under ``results`` (newest first; the current run's own finished tests count), else the
    model's baseline entries recorded on this machine. A test at the same context wins; otherwise the
    nearest context of the newest run (rates move with context, so it is a first guess that the
    observed pace then corrects). Nothing measured on another device is used.
    """
    if not device:
        return None
    found: list[Measured] = []
    for folder, summary in RunFolder.summaries_under(results):
        found = _run_rates(folder, summary.tests, model, device)
        if found:
            break
    if not found:
        found = _baseline_rates(baselines / f"{model}.json", device)
    if not found:
        return None
    nearest = min(abs(math.log2(c / ctx)) for c, *_ in found)
    near = [f for f in found if abs(math.log2(f[0] / ctx)) == nearest]
    prefill = sum(f[1] for f in near) / len(near)
    decodes = [float(f[2]) for f in near if f[2]] or [float(f[2]) for f in found if f[2]]
    return Rates(prefill, sum(decodes) / len(decodes) if decodes else None, source=near[0][3])


def rate_points(results: Path, baselines: Path, model: str, device: str) -> dict[int, Rates]:
    """Every context at which ``model`` was measured on ``device``, for the plan's cost law: each context
    from the newest run folder that measured it (its tests there averaged, as ``known_rates`` does), then
    the baseline entries recorded on this machine for contexts no run measured. A fit wants every
    context there is, so unlike ``known_rates`` the runs are not stopped at the newest."""
    by_ctx: dict[int, list[Measured]] = {}
    for folder, summary in RunFolder.summaries_under(results):
        newest: dict[int, list[Measured]] = {}
        for found in _run_rates(folder, summary.tests, model, device):
            if found[0] not in by_ctx:
                newest.setdefault(found[0], []).append(found)
        by_ctx.update(newest)
    recorded: dict[int, list[Measured]] = {}
    for found in _baseline_rates(baselines / f"{model}.json", device):
        recorded.setdefault(found[0], []).append(found)
    by_ctx = recorded | by_ctx
    out = {}
    for ctx, rows in sorted(by_ctx.items()):
        decodes = [float(r[2]) for r in rows if r[2]]
        out[ctx] = Rates(sum(r[1] for r in rows) / len(rows), sum(decodes) / len(decodes) if decodes else None,
                         source=rows[0][3])
    return out


def _baseline_rates(path: Path, device: str) -> list[Measured]:
    from ..config.contexts import parse_ctx

    try:
        entries = json.loads(path.read_text(encoding="utf-8")).get("entries", {})
    except (OSError, ValueError):
        return []
    out = []
    for key, entry in entries.items():
        eff = entry.get("efficiency") or {} if isinstance(entry, dict) else {}
        if entry.get("machine") == device and eff.get("prefill_tok_s"):
            try:
                ctx = parse_ctx(key.rpartition("/")[2])
            except Exception:  # noqa: BLE001 - a foreign key is simply not used
                continue
            out.append((ctx, float(eff["prefill_tok_s"]), eff.get("decode_tok_s"), f"baseline {path.name}"))
    return out


def for_pytest(config: Any, name: str, total: int, tokens: Callable[[], int], unit: str = "items",
               plan: Sequence[tuple[int, int]] | None = None, rates: Rates | None = None) -> Progress:
    """A Progress that writes through pytest's terminal writer with output capture suspended."""
    tr = config.pluginmanager.getplugin("terminalreporter")
    capman = config.pluginmanager.getplugin("capturemanager")
    quiet = config.getoption("verbose") < 0
    every = float(config.getoption("--lc-progress-every"))
    if tr is None:
        return Progress(name, total, lambda text, newline: None, False, every_s=float("inf"), unit=unit,
                        plan=plan, rates=rates)
    tw = tr._tw
    interactive = not quiet and bool(getattr(tw, "isatty", False)) and every > 0

    def write(text: str, newline: bool) -> None:
        with capman.global_and_fixture_disabled() if capman else nullcontext():
            if newline:
                tw.line(text)
            else:
                tw.write(text, flush=True)

    return Progress(name, total, write, interactive, every_s=every if every > 0 else float("inf"), tokens=tokens,
                    unit=unit, plan=plan, rates=rates)
