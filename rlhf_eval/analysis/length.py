"""How much of a gold gain is just length? Two answers, both calibrated on the reference only.

Reward models and judges favour longer answers (Singhal et al. 2023, "A Long Way to Go"; Dubois
et al. 2024, length-controlled AlpacaEval), so a policy can gain reward by growing. Both measures
take the reference policy's samples as the calibration set, so the policy under test cannot
move the yardstick.

1. **Length-debiased reward** (DESIGN.md, "Length"): fit r = a + b·log(1 + L) by least squares on
   the reference's samples (L = response tokens); a checkpoint's debiased reward is its mean
   residual, mean r − a − b·mean log(1 + L). The reference's own is 0 by construction.
2. **Share of the gain explained by length**: cut lengths into buckets at the reference's length
   quantiles; with ḡ_b the reference's mean reward in bucket b and s_b the share of samples in it,

       explained = Σ_b (s_b(checkpoint) − s_b(reference)) · ḡ_b,   share = explained / (r̄(checkpoint) − r̄(reference)),

   the gain the checkpoint would get by shifting its length distribution alone, at the
   reference's reward for each length (direct standardization). NaN when the gain is ~0.

>>> fit = fit_log_length([0.0, 1.0, 2.0], [0, 1, 3])  # log(1 + L) = 0, log 2, log 4: r = b log(1 + L)
>>> round(fit.intercept, 9), round(float(fit.slope * np.log(2)), 9)
(0.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: Reference length quantile buckets (quintiles) unless said otherwise.
DEFAULT_BUCKETS = 5


@dataclass(frozen=True)
class LengthFit:
    """r = intercept + slope · log(1 + L), fitted on the reference's samples."""

    intercept: float
    slope: float
    n_samples: int

    def predict(self, log_length: NDArray[np.float64] | float) -> NDArray[np.float64]:
        return self.intercept + self.slope * np.asarray(log_length, dtype=np.float64)


def log_length(lengths: Sequence[float] | NDArray[np.float64]) -> NDArray[np.float64]:
    """log(1 + L), defined for empty responses (L = 0)."""
    return np.log1p(np.asarray(lengths, dtype=np.float64))


def fit_log_length(
    reward: Sequence[float] | NDArray[np.float64], lengths: Sequence[float] | NDArray[np.float64]
) -> LengthFit:
    """Least squares of reward on log(1 + length) with an intercept, NaN rows left out; with one
    distinct length the slope is 0 (nothing to explain)."""
    r = np.asarray(reward, dtype=np.float64)
    x = log_length(lengths)
    keep = np.isfinite(r) & np.isfinite(x)
    r, x = r[keep], x[keep]
    if r.size == 0:
        raise ValueError("no reference sample has both a reward and a length")
    xc = x - x.mean()
    sxx = float((xc * xc).sum())
    b = float((xc * (r - r.mean())).sum() / sxx) if sxx > 0 else 0.0
    return LengthFit(intercept=float(r.mean() - b * x.mean()), slope=b, n_samples=int(r.size))


def debiased_mean(fit: LengthFit, mean_reward: float, mean_log_length: float) -> float:
    """Mean residual of a point: mean r − a − b · mean log(1 + L) (linear, so per-prompt means suffice)."""
    return float(mean_reward - fit.predict(mean_log_length))


def bucket_edges(
    reference_lengths: Sequence[float] | NDArray[np.float64], buckets: int = DEFAULT_BUCKETS
) -> list[float]:
    """Inner edges at the reference's length quantiles 1/b, ..., (b − 1)/b, duplicates merged (many
    ties on integer lengths merge buckets). A length L falls in bucket #{edges ≤ L}... precisely
    ``np.searchsorted(edges, L, side='right')``.

    >>> bucket_edges([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 2)
    [5.5]
    """
    lengths = np.asarray(reference_lengths, dtype=np.float64)
    lengths = lengths[np.isfinite(lengths)]
    if lengths.size == 0:
        raise ValueError("no reference lengths to cut into buckets")
    if buckets < 1:
        raise ValueError(f"buckets={buckets}: use at least 1")
    inner = np.quantile(lengths, np.arange(1, buckets) / buckets)
    return sorted({float(edge) for edge in inner})


def bucket_of(lengths: Sequence[float] | NDArray[np.float64], edges: Sequence[float]) -> NDArray[np.int64]:
    """Bucket index of each length: the number of edges at or below it.

    >>> bucket_of([1, 5.5, 9], [5.5]).tolist()
    [0, 1, 1]
    """
    return np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(lengths, dtype=np.float64), side="right")


def bucket_means(
    reward: Sequence[float] | NDArray[np.float64],
    lengths: Sequence[float] | NDArray[np.float64],
    edges: Sequence[float],
) -> NDArray[np.float64]:
    """The reference's mean reward in each bucket (len(edges) + 1 of them; NaN for an empty one)."""
    r = np.asarray(reward, dtype=np.float64)
    b = bucket_of(lengths, edges)
    out = np.full(len(edges) + 1, np.nan)
    for k in range(len(out)):
        chosen = r[(b == k) & np.isfinite(r)]
        if chosen.size:
            out[k] = chosen.mean()
    return out


def length_explained_share(
    shares: NDArray[np.float64],
    reference_shares: NDArray[np.float64],
    reference_bucket_means: NDArray[np.float64],
    gain: float,
    *,
    min_gain: float = 1e-9,
) -> tuple[float, float]:
    """(explained gain, explained / gain) from bucket shares (see the module docstring). Buckets
    the reference never reached have no reference reward: they count as the nearest reached bucket's.

    >>> length_explained_share(np.array([0.0, 1.0]), np.array([0.5, 0.5]), np.array([0.0, 2.0]), 2.0)
    (1.0, 0.5)
    """
    means = fill_nearest(np.asarray(reference_bucket_means, dtype=np.float64))
    explained = float(np.dot(np.asarray(shares) - np.asarray(reference_shares), means))
    share = explained / gain if abs(gain) > min_gain else float("nan")
    return explained, share


def fill_nearest(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """NaN entries take the value of the nearest finite entry (the lower one on a tie).

    >>> fill_nearest(np.array([np.nan, 1.0, np.nan, np.nan, 4.0])).tolist()
    [1.0, 1.0, 1.0, 4.0, 4.0]
    """
    finite = np.flatnonzero(np.isfinite(values))
    if finite.size == 0:
        raise ValueError("no bucket has a reference reward")
    out = values.copy()
    for i in np.flatnonzero(~np.isfinite(values)):
        out[i] = values[finite[np.argmin(np.abs(finite - i))]]
    return out
