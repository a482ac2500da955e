"""Quantiles the gate needs without scipy: Student's t, for the paired rule's margins (gate.decide_paired).

Exact to about 1e-12 (the incomplete beta function by its continued fraction, then bisection), so the
false-keep budget a margin spends is the one it says; `tests/test_gate.py` checks it against tabled values.
"""
from __future__ import annotations

import functools
import math


@functools.lru_cache(maxsize=256)  # the gate asks for the same few margins again and again
def t_quantile(p: float, dof: int) -> float:
    """The p-quantile (p >= 0.5) of Student's t with `dof` degrees of freedom, by bisection on its tail."""
    if dof < 1 or not 0.5 <= p < 1.0:
        raise ValueError(f"t quantile needs dof >= 1 and 0.5 <= p < 1, got dof={dof}, p={p}")
    low, high = 0.0, 1.0
    while _t_tail(high, dof) > 1.0 - p:
        high *= 2.0
    for _ in range(100):
        middle = (low + high) / 2.0
        low, high = (middle, high) if _t_tail(middle, dof) > 1.0 - p else (low, middle)
    return (low + high) / 2.0


def _t_tail(t: float, dof: int) -> float:
    """P(T > t) for t >= 0: half the regularised incomplete beta I_x(dof / 2, 1 / 2) at x = dof / (dof + t^2)."""
    a, b, x = dof / 2.0, 0.5, dof / (dof + t * t)
    if x >= 1.0:
        return 0.5
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return 0.5 * front * _beta_fraction(a, b, x) / a
    return 0.5 * (1.0 - front * _beta_fraction(b, a, 1.0 - x) / b)


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (Lentz's method, as in Numerical Recipes)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result
