"""Where an SSM's or a hybrid's cost per item falls below a Transformer's, from the measured points.

The question past 128k (issue 16): a Transformer's KV cache and attention grow with the context, an SSM's
state does not, so at some length the SSM's item gets cheaper. For each benchmark and each pair of an
SSM or hybrid and a Transformer measured at common contexts, the cost ratio r(c) = SSM / Transformer is
read at those contexts: the crossover is the first context from which r stays below 1, placed between
the two measured contexts around it by interpolating log r linearly in log c (the ratio of two power
laws is one). Cost is NVML's joules per item where both models have it at every common context, else
wall seconds per item. Nothing is extrapolated: a ratio below 1 at the first common context says "below
from the first measured", one never below says "not below up to the last measured".
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..config.contexts import ctx_label

CHEAP = ("ssm", "hybrid")


@dataclass(frozen=True)
class Crossover:
    benchmark: str
    model: str  # the SSM or hybrid
    family: str
    versus: str  # the Transformer
    cost: str  # "J per item" or "s per item"
    contexts: tuple[int, ...]  # the common measured contexts
    ratios: tuple[float, ...]  # model / versus at each
    at: float | None  # the crossover context, None where the ratio never stays below 1
    why: str  # how ``at`` was found, in words

    def text(self) -> str:
        points = ", ".join(f"{ctx_label(c)} {r:.2f}" for c, r in zip(self.contexts, self.ratios, strict=True))
        return (f"| {self.benchmark} | {self.model} ({self.family}) | {self.versus} (transformer) | {self.cost} | "
                f"{self.why} | {points} |")


def _per_item(t: Mapping[str, Any], cost: str) -> float | None:
    if cost == "J per item":
        return t.get("energy_j_per_item")
    n = t.get("session_items", t.get("items_run")) or t.get("n")  # the items wall_s was measured over
    return t["wall_s"] / n if t.get("wall_s") and n else None


def _find(contexts: Sequence[int], ratios: Sequence[float]) -> tuple[float | None, str]:
    below = [r < 1 for r in ratios]
    if not any(below) or not below[-1]:
        last = ctx_label(contexts[-1])
        return None, f"not below up to {last}" if not any(below) else f"below at times, not at {last}"
    first = len(below) - next(i for i, b in enumerate(reversed(below)) if not b) if not all(below) else 0
    if first == 0:
        return float(contexts[0]), f"below from the first measured ({ctx_label(contexts[0])})"
    (c0, r0), (c1, r1) = (contexts[first - 1], ratios[first - 1]), (contexts[first], ratios[first])
    x = math.log(c0) + (math.log(c1) - math.log(c0)) * (0 - math.log(r0)) / (math.log(r1) - math.log(r0))
    at = math.exp(x)
    size = f"{at / 1024:,.1f}k" if at < 10 * 1024 else f"{at / 1024:,.0f}k"
    return at, f"about {size} (between {ctx_label(c0)} and {ctx_label(c1)})"


def crossovers(tests: Sequence[Mapping[str, Any]]) -> list[Crossover]:
    """Every (benchmark, SSM or hybrid, Transformer) pair with at least two common measured contexts."""
    by: dict[tuple[str, str], dict[int, Mapping[str, Any]]] = defaultdict(dict)
    family: dict[str, str] = {}
    for t in tests:
        if t.get("family") and t.get("ctx") and not t.get("skipped"):
            by[(t["benchmark"], t["model"])][int(t["ctx"])] = t
            family[t["model"]] = t["family"]
    out = []
    for (bench, model), cells in sorted(by.items()):
        if family[model] not in CHEAP:
            continue
        for (bench2, versus), others in sorted(by.items()):
            if bench2 != bench or family[versus] != "transformer":
                continue
            common = sorted(set(cells) & set(others))
            for cost in ("J per item", "s per item"):
                pairs = [(_per_item(cells[c], cost), _per_item(others[c], cost)) for c in common]
                if len(common) >= 2 and all(a and b for a, b in pairs):
                    ratios = tuple(a / b for a, b in pairs)  # type: ignore[operator]
                    at, why = _find(common, ratios)
                    out.append(Crossover(bench, model, family[model], versus, cost, tuple(common), ratios, at, why))
                    break
    return out


def markdown(tests: Sequence[Mapping[str, Any]]) -> str:
    """The report's section, empty where no pair was measured at two common contexts."""
    rows = crossovers(tests)
    if not rows:
        return ""
    return "\n".join([
        "## Where SSMs and hybrids get cheaper per item than Transformers", "",
        "Cost ratio (SSM or hybrid / Transformer) at each common measured context, and the context from which it "
        "stays below 1, interpolated in log-log between the measured points around it (never extrapolated).", "",
        "| benchmark | SSM or hybrid | Transformer | cost | below 1 | ratio by context |",
        "| --- | --- | --- | --- | --- | --- |",
        *(r.text() for r in rows), ""])
