"""Best-of-n from one pool of N samples per prompt: exact expectations, no resampling.

Best-of-n draws n samples, keeps the one the proxy scores highest and reports its gold reward.
From a pool of N ≥ n samples with proxy scores s and gold rewards g, the expectation over all
C(N, n) subsets has a closed form (Gao et al. 2022, appendix; Nakano et al. 2021). Sort the pool
by proxy ascending, s_(1) ≤ … ≤ s_(N); the subset's best is the i-th when it holds the i-th and
n − 1 of the i − 1 below it:

    E_n[g] = Σ_{i=n}^{N} w_i · g_(i),    w_i = C(i − 1, n − 1) / C(N, n).

The weights are computed in log space from cumulative sums of log k (N in the thousands overflows binomials).
Ties in proxy score: a subset whose best proxy value is shared picks among the tied samples at
random, so every sample of a tied block gets the block's average weight; the weights still sum
to 1. Cost O(N log N) per prompt for the sort, O(N) per n. The weights depend only on (N, n), so
``best_of_n_matrix`` does every pool of one size at once: one argsort along the pools and one
product with the (N × len(ns)) weight matrix (bench/bon_estimator.py times it).

KL of best-of-n from the base policy: log n − (n − 1)/n is an upper bound, exact only when no
two samples coincide (Stiennon et al. 2020; Beirami et al. 2024). On a finite pool the plug-in
estimate treats the pool as the base distribution: each sample has base mass 1/N and best-of-n
mass q_i = (i/N)^n − ((i − 1)/N)^n (sorted by proxy), so KL = Σ_i q_i log(N q_i). When the pool
holds identical responses, their masses add up on both sides (the base gives a response its
count over N; best-of-n the sum of its samples' q), which lowers the plug-in KL: a pool with
many duplicates has less room to move than log n − (n − 1)/n says, and ``pool_kl`` reports it.

>>> [round(float(w), 4) for w in bon_weights([0.1, 0.5, 0.3], 2)]
[0.0, 0.6667, 0.3333]
>>> round(bon_kl(4), 4)
0.6363
>>> round(bon_kl_plugin(4, 4), 4)  # 4 distinct samples, n = N: q = (1, 15, 65, 175) / 256
0.5903
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray


def order_weights(pool_size: int, n: int) -> NDArray[np.float64]:
    """w_i = C(i − 1, n − 1) / C(N, n) for i = 1..N (sorted ascending by proxy): the probability
    that the i-th smallest of N is the largest of a uniformly random n-subset.

    >>> order_weights(4, 1).round(12).tolist()
    [0.25, 0.25, 0.25, 0.25]
    >>> order_weights(4, 4).tolist()
    [0.0, 0.0, 0.0, 1.0]
    """
    if not 1 <= n <= pool_size:
        raise ValueError(f"n={n}: best-of-n needs 1 <= n <= pool size ({pool_size})")
    log_factorial = np.r_[0.0, np.cumsum(np.log(np.arange(1, pool_size + 1, dtype=np.float64)))]
    above = np.arange(n - 1, pool_size)  # i - 1 for i = n..N
    log_choose_i = log_factorial[above] - log_factorial[n - 1] - log_factorial[above - (n - 1)]
    log_choose_pool = log_factorial[pool_size] - log_factorial[n] - log_factorial[pool_size - n]
    weights = np.zeros(pool_size)
    weights[n - 1 :] = np.exp(log_choose_i - log_choose_pool)
    return weights


def bon_weights(proxy: Sequence[float] | NDArray[np.float64], n: int) -> NDArray[np.float64]:
    """The weight of each pool sample (in the pool's own order) in E_n, tied proxy scores sharing
    their block's mean weight. ``proxy`` must be finite."""
    scores = np.asarray(proxy, dtype=np.float64)
    if scores.ndim != 1 or not np.all(np.isfinite(scores)):
        raise ValueError("proxy scores must be a 1-d array of finite numbers")
    order = np.argsort(scores, kind="stable")
    sorted_weights = order_weights(len(scores), n)
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    block_sums = np.add.reduceat(sorted_weights, starts)
    block_sizes = np.diff(np.r_[starts, len(scores)])
    shared = np.repeat(block_sums / block_sizes, block_sizes)
    weights = np.empty_like(shared)
    weights[order] = shared
    return weights


def expected_best_of_n(
    proxy: Sequence[float] | NDArray[np.float64], values: Sequence[float] | NDArray[np.float64], n: int
) -> float:
    """E_n[value] of the sample the proxy picks among n drawn without replacement from the pool.

    >>> round(expected_best_of_n([1.0, 2.0, 3.0], [10.0, 20.0, 30.0], 2), 6)
    26.666667
    """
    weights = bon_weights(proxy, n)
    return float(np.dot(weights, np.asarray(values, dtype=np.float64)))


def bon_kl(n: int) -> float:
    """log n − (n − 1)/n: KL(best-of-n ‖ base), exact for a continuous proxy without ties."""
    if n < 1:
        raise ValueError(f"n={n}: best-of-n needs n >= 1")
    return math.log(n) - (n - 1) / n


def bon_kl_plugin(n: int, pool_size: int) -> float:
    """Σ_i q_i log(N q_i), q_i = (i/N)^n − ((i − 1)/N)^n: KL(best-of-n ‖ uniform pool) for a pool of
    N distinct samples without proxy ties. It tends to ``bon_kl(n)`` as N grows, and is at most log N.

    >>> round(bon_kl_plugin(1, 10), 12)
    0.0
    >>> round(bon_kl_plugin(2, 1000), 3), round(bon_kl(2), 3)
    (0.193, 0.193)
    """
    if not 1 <= n <= pool_size:
        raise ValueError(f"n={n}: best-of-n needs 1 <= n <= pool size ({pool_size})")
    i = np.arange(1, pool_size + 1, dtype=np.float64)
    q = (i / pool_size) ** n - ((i - 1) / pool_size) ** n
    q = q[q > 0]
    return max(float(np.sum(q * np.log(pool_size * q))), 0.0)


def pool_kl(proxy: Sequence[float] | NDArray[np.float64], n: int, keys: Sequence[object] | None = None) -> float:
    """Plug-in KL(best-of-n ‖ pool) on one prompt's pool: the base is the pool itself (mass 1/N per
    sample) and best-of-n draws n samples from it with replacement and keeps the proxy's best.
    Samples tied in proxy score form blocks; a block spanning ranks lo+1..hi gets best-of-n mass
    M = (hi/N)^n − (lo/N)^n, split evenly over its samples, so

        KL = Σ_blocks M_b log(N M_b / |b|).

    Identical responses tie (a deterministic scorer gives them one score), which is how
    duplicates lower the KL; ``keys`` (e.g. token ids) make identical responses share one score
    even when the scorer's float noise split them. Without ties this is ``bon_kl_plugin(n, N)``.

    >>> round(pool_kl([0.1, 0.2, 0.3, 0.4], 4), 4) == round(bon_kl_plugin(4, 4), 4)
    True
    >>> pool_kl([0.5, 0.5, 0.5], 3)  # one response three times: nothing to choose
    0.0
    >>> round(pool_kl([0.1, 0.2, 0.2], 2, keys=["a", "b", "b"]), 4)  # 1/9 log(3/9) + 8/9 log(3 (8/9) / 2)
    0.1336
    """
    scores = np.asarray(proxy, dtype=np.float64)
    size = scores.size
    if not 1 <= n <= size:
        raise ValueError(f"n={n}: best-of-n needs 1 <= n <= pool size ({size})")
    if keys is not None:
        if len(keys) != size:
            raise ValueError(f"{len(keys)} keys for {size} samples")
        by_key: dict[object, list[int]] = {}
        for index, key in enumerate(keys):
            by_key.setdefault(key, []).append(index)
        scores = scores.copy()
        for members in by_key.values():
            scores[members] = scores[members].mean()
    ordered = np.sort(scores)
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], size]
    mass = (ends / size) ** n - (starts / size) ** n
    width = ends - starts
    keep = mass > 0
    return max(float(np.sum(mass[keep] * np.log(size * mass[keep] / width[keep]))), 0.0)


