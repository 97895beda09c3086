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
