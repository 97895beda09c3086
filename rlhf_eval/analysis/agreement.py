"""Does the proxy still rank samples as gold does? Agreement signals that move with KL.

As a policy over-optimizes, the proxy and gold disagree more on its samples: their rank
correlation falls with KL (Gao et al. 2022, section 4.3), and an ensemble of reward models
disagrees more with itself (Coste et al. 2023, "Reward Model Ensembles Help Mitigate
Overoptimization"; Eisenstein et al. 2023). Both are computed per point (a checkpoint is one KL
level) or per bucket of per-sample KL.

- **Kendall tau-b** (Kendall 1945): (n_c − n_d) / sqrt((n_0 − n_1)(n_0 − n_2)) with n_0 = n(n − 1)/2,
  n_1 and n_2 the pairs tied in x and in y; counted in O(n log n) with a Fenwick tree.
- **Ensemble disagreement** of a sample: the population standard deviation of its members'
  scores, each member standardized by its mean and standard deviation on the reference's
  samples (so members on different scales are comparable; DESIGN.md, "Ensembles").

>>> kendall_tau([1, 2, 3, 4], [1, 3, 2, 4])  # 5 concordant, 1 discordant of 6 pairs
0.6666666666666666
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray


def kendall_tau(x: Sequence[float] | NDArray[np.float64], y: Sequence[float] | NDArray[np.float64]) -> float:
    """Kendall's tau-b of paired values (NaN pairs left out); NaN when either side is constant or
    fewer than 2 pairs remain."""
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.shape != ys.shape:
        raise ValueError(f"{xs.size} x values against {ys.size} y values")
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    n = xs.size
    if n < 2:
        return float("nan")
    n0 = n * (n - 1) // 2
    n1 = tied_pairs(xs)
    n2 = tied_pairs(ys)
    if n0 in (n1, n2):
        return float("nan")
    concordant, discordant = count_pairs(xs, ys)
    return float((concordant - discordant) / math.sqrt((n0 - n1) * (n0 - n2)))


def tied_pairs(values: NDArray[np.float64]) -> int:
    """Σ t(t − 1)/2 over groups of equal values."""
    _, counts = np.unique(values, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def count_pairs(xs: NDArray[np.float64], ys: NDArray[np.float64]) -> tuple[int, int]:
    """(concordant, discordant) pairs: x and y strictly ordered the same way / the opposite way.
    Samples are visited by increasing x, a whole group of tied x at a time, and a Fenwick tree
    over y ranks counts the earlier (strictly smaller x) samples with smaller and larger y."""
    y_rank = np.searchsorted(np.unique(ys), ys)  # 0-based dense ranks
    size = int(y_rank.max()) + 1
    tree = [0] * (size + 1)

    def add(index: int) -> None:
        i = index + 1
        while i <= size:
            tree[i] += 1
            i += i & -i

    def below(index: int) -> int:  # how many inserted ranks are < index
        total, i = 0, index
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total

    order = np.argsort(xs, kind="stable")
    concordant = discordant = inserted = 0
    start = 0
    while start < order.size:
        end = start
        while end + 1 < order.size and xs[order[end + 1]] == xs[order[start]]:
            end += 1
        group = [int(y_rank[k]) for k in order[start : end + 1]]
        for rank in group:
            smaller = below(rank)
            concordant += smaller
            discordant += inserted - below(rank + 1)
        for rank in group:
            add(rank)
        inserted += len(group)
        start = end + 1
    return concordant, discordant


def tau_by_bucket(
    kl: Sequence[float] | NDArray[np.float64],
    proxy: Sequence[float] | NDArray[np.float64],
    gold: Sequence[float] | NDArray[np.float64],
    buckets: int = 5,
) -> list[tuple[float, float, float]]:
    """Kendall tau(proxy, gold) in each bucket of per-sample KL (quantile buckets, merged on ties):
    a list of (bucket's lowest KL, its highest KL, tau).

    >>> [round(t, 3) for *_, t in tau_by_bucket([0, 0, 0, 1, 1, 1], [1, 2, 3, 1, 2, 3], [1, 2, 3, 3, 2, 1], 2)]
    [1.0, -1.0]
    """
    k = np.asarray(kl, dtype=np.float64)
    p = np.asarray(proxy, dtype=np.float64)
    g = np.asarray(gold, dtype=np.float64)
    keep = np.isfinite(k)
    k, p, g = k[keep], p[keep], g[keep]
    if k.size == 0:
        return []
    edges = sorted(set(np.quantile(k, np.arange(1, buckets) / buckets).tolist()))
    which = np.searchsorted(np.asarray(edges), k, side="left")
    out = []
    for b in range(len(edges) + 1):
        chosen = which == b
        if chosen.sum() >= 2:
            out.append((float(k[chosen].min()), float(k[chosen].max()), kendall_tau(p[chosen], g[chosen])))
    return out


def ensemble_disagreement(
    members: NDArray[np.float64], reference_means: Sequence[float], reference_sds: Sequence[float]
) -> NDArray[np.float64]:
    """Per-sample disagreement of an (M members, S samples) score matrix: the population standard
    deviation over members of (score − mean_m) / sd_m, with each member's reference mean and sd.

    >>> ensemble_disagreement(np.array([[1.0, 3.0], [10.0, 10.0]]), [2.0, 10.0], [1.0, 2.0]).tolist()
    [0.5, 0.5]
    """
    scores = np.asarray(members, dtype=np.float64)
    means = np.asarray(reference_means, dtype=np.float64)[:, None]
    sds = np.asarray(reference_sds, dtype=np.float64)[:, None]
    if scores.ndim != 2 or means.shape[0] != scores.shape[0] or sds.shape[0] != scores.shape[0]:
        raise ValueError("members must be (M, S) with one reference mean and sd per member")
    if np.any(~(sds > 0)):
        raise ValueError("every member needs a positive standard deviation on the reference's samples")
    return np.asarray(((scores - means) / sds).std(axis=0), dtype=np.float64)
