"""The best-of-n estimator against brute-force enumeration of every n-subset of small pools."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_eval.analysis.bon import bon_kl, bon_weights, expected_best_of_n, order_weights


def brute_force(proxy: list[float], gold: list[float], n: int) -> float:
    """Mean over all n-subsets of the gold of the subset's proxy-best sample; ties split evenly."""
    total = 0.0
    subsets = list(itertools.combinations(range(len(proxy)), n))
    for subset in subsets:
        best = max(proxy[i] for i in subset)
        tied = [i for i in subset if proxy[i] == best]
        total += sum(gold[i] for i in tied) / len(tied)
    return total / len(subsets)


@given(
    st.lists(st.integers(-3, 3), min_size=1, max_size=8).flatmap(
        lambda proxy: st.tuples(
            st.just(proxy),
            st.lists(st.floats(-10, 10), min_size=len(proxy), max_size=len(proxy)),
            st.integers(1, len(proxy)),
        )
    )
)
@settings(max_examples=200, deadline=None)
def test_matches_enumeration_with_ties(case: tuple[list[int], list[float], int]) -> None:
    proxy, gold, n = case
    expected = brute_force([float(p) for p in proxy], gold, n)
    assert expected_best_of_n(proxy, gold, n) == pytest.approx(expected, abs=1e-9)


def test_weights_sum_to_one_and_grow_with_rank() -> None:
    for pool, n in [(1, 1), (10, 3), (64, 64), (10_000, 512)]:
        weights = order_weights(pool, n)
        assert weights.sum() == pytest.approx(1.0)
        assert np.all(np.diff(weights) >= -1e-15)
    assert order_weights(5, 2).tolist() == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])  # (i-1)/C(5,2)


def test_best_of_n_proxy_is_monotone_in_n() -> None:
    rng = np.random.default_rng(0)
    proxy = rng.normal(size=64)
    means = [expected_best_of_n(proxy, proxy, n) for n in (1, 2, 4, 8, 16, 32, 64)]
    assert means[0] == pytest.approx(proxy.mean())
    assert means[-1] == pytest.approx(proxy.max())
    assert all(b > a for a, b in zip(means, means[1:], strict=False))


def test_tied_block_shares_its_weight() -> None:
    weights = bon_weights([1.0, 2.0, 2.0], 2)  # subsets {0,1},{0,2},{1,2}: best is 1, 2, and a tie
    assert weights.tolist() == pytest.approx([0.0, 0.5, 0.5])


def test_kl_formula_and_errors() -> None:
    assert bon_kl(1) == 0.0
    assert bon_kl(64) == pytest.approx(math.log(64) - 63 / 64)
    with pytest.raises(ValueError, match="n=0"):
        order_weights(4, 0)
    with pytest.raises(ValueError, match="pool size"):
        order_weights(4, 5)
    with pytest.raises(ValueError, match="finite"):
        bon_weights([1.0, float("nan")], 1)
