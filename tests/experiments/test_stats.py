"""The paired significance test against scipy and against a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from coseg.experiments import paired_test


def test_matches_scipy_on_a_known_case():
    a = np.array([0.62, 0.58, 0.71, 0.66, 0.69, 0.55, 0.60, 0.73])
    b = np.array([0.60, 0.55, 0.70, 0.61, 0.66, 0.56, 0.57, 0.70])
    res = paired_test(a, b)
    t = stats.ttest_rel(a, b)
    w = stats.wilcoxon(a, b)
    assert res.n == 8
    assert res.t_statistic == pytest.approx(t.statistic)
    assert res.t_pvalue == pytest.approx(t.pvalue)
    assert res.wilcoxon_statistic == pytest.approx(w.statistic)
    assert res.wilcoxon_pvalue == pytest.approx(w.pvalue)
    assert res.mean_difference == pytest.approx(np.mean(a - b))


def test_t_statistic_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, t = 2 / (1 / sqrt 3); with 2 degrees of freedom the two-sided
    # p-value has the closed form 1 - |t| / sqrt(t^2 + 2)
    res = paired_test([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    t = 2.0 * math.sqrt(3.0)
    assert res.t_statistic == pytest.approx(t)
    assert res.t_pvalue == pytest.approx(1.0 - t / math.sqrt(t * t + 2.0))
    assert res.t_pvalue == pytest.approx(0.0741799, abs=1e-6)
    # Wilcoxon, exact: 3 positive ranks (W = min(R+, R-) = 0) out of 2^3 sign patterns, two-sided: 2/8
    assert res.wilcoxon_statistic == 0.0
    assert res.wilcoxon_pvalue == pytest.approx(0.25)


def test_nan_pairs_are_dropped():
    res = paired_test([1.0, np.nan, 3.0, 5.0], [0.5, 2.0, np.nan, 4.0])
    ref = paired_test([1.0, 5.0], [0.5, 4.0])
    assert res == ref and res.n == 2


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], (3, 0.0, 1.0, 1.0)),  # identical: indistinguishable
        ([2.0, 3.0, 4.0], [1.0, 2.0, 3.0], (3, math.inf, 0.0, None)),  # constant difference: zero variance
        ([1.0], [0.0], (1, math.nan, math.nan, math.nan)),  # one pair: undefined
        ([], [], (0, math.nan, math.nan, math.nan)),
    ],
)
def test_degenerate_cases(a, b, expected):
    n, t, p, pw = expected
    res = paired_test(a, b)
    assert res.n == n
    for got, want in ((res.t_statistic, t), (res.t_pvalue, p), (res.wilcoxon_pvalue, pw)):
        if want is None:
            continue
        assert (math.isnan(got) and math.isnan(want)) or got == want


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="same length"):
        paired_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="1-D"):
        paired_test([[1.0, 2.0]], [[1.0, 2.0]])