def duplicate_fraction(keys: Sequence[object]) -> float:
    """1 − distinct / N: the share of a pool's samples that repeat an earlier sample.

    >>> duplicate_fraction(["a", "b", "a", "a"])
    0.5
    """
    if not keys:
        raise ValueError("an empty pool has no duplicate fraction")
    return 1.0 - len(set(keys)) / len(keys)


def kl_estimates_differ(analytic: float, plugin: float, *, absolute: float = 0.1, relative: float = 0.1) -> bool:
    """Whether the analytic bound and the plug-in disagree materially: by more than ``absolute``
    nats and more than ``relative`` of the analytic value (both defaults 0.1). Small pools and
    duplicate-heavy pools trip it; then prefer the plug-in and grow the pool.

    >>> kl_estimates_differ(3.17, 3.10), kl_estimates_differ(3.17, 2.0)
    (False, True)
    """
    gap = abs(analytic - plugin)
    return gap > absolute and gap > relative * abs(analytic)


def best_of_n_table(
    proxy: Sequence[float] | NDArray[np.float64],
    values: Mapping[str, Sequence[float] | NDArray[np.float64]],
    ns: Sequence[int],
) -> dict[str, NDArray[np.float64]]:
    """E_n of every named value for each n of ``ns`` over one prompt's pool: name -> array (len(ns),).
    A value that is NaN for some sample is NaN for every n whose weights reach that sample.

    >>> best_of_n_table([1.0, 2.0, 3.0], {"gold": [10.0, 20.0, 30.0]}, [1, 3])["gold"].round(9).tolist()
    [20.0, 30.0]
    """
    weights = np.stack([bon_weights(proxy, n) for n in ns])
    table = {}
    for name, column in values.items():
        array = np.asarray(column, dtype=np.float64)
        if array.shape != (weights.shape[1],):
            raise ValueError(f"{name}: {array.shape[0]} values for a pool of {weights.shape[1]}")
        reached = weights > 0
        clean = np.where(np.isfinite(array), array, 0.0)
        expectation = weights @ clean
        missing = (reached & ~np.isfinite(array)[None, :]).any(axis=1)
        expectation[missing] = np.nan
        table[name] = expectation
    return table


