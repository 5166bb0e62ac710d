"""Paired significance tests between two rows of a table (the paper's P-values)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["PairedTest", "paired_test"]


@dataclass(frozen=True)
class PairedTest:
    """Result of :func:`paired_test`.

    Attributes:
        n: number of complete pairs used.
        mean_a, mean_b: means of the two samples over those pairs.
        mean_difference: mean of ``a - b``.
        t_statistic, t_pvalue: paired two-sided Student t-test (``scipy.stats.ttest_rel``).
        wilcoxon_statistic, wilcoxon_pvalue: two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, zero
            differences dropped as Wilcoxon proposed); NaN with fewer than 2 pairs.
    """

    n: int
    mean_a: float
    mean_b: float
    mean_difference: float
    t_statistic: float
    t_pvalue: float
    wilcoxon_statistic: float
    wilcoxon_pvalue: float


def paired_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> PairedTest:
    """Compare two paired samples (the same images, or the same seeds, under two configurations).

    Pairs where either value is NaN are dropped. Degenerate cases, where scipy returns NaN or warns, are decided
    here: with fewer than 2 pairs every statistic is NaN; when every difference is 0 the samples are
    indistinguishable (statistics 0, p-values 1); when the differences are all equal but not 0 the t statistic is
    ±inf and its p-value 0 (zero variance), the Wilcoxon test is computed as usual.

    Args:
        a: ``(n,)`` values of the first configuration.
        b: ``(n,)`` values of the second configuration, in the same order.

    Returns:
        A :class:`PairedTest`.

    Raises:
        ValueError: ``a`` and ``b`` are not 1-D of the same length.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"paired samples must be 1-D of the same length, got shapes {x.shape} and {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = int(x.size)
    nan = math.nan
    if n == 0:
        return PairedTest(0, nan, nan, nan, nan, nan, nan, nan)
    d = x - y
    means = (float(x.mean()), float(y.mean()), float(d.mean()))
    if n < 2:
        return PairedTest(n, *means, nan, nan, nan, nan)
    if np.all(d == 0):
        return PairedTest(n, *means, 0.0, 1.0, 0.0, 1.0)
    if np.all(d == d[0]):
        t, p_t = math.copysign(math.inf, float(d[0])), 0.0
    else:
        res = stats.ttest_rel(x, y)
        t, p_t = float(res.statistic), float(res.pvalue)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns that small samples use the exact distribution
        w = stats.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
    return PairedTest(n, *means, t, p_t, float(w.statistic), float(w.pvalue))
