"""The best-of-n estimator against brute-force enumeration of every n-subset of small pools."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
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


# -- KL of best-of-n on a finite pool ---------------------------------------------------------


def brute_force_plugin_kl(proxy: list[float], n: int) -> float:
    """Enumerate all N^n ordered draws with replacement from the pool; the best (ties: split evenly
    among the tied drawn samples' identities, i.e. by sample) gets the draw's mass; then KL to 1/N."""
    size = len(proxy)
    mass = np.zeros(size)
    for draw in itertools.product(range(size), repeat=n):
        best = max(proxy[i] for i in draw)
        tied = sorted({i for i in draw if proxy[i] == best})
        for i in tied:
            mass[i] += 1.0 / len(tied) / size**n
    # tied samples are interchangeable for the selector: spread each tie block's mass evenly
    for value in set(proxy):
        block = [i for i in range(size) if proxy[i] == value]
        mass[block] = mass[block].sum() / len(block)
    keep = mass > 0
    return float(np.sum(mass[keep] * np.log(mass[keep] * size)))


@given(st.lists(st.integers(0, 3), min_size=1, max_size=5), st.integers(1, 3))
@settings(max_examples=60, deadline=None)
def test_pool_kl_matches_enumeration_of_draws(proxy: list[int], n: int) -> None:
    from rlhf_eval.analysis.bon import pool_kl

    assume(n <= len(proxy))
    scores = [float(p) for p in proxy]
    assert pool_kl(scores, n) == pytest.approx(brute_force_plugin_kl(scores, n), abs=1e-9)


def test_plugin_kl_of_distinct_samples_tends_to_the_analytic_bound() -> None:
    from rlhf_eval.analysis.bon import bon_kl_plugin, pool_kl

    for n in (2, 4, 16):
        assert bon_kl_plugin(n, 100_000) == pytest.approx(bon_kl(n), abs=1e-3)
        assert bon_kl_plugin(n, 64) <= bon_kl(n) + 1e-12
    rng = np.random.default_rng(0)
    assert pool_kl(rng.normal(size=64), 8) == pytest.approx(bon_kl_plugin(8, 64))
    assert bon_kl_plugin(64, 64) <= math.log(64)


def test_duplicates_lower_the_plugin_kl_and_keys_merge_float_noise() -> None:
    from rlhf_eval.analysis.bon import duplicate_fraction, kl_estimates_differ, pool_kl

    distinct = [0.1, 0.2, 0.3, 0.4]
    duplicated = [0.1, 0.4, 0.4, 0.4]  # three copies of the best response
    assert pool_kl(duplicated, 4) < pool_kl(distinct, 4)
    noisy = [0.1, 0.4, 0.4 + 1e-9, 0.4 - 1e-9]  # the same response scored in different batches
    assert pool_kl(noisy, 4, keys=["a", "b", "b", "b"]) == pytest.approx(pool_kl(duplicated, 4))
    assert duplicate_fraction(["a", "b", "b", "b"]) == 0.5
    assert kl_estimates_differ(bon_kl(4), pool_kl(duplicated, 4))


def test_table_of_expectations_matches_the_single_estimator() -> None:
    from rlhf_eval.analysis.bon import best_of_n_table

    rng = np.random.default_rng(3)
    proxy, gold, length = rng.normal(size=12), rng.normal(size=12), rng.integers(1, 9, size=12).astype(float)
    table = best_of_n_table(proxy, {"gold": gold, "length": length}, [1, 3, 12])
    for i, n in enumerate([1, 3, 12]):
        assert table["gold"][i] == pytest.approx(expected_best_of_n(proxy, gold, n))
        assert table["length"][i] == pytest.approx(brute_force(proxy.tolist(), length.tolist(), n))
    gold[int(np.argmin(proxy))] = np.nan  # only n = 1 reaches the proxy's worst sample
    table = best_of_n_table(proxy, {"gold": gold}, [1, 2])
    assert np.isnan(table["gold"][0]) and np.isfinite(table["gold"][1])


# -- many pools at once ------------------------------------------------------------------------


@st.composite
def pools(draw: st.DrawFn, *, distinct: bool) -> tuple[list[list[float]], list[list[float]], list[int]]:
    """P pools of one size N <= 7: distinct proxies, or integers in -2..2 (ties likely); gold
    sometimes NaN; a sorted set of n values."""
    prompts = draw(st.integers(1, 4))
    size = draw(st.integers(1, 7))
    if distinct:
        proxy = [draw(st.permutations(range(size))) for _ in range(prompts)]
    else:
        proxy = [draw(st.lists(st.integers(-2, 2), min_size=size, max_size=size)) for _ in range(prompts)]
    gold_value = st.floats(-10, 10) | st.just(math.nan)
    gold = [draw(st.lists(gold_value, min_size=size, max_size=size)) for _ in range(prompts)]
    ns = sorted(draw(st.sets(st.integers(1, size), min_size=1)))
    return [[float(p) for p in row] for row in proxy], gold, ns


def check_against_enumeration(case: tuple[list[list[float]], list[list[float]], list[int]]) -> None:
    """Every prompt's row equals the enumeration; NaN exactly where some subset's pick has NaN gold."""
    from rlhf_eval.analysis.bon import best_of_n_matrix

    proxy, gold, ns = case
    matrix = best_of_n_matrix(proxy, gold, ns)
    assert matrix.shape == (len(proxy), len(ns))
    for p in range(len(proxy)):
        expected = [brute_force(proxy[p], gold[p], n) for n in ns]
        assert matrix[p].tolist() == pytest.approx(expected, abs=1e-9, nan_ok=True)


@given(pools(distinct=False))
@settings(max_examples=150, deadline=None)
def test_matrix_matches_enumeration_with_ties(case: tuple[list[list[float]], list[list[float]], list[int]]) -> None:
    check_against_enumeration(case)


@given(pools(distinct=True))
@settings(max_examples=100, deadline=None)
def test_matrix_matches_enumeration_without_ties(case: tuple[list[list[float]], list[list[float]], list[int]]) -> None:
    check_against_enumeration(case)


def test_matrix_matches_the_per_prompt_table_with_ties_and_nans() -> None:
    from rlhf_eval.analysis.bon import best_of_n_matrix, best_of_n_table

    rng = np.random.default_rng(7)
    prompts, size, ns = 40, 300, [1, 2, 5, 16, 64, 299, 300]
    proxy = rng.normal(size=(prompts, size))
    proxy[::2] = rng.integers(0, 12, size=(prompts // 2, size))  # half the pools: blocks of tied scores
    gold = rng.normal(size=(prompts, size))
    length = rng.integers(1, 50, size=(prompts, size)).astype(float)
    gold[3, 17] = np.nan  # one untied, one tied pool with a missing gold
    gold[4, int(np.argmin(proxy[4]))] = np.nan  # the proxy's worst, in a tied block of its lowest score
    gold[5, int(np.argmax(proxy[5]))] = np.inf
    matrix = best_of_n_matrix(proxy, np.stack([gold, length]), ns)
    assert matrix.shape == (2, prompts, len(ns))
    for p in range(prompts):
        table = best_of_n_table(proxy[p], {"gold": gold[p], "length": length[p]}, ns)
        np.testing.assert_allclose(matrix[0, p], table["gold"], rtol=1e-12, atol=1e-12)  # NaN where NaN
        np.testing.assert_allclose(matrix[1, p], table["length"], rtol=1e-12, atol=1e-12)
    assert np.isnan(matrix[0, 5]).all()  # the argmax is reached by every n
    assert np.isnan(matrix[0, 3, 0]) and np.isfinite(matrix[0, 3, -1])  # n = N picks the proxy's best only
    assert np.isfinite(matrix[1]).all()


def test_matrix_of_a_large_pool_sums_weights_to_one() -> None:
    from rlhf_eval.analysis.bon import best_of_n_matrix

    rng = np.random.default_rng(0)
    proxy = rng.normal(size=(3, 10_000)).astype(np.float32).astype(np.float64)  # float32 scores: a few ties
    ns = [2**k for k in range(14)]
    ones = best_of_n_matrix(proxy, np.ones_like(proxy), ns)  # E_n[1] = Σ w = 1
    assert ones == pytest.approx(np.ones((3, len(ns))), abs=1e-9)
    proxy_means = best_of_n_matrix(proxy, proxy, ns)
    assert proxy_means[:, 0] == pytest.approx(proxy.mean(axis=1))
    assert np.all(np.diff(proxy_means, axis=1) > 0)  # best-of-n proxy grows with n


def test_matrix_rejects_what_it_cannot_compute() -> None:
    from rlhf_eval.analysis.bon import best_of_n_matrix

    with pytest.raises(ValueError, match="finite"):
        best_of_n_matrix([[1.0, float("nan")]], [[1.0, 2.0]], [1])
    with pytest.raises(ValueError, match="shape"):
        best_of_n_matrix([[1.0, 2.0]], [[1.0, 2.0, 3.0]], [1])
    with pytest.raises(ValueError, match="pool size"):
        best_of_n_matrix([[1.0, 2.0]], [[1.0, 2.0]], [3])
    assert best_of_n_matrix(np.empty((0, 4)), np.empty((0, 4)), [1, 4]).shape == (0, 2)


# -- invariants over any pool --------------------------------------------------------------------

# Pools of finite scores, ties likely (small integers) or not (floats).
POOLS = st.lists(st.integers(-3, 3).map(float) | st.floats(-1e6, 1e6), min_size=1, max_size=40)


@given(POOLS, st.data())
@settings(max_examples=200, deadline=None)
def test_weights_are_a_distribution_for_any_pool(proxy: list[float], data: st.DataObject) -> None:
    n = data.draw(st.integers(1, len(proxy)))
    weights = bon_weights(proxy, n)
    assert weights.shape == (len(proxy),) and np.all(weights >= 0)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert order_weights(len(proxy), n).sum() == pytest.approx(1.0, abs=1e-12)


@given(st.integers(1, 5000), st.data())
@settings(max_examples=100, deadline=None)
def test_order_weights_sum_to_one_for_large_pools(pool: int, data: st.DataObject) -> None:
    weights = order_weights(pool, data.draw(st.integers(1, pool)))
    assert np.all(weights >= 0) and weights.sum() == pytest.approx(1.0, abs=1e-9)


@given(POOLS)
@settings(max_examples=200, deadline=None)
def test_best_of_n_proxy_never_falls_as_n_grows(proxy: list[float]) -> None:
    # E_1 is the pool mean, E_N its maximum, and a larger subset's best is never worse.
    means = [expected_best_of_n(proxy, proxy, n) for n in range(1, len(proxy) + 1)]
    scale = 1e-12 * max(1.0, max(abs(p) for p in proxy))
    assert means[0] == pytest.approx(float(np.mean(proxy)), abs=scale * len(proxy))
    assert means[-1] == pytest.approx(max(proxy), abs=scale * len(proxy))
    assert all(b >= a - scale * len(proxy) for a, b in zip(means, means[1:], strict=False))