def best_of_n_matrix(
    proxy: Sequence[Sequence[float]] | NDArray[np.float64],
    values: Sequence[Sequence[float]] | NDArray[np.float64],
    ns: Sequence[int],
) -> NDArray[np.float64]:
    """E_n[value] for P pools of one size N at once: ``proxy`` (P, N), ``values`` (..., P, N) ->
    (..., P, len(ns)); the same numbers as ``best_of_n_table`` prompt by prompt.

    The weights w_i(n) = C(i − 1, n − 1)/C(N, n) of the i-th ranked sample (the module's formula,
    Gao et al. 2022) depend only on (N, n), not on the prompt, so one (N, len(ns)) weight matrix
    serves every pool: sort each row by proxy (argsort along axis 1), gather the values in that
    order and multiply,

        E[..., p, k] = Σ_i value[..., p, order_p(i)] · w_i(ns[k]),

    one matrix product for all prompts and all n (O(P N log N) for the sorts, O(P N len(ns))
    for the product). Samples tied in proxy share their block's mean weight (as in
    ``bon_weights``); only the tied blocks are corrected, by Σ_{i∈block} (mean_block w − w_i)·g_i,
    so pools without ties cost nothing extra.

    ``proxy`` must be finite (drop unscored samples first; pools of different sizes go in
    separate calls). A value that is NaN (or infinite) for some sample makes E_n NaN for every
    n whose weights reach that sample, as in ``best_of_n_table``; the other n stay finite.

    >>> gold = [[10.0, 20.0, 30.0], [10.0, 20.0, 30.0]]
    >>> best_of_n_matrix([[1.0, 2.0, 3.0], [3.0, 1.0, 1.0]], gold, [1, 2]).round(6).tolist()  # n=2, 2nd: (10+10+25)/3
    [[20.0, 26.666667], [20.0, 15.0]]
    """
    scores = np.asarray(proxy, dtype=np.float64)
    data = np.asarray(values, dtype=np.float64)
    if scores.ndim != 2 or not np.all(np.isfinite(scores)):
        raise ValueError("proxy scores must be a 2-d array (prompts, pool) of finite numbers")
    if data.ndim < 2 or data.shape[-2:] != scores.shape:
        raise ValueError(f"values of shape {data.shape} do not end in the proxy's shape {scores.shape}")
    size = scores.shape[1]
    weights = np.stack([order_weights(size, n) for n in ns], axis=1)  # (N, K)
    order = np.argsort(scores, axis=1)
    ranked = np.take_along_axis(scores, order, axis=1)
    ordered = np.take_along_axis(data, np.broadcast_to(order, data.shape), axis=-1)
    finite = np.isfinite(ordered)
    clean = np.where(finite, ordered, 0.0)
    expectation = clean @ weights  # (..., P, K)
    # w_i(n) grows with i, so a weight column reaches the ranks from its first positive entry on.
    first_reached = np.argmax(weights > 0, axis=0)  # (K,)
    last_missing = np.where(finite, -1, np.arange(size)).max(axis=-1)  # (..., P); -1: none missing
    missing = last_missing[..., None] >= first_reached
    tied = ranked[:, 1:] == ranked[:, :-1]  # (P, N - 1): rank i + 1 ties rank i
    if tied.any():
        _share_tied_weights(tied, weights, clean, finite, expectation, missing)
    expectation[missing] = np.nan
    return expectation


