"""Kendall tau against a brute-force pair count, per-bucket agreement, ensemble disagreement."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_eval.analysis.agreement import ensemble_disagreement, kendall_tau, tau_by_bucket


def brute_tau_b(x: list[float], y: list[float]) -> float:
    c = d = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if sx == 0 and sy == 0:
            tx += 1
            ty += 1
        elif sx == 0:
            tx += 1
        elif sy == 0:
            ty += 1
        elif sx == sy:
            c += 1
        else:
            d += 1
    n0 = len(x) * (len(x) - 1) // 2
    denominator = math.sqrt((n0 - tx) * (n0 - ty))
    return (c - d) / denominator if denominator else math.nan


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=2, max_size=30))
@settings(max_examples=200, deadline=None)
def test_tau_b_matches_brute_force_with_ties(pairs: list[tuple[int, int]]) -> None:
    x = [float(a) for a, _ in pairs]
    y = [float(b) for _, b in pairs]
    expected = brute_tau_b(x, y)
    got = kendall_tau(x, y)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, abs=1e-12)


def test_tau_extremes_and_nan_pairs() -> None:
    assert kendall_tau([1, 2, 3], [4, 5, 6]) == 1.0
    assert kendall_tau([1, 2, 3], [6, 5, 4]) == -1.0
    assert kendall_tau([1, 2, np.nan, 3], [1, 2, 9, 3]) == 1.0
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    assert math.isnan(kendall_tau([1], [1]))


def test_large_input_is_fast_enough_and_exact() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    y = x + rng.normal(size=400)
    assert kendall_tau(x, y) == pytest.approx(brute_tau_b(x.tolist(), y.tolist()), abs=1e-12)


def test_tau_by_bucket_separates_agreeing_and_disagreeing_regions() -> None:
    rng = np.random.default_rng(1)
    kl = np.r_[np.zeros(100), np.full(100, 5.0)]
    proxy = rng.normal(size=200)
    gold = np.r_[proxy[:100], -proxy[100:]]  # agree at low KL, reversed at high KL
    buckets = tau_by_bucket(kl, proxy, gold, buckets=2)
    assert [(lo, hi) for lo, hi, _ in buckets] == [(0.0, 0.0), (5.0, 5.0)]
    assert [t for *_, t in buckets] == pytest.approx([1.0, -1.0])


def test_disagreement_is_the_spread_of_standardized_members() -> None:
    members = np.array([[0.0, 2.0, 4.0], [10.0, 10.0, 30.0]])
    # member 1 standardized with (2, 2): -1, 0, 1; member 2 with (10, 10): 0, 0, 2
    got = ensemble_disagreement(members, [2.0, 10.0], [2.0, 10.0])
    assert got.tolist() == pytest.approx([0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match="positive standard deviation"):
        ensemble_disagreement(members, [0.0, 0.0], [1.0, 0.0])
