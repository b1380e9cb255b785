"""Issue 16, item 6: the context where an SSM's or a hybrid's cost per item falls below a Transformer's,
computed from the measured points (interpolated between them in log-log, never extrapolated)."""

from __future__ import annotations

import math

import pytest

from lcplugin.results.crossover import crossovers, markdown


def _t(model: str, family: str, ctx: int, joules: float | None, wall: float = 10.0, bench: str = "ruler_niah_single_1"):
    return {"benchmark": bench, "model": model, "family": family, "ctx": ctx, "n": 2, "items_run": 2,
            "energy_j_per_item": joules, "wall_s": wall}


K = 1024


def test_the_crossover_is_interpolated_between_the_measured_points():
    # Transformer: cost grows as ctx^1.5; SSM: linear, 4x the Transformer at 32k -> equal at 512k
    tests = [_t("llama", "transformer", c, (c / K) ** 1.5) for c in (32 * K, 128 * K, 1024 * K)]
    tests += [_t("mamba", "ssm", c, 4 * (c / K) * math.sqrt(32)) for c in (32 * K, 128 * K, 1024 * K)]
    (row,) = crossovers(tests)
    assert (row.model, row.versus, row.cost) == ("mamba", "llama", "J per item")
    assert row.ratios[0] == pytest.approx(4.0) and row.at == pytest.approx(512 * K, rel=1e-9)
    assert "between 128k and 1m" in row.why and "| ruler_niah_single_1 | mamba (ssm) | llama (transformer) |" in markdown(tests)


def test_below_throughout_never_below_and_seconds_without_energy():
    tests = [_t("llama", "transformer", c, None, wall=c / K) for c in (8 * K, 32 * K)]
    tests += [_t("jamba", "hybrid", c, None, wall=c / K / 2) for c in (8 * K, 32 * K)]
    tests += [_t("zamba", "hybrid", c, None, wall=c / K * 3) for c in (8 * K, 32 * K)]
    rows = {r.model: r for r in crossovers(tests)}
    assert rows["jamba"].cost == "s per item" and rows["jamba"].at == 8 * K and "first measured (8k)" in rows["jamba"].why
    assert rows["zamba"].at is None and rows["zamba"].why == "not below up to 32k"


def test_pairs_need_two_common_contexts_and_a_transformer():
    tests = [_t("llama", "transformer", 8 * K, 1.0), _t("mamba", "ssm", 8 * K, 0.5), _t("mamba", "ssm", 32 * K, 0.5)]
    assert crossovers(tests) == [] and markdown(tests) == ""
    assert crossovers([_t("a", "ssm", c, 1.0) for c in (K, 2 * K)] + [_t("b", "hybrid", c, 2.0) for c in (K, 2 * K)]) == []
