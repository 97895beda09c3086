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
to 1. Cost O(N log N) per prompt for the sort, O(N) per n.

KL of best-of-n from the base policy: log n − (n − 1)/n, an upper bound that is exact when no
two samples tie (Stiennon et al. 2020; Beirami et al. 2024).

>>> [round(float(w), 4) for w in bon_weights([0.1, 0.5, 0.3], 2)]
[0.0, 0.6667, 0.3333]
>>> round(bon_kl(4), 4)
0.6363
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
