"""The statistics behind the figures and the gates; pure functions, no dependencies.

Gates ask one question: is the new figure worse than the baseline by more than chance explains for
the two sample sizes? For aggregate counts we use Fisher's exact test, one-sided, which is valid at
any sample size (the tiny models' eight items as well as LongBench-v2's 503), unlike the normal
approximation. With per-item outcomes on the same items, McNemar's exact test on the discordant
pairs is the sharper tool. PG-19's bits per byte is a mean over windows: a one-sided paired t-test on
the per-window differences (Welch's unpaired test when no window is in both runs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


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


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        for num in (m * (b - m) * x / ((qam + 2 * m) * (a + 2 * m)),
                    -(a + m) * (qab + m) * x / ((a + 2 * m) * (qap + 2 * m))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T >= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def _mean_var(xs: Sequence[float]) -> tuple[float, float]:
    mean = math.fsum(xs) / len(xs)
    return mean, math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)


def paired_t_greater(diffs: Sequence[float]) -> float:
    """One-sided paired t-test p-value for "the mean difference is above 0" (needs 2 or more).

    All differences equal: no spread to test against; p = 0 if they are positive, else 1."""
    if len(diffs) < 2:
        raise ValueError("a paired t-test needs at least two differences")
    mean, var = _mean_var(diffs)
    if var == 0.0:
        return 0.0 if mean > 0 else 1.0
    return t_sf(mean / math.sqrt(var / len(diffs)), len(diffs) - 1)


def welch_t_greater(base: Sequence[float], new: Sequence[float]) -> float:
    """One-sided Welch t-test p-value for "the new mean is above the baseline's" (2 or more each)."""
    if len(base) < 2 or len(new) < 2:
        raise ValueError("Welch's t-test needs at least two values on each side")
    (m1, v1), (m2, v2) = _mean_var(base), _mean_var(new)
    s1, s2 = v1 / len(base), v2 / len(new)
    if s1 + s2 == 0.0:
        return 0.0 if m2 > m1 else 1.0
    df = (s1 + s2) ** 2 / (s1 * s1 / (len(base) - 1) + s2 * s2 / (len(new) - 1))
    return t_sf((m2 - m1) / math.sqrt(s1 + s2), df)
