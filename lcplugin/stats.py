"""The statistics behind the figures and the gates; pure functions, no dependencies.

Gates ask one question: is the new figure worse than the baseline by more than chance explains for
the two sample sizes? For aggregate counts we use Fisher's exact test, one-sided, which is valid at
any sample size (the tiny models' eight items as well as LongBench-v2's 503), unlike the normal
approximation. With per-item outcomes on the same items, McNemar's exact test on the discordant
pairs is the sharper tool.
"""

from __future__ import annotations

import math


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials (0..1); (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _hypergeom_pmf(x: int, total: int, successes: int, draws: int) -> float:
    return math.exp(_log_comb(successes, x) + _log_comb(total - successes, draws - x) - _log_comb(total, draws))


def fisher_less(k_base: int, n_base: int, k_new: int, n_new: int) -> float:
    """One-sided Fisher exact p-value for "the new proportion is lower than the baseline's".

    Conditioning on the total successes, the new group's count is hypergeometric; the p-value is
    the probability of a count as low as ``k_new`` or lower.
    """
    if not (0 <= k_base <= n_base and 0 <= k_new <= n_new):
        raise ValueError("counts must satisfy 0 <= k <= n")
    total, successes = n_base + n_new, k_base + k_new
    lo = max(0, successes - n_base)
    p = sum(_hypergeom_pmf(x, total, successes, n_new) for x in range(lo, k_new + 1))
    return min(1.0, p)


def fisher_greater(k_base: int, n_base: int, k_new: int, n_new: int) -> float:
    """One-sided Fisher exact p-value for "the new proportion is higher than the baseline's"."""
    return fisher_less(n_base - k_base, n_base, n_new - k_new, n_new)


def mcnemar_worse(b: int, c: int) -> float:
    """Exact McNemar p-value for "worse now": ``b`` items right before and wrong now, ``c`` the reverse.

    Under no change each discordant item is equally likely to go either way: P(X >= b), X ~ Bin(b+c, 1/2).
    """
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, sum(math.exp(_log_comb(n, x) - n * math.log(2)) for x in range(b, n + 1)))
