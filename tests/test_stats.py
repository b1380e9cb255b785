import math
from itertools import product

import pytest

from lcplugin.results.stats import (
    fisher_greater,
    fisher_less,
    mcnemar_worse,
    paired_t_greater,
    t_sf,
    welch_t_greater,
    wilson,
)


def test_wilson_known_values():
    # Reference values from the closed form (Newcombe 1998, table I: 81/263 -> 0.2553, 0.3662)
    lo, hi = wilson(81, 263)
    assert lo == pytest.approx(0.2553, abs=1e-4) and hi == pytest.approx(0.3662, abs=1e-4)
    assert wilson(0, 8)[0] == 0.0 and wilson(8, 8)[1] == 1.0


def _brute_fisher_less(k1, n1, k2, n2):
    # enumerate every table with the same margins; P(new count <= k2)
    total = n1 + n2
    s = k1 + k2
    num = sum(math.comb(n2, x) * math.comb(n1, s - x) for x in range(0, k2 + 1) if 0 <= s - x <= n1)
    return num / math.comb(total, s)


@pytest.mark.parametrize(("k1", "n1", "k2", "n2"), list(product([0, 3, 8], [8], [0, 2, 5], [8, 10])))
def test_fisher_matches_enumeration(k1, n1, k2, n2):
    assert fisher_less(k1, n1, k2, n2) == pytest.approx(_brute_fisher_less(k1, n1, k2, n2), rel=1e-9)


def test_fisher_direction():
    assert fisher_less(8, 8, 0, 8) < 0.001  # a collapse is significant
    assert fisher_less(0, 8, 8, 8) == pytest.approx(1.0)  # an improvement is not a regression
    assert fisher_greater(0, 8, 8, 8) < 0.001
    assert fisher_less(150, 503, 140, 503) > 0.05  # two points at n=503 is within chance


def test_mcnemar():
    assert mcnemar_worse(0, 0) == 1.0
    assert mcnemar_worse(10, 0) == pytest.approx(2 ** -10)
    assert mcnemar_worse(5, 5) == pytest.approx(sum(math.comb(10, x) for x in range(5, 11)) / 1024)


@pytest.mark.parametrize("t", [-3.0, -0.4, 0.0, 0.7, 1.3, 4.0, 25.0])
def test_t_tail_matches_closed_forms(t):
    assert t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, rel=1e-10, abs=1e-15)  # Cauchy
    assert t_sf(t, 2) == pytest.approx(0.5 - t / (2 * math.sqrt(2 + t * t)), rel=1e-10, abs=1e-15)


def test_t_tail_table_values():
    assert t_sf(2.262157, 9) == pytest.approx(0.025, abs=1e-6)  # the 97.5 % point at 9 df
    assert t_sf(1.697261, 30) == pytest.approx(0.05, abs=1e-6)
    assert t_sf(1.959964, 10**7) == pytest.approx(0.025, abs=1e-6)  # the normal limit


def test_paired_and_welch_t():
    diffs = [0.3, -0.1, 0.4, 0.2, 0.0, 0.5]
    mean = sum(diffs) / 6
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 5)
    assert paired_t_greater(diffs) == pytest.approx(t_sf(mean / (sd / math.sqrt(6)), 5))
    assert paired_t_greater([0.0] * 5) == 1.0 and paired_t_greater([0.1] * 5) == 0.0
    assert paired_t_greater([-d for d in diffs]) == pytest.approx(1 - paired_t_greater(diffs))
    # equal sizes and variances: Welch's statistic and degrees of freedom are the pooled test's
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.0]
    assert welch_t_greater(a, b) == pytest.approx(t_sf(1 / math.sqrt(2 * (5 / 3) / 4), 6))
    assert welch_t_greater(b, a) == pytest.approx(1 - welch_t_greater(a, b))
    with pytest.raises(ValueError):
        paired_t_greater([0.1])