def _share_tied_weights(
    tied: NDArray[np.bool_],
    weights: NDArray[np.float64],
    clean: NDArray[np.float64],
    finite: NDArray[np.bool_],
    expectation: NDArray[np.float64],
    missing: NDArray[np.bool_],
) -> None:
    """Correct ``best_of_n_matrix``'s product for blocks of samples tied in proxy, in place: each
    member of a block gets the block's mean weight instead of its own rank's, and a NaN member
    reaches every n where that mean is positive. Only the M tied ranks are touched, one n at a
    time, so the extra memory is O(M) per value array, never O(M · len(ns))."""
    prompts, size = tied.shape[0], tied.shape[1] + 1
    after = np.zeros((prompts, size), dtype=bool)
    after[:, 1:] = tied  # equal to the rank below
    before = np.zeros((prompts, size), dtype=bool)
    before[:, :-1] = tied  # equal to the rank above
    rows, ranks = np.nonzero(after | before)  # row-major: by prompt, then rank
    block_starts = np.flatnonzero(~after[rows, ranks])
    block_sizes = np.diff(np.r_[block_starts, rows.size])
    prompt_starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    touched = rows[prompt_starts]
    tied_values = clean[..., rows, ranks]  # (..., M)
    tied_missing = ~finite[..., rows, ranks]
    for k in range(weights.shape[1]):
        own = weights[ranks, k]
        shared = np.repeat(np.add.reduceat(own, block_starts) / block_sizes, block_sizes)
        expectation[..., touched, k] += np.add.reduceat(tied_values * (shared - own), prompt_starts, axis=-1)
        missing[..., touched, k] |= np.logical_or.reduceat(tied_missing & (shared > 0), prompt_starts, axis=-1)
