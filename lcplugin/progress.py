"""Progress of a long test on the terminal: items done of total, tokens/s, time left.

Interactive terminals get one line rewritten in place (at most twice a second) and cleared when the
test ends, so pytest's own output is not garbled. Under ``-q`` and in non-interactive logs (CI)
nothing is rewritten: one plain line every ``every_s`` seconds (default 180) suffices.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(self, name: str, total: int, write: Callable[[str, bool], None], interactive: bool,
                 every_s: float = 180.0, tokens: Callable[[], int] | None = None, unit: str = "items") -> None:
        self.name, self.total, self.write, self.interactive = name, total, write, interactive
        self.unit = unit  # what is counted: items, or generation passes where an item takes two
        self.every_s = every_s
        self.tokens = tokens or (lambda: 0)
        self.done = 0
        self.start = time.monotonic()
        self.last = 0.0 if interactive else self.start
        self.shown = False

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.tokens() / elapsed if elapsed > 0 else 0.0
        left = elapsed / self.done * (self.total - self.done) if self.done else None
        eta = _duration(left) if left is not None else "?"
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


def for_pytest(config: Any, name: str, total: int, tokens: Callable[[], int], unit: str = "items") -> Progress:
    """A Progress that writes through pytest's terminal writer with output capture suspended."""
    tr = config.pluginmanager.getplugin("terminalreporter")
    capman = config.pluginmanager.getplugin("capturemanager")
    quiet = config.getoption("verbose") < 0
    every = float(config.getoption("--lc-progress-every"))
    if tr is None:
        return Progress(name, total, lambda text, newline: None, False, every_s=float("inf"), unit=unit)
    tw = tr._tw
    interactive = not quiet and bool(getattr(tw, "isatty", False)) and every > 0

    def write(text: str, newline: bool) -> None:
        with capman.global_and_fixture_disabled() if capman else nullcontext():
            if newline:
                tw.line(text)
            else:
                tw.write(text, flush=True)

    return Progress(name, total, write, interactive, every_s=every if every > 0 else float("inf"), tokens=tokens,
                    unit=unit)
