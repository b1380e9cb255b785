"""How sound are the gates? A simulation over resampled real outcomes.

Per-item chance of being right, q_i, comes from two real runs of one model (the earlier study's
outputs, re-scored with the official extractor): q_i is the mean of the item's two outcomes. An
unchanged model is simulated as two independent draws A_i, B_i ~ Bernoulli(q_i), so run-to-run
noise has the real data's item structure; a regressed model additionally loses a random share of
its correct items. We count how often each gate fires: the false-alarm rate under no change (should
not exceed the level) and the power at each drop, at the data's n (503 for LongBench-v2).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..benchmarks.longbench_v2 import extract_answer
from ..benchmarks.rescore import REPROMPT, last_per_id
from .stats import fisher_less, mcnemar_worse


def outcomes(path: Path) -> dict[str, int]:
    out = {}
    for raw in last_per_id(path):
        pred = extract_answer(str(raw["response"] or "").split(REPROMPT, 1)[0])
        out[str(raw["_id"])] = int(pred == raw["answer"])
    return out


def item_probabilities(run_a: Path, run_b: Path) -> list[float]:
    a, b = outcomes(run_a), outcomes(run_b)
    common = sorted(set(a) & set(b))
    return [(a[i] + b[i]) / 2 for i in common]


def simulate(q: Sequence[float], drop: float, reps: int, alpha: float, seed: int = 0) -> dict[str, float]:
    """Share of ``reps`` simulated pairs on which each gate fires, for an expected accuracy drop ``drop``."""
    rng = random.Random(seed)
    n = len(q)
    fired = {"paired": 0, "unpaired": 0}
    for _ in range(reps):
        a = [int(rng.random() < p) for p in q]
        b = [int(rng.random() < p) for p in q]
        if drop > 0:  # lose each correct item with the probability that removes `drop` of accuracy on average
            share = min(1.0, drop * n / max(1, sum(b)))
            b = [0 if x and rng.random() < share else x for x in b]
        worse = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
        better = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
        fired["paired"] += mcnemar_worse(worse, better) < alpha
        fired["unpaired"] += fisher_less(sum(a), n, sum(b), n) < alpha
    return {k: v / reps for k, v in fired.items()}


def run(run_a: Path, run_b: Path, reps: int = 2000, alpha: float = 0.05) -> dict[str, Any]:
    q = item_probabilities(run_a, run_b)
    result: dict[str, Any] = {"n": len(q), "mean_accuracy": sum(q) / len(q), "alpha": alpha, "reps": reps,
                              "discordant_share": sum(1 for p in q if p == 0.5) / len(q)}
    result["false_alarm"] = simulate(q, 0.0, reps, alpha, seed=1)
    power = {}
    detect: dict[str, float | None] = {"paired": None, "unpaired": None}
    for points in range(1, 16):
        p = simulate(q, points / 100, reps, alpha, seed=100 + points)
        power[points] = p
        for gate in detect:
            if detect[gate] is None and p[gate] >= 0.9:
                detect[gate] = points
    result["power_by_drop_points"] = power
    result["smallest_drop_detected_9_in_10_points"] = detect
    return result
