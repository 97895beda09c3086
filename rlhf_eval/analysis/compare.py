"""Paired comparison of two checkpoints on the same prompts, one metric or several at once.

A baseline ``a`` and a candidate ``b`` are scored on the same P prompts; the change is

    Δ = mean over prompts p finite in both of (b_p − a_p).

Prompts are the bootstrap unit and the comparison is paired: a replicate draws P prompt indices
with replacement (:func:`~rlhf_eval.analysis.resample.prompt_resamples`) and takes the same prompts
from both sides, so variance shared by a prompt's two scores (an easy prompt is easy for both)
cancels. The replicate's Δ* is the mean of b − a over its drawn prompts that are finite in both; a
replicate that drew none is left out. Drawing over all P supplied prompts, rather than over the
finite ones only, lets several metrics with different missing prompts share one set of replicate
indices. The interval is the percentile interval (Efron & Tibshirani 1993, ch. 13).

One-sided p-values invert that percentile bootstrap, counting replicates on the wrong side of 0
among the B finite ones, with the +1 of a Monte Carlo p-value (Davison & Hinkley 1997, ch. 4) so
that no p-value is 0:

    p_greater (H1: b > a) = (1 + #{Δ* ≤ 0}) / (1 + B)
    p_less    (H1: b < a) = (1 + #{Δ* ≥ 0}) / (1 + B)
    p_two_sided           = min(1, 2 min(p_greater, p_less))

p_two_sided < 1 − level goes with the equal-tailed percentile interval excluding 0 (up to the +1
and interpolation). Without an effect, Δ* scatters around Δ ≈ 0 and both one-sided p-values are
near 0.5; for identical arrays every Δ* is 0 and both are 1.

Several metrics: :func:`compare_metrics` uses the same replicate indices for every metric and
controls the family-wise error over the metrics with Holm's step-down adjustment (Holm 1979), which
holds under any dependence between the metrics.

>>> result = paired_bootstrap([1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.0], replicates=200)
>>> result.delta, result.ci, result.n_prompts, round(result.p_greater, 4)
(1.0, (1.0, 1.0), 4, 0.005)
>>> [round(p, 4) for p in holm([0.01, 0.04, 0.03, 0.005])]
[0.03, 0.06, 0.06, 0.02]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from rlhf_eval.analysis.resample import (
    DEFAULT_LEVEL,
    DEFAULT_REPLICATES,
    DEFAULT_SEED,
    percentile_interval,
    prompt_resamples,
)

ArrayLike = Sequence[float] | NDArray[np.float64]


@dataclass(frozen=True)
class PairedDelta:
    """Δ = mean(b − a) over the ``n_prompts`` prompts finite in both (``n_dropped`` were not), its
    percentile interval at ``level`` and the bootstrap p-values of the module docstring.
    ``replicates`` counts the finite replicates the interval and p-values come from."""

    delta: float
    ci: tuple[float, float]
    p_greater: float
    p_less: float
    n_prompts: int
    n_dropped: int
    level: float
    replicates: int

    @property
    def p_two_sided(self) -> float:
        """min(1, 2 min(p_greater, p_less)): evidence of a change in either direction."""
        return min(1.0, 2.0 * min(self.p_greater, self.p_less))


@dataclass(frozen=True)
class MetricComparison:
    """One metric of :func:`compare_metrics`.

    ``p_value`` is the unadjusted two-sided p-value, ``p_adjusted`` its Holm adjustment over the
    compared metrics; ``significant`` is p_adjusted ≤ 1 − level. ``improvement`` is None when the
    change is not significant or the metric's direction is not given, else whether it moved the
    better way. ``verdict`` says the same in words: "improved", "regressed", "increased",
    "decreased" (significant, direction unknown) or "no significant change".
    """

    metric: str
    paired: PairedDelta
    p_value: float
    p_adjusted: float
    significant: bool
    higher_is_better: bool | None
    improvement: bool | None
    verdict: str


def holm(p_values: Sequence[float] | NDArray[np.float64]) -> list[float]:
    """Holm (1979) step-down adjusted p-values, in the input order.

    With the m p-values sorted ascending, p_(1) ≤ … ≤ p_(m),

        adjusted p_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j)),

    and rejecting every hypothesis whose adjusted p-value is ≤ α is Holm's procedure, which keeps
    the family-wise error rate at α under any dependence. NaN p-values (a metric that could not be
    tested) stay NaN and are not counted in m.

    >>> [round(p, 4) for p in holm([0.01, 0.04, 0.03, 0.005])]
    [0.03, 0.06, 0.06, 0.02]
    >>> holm([0.5])
    [0.5]
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError("p_values must be a 1-d sequence")
    tested = ~np.isnan(p)
    if np.any((p[tested] < 0) | (p[tested] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    adjusted = np.full(p.shape, np.nan)
    m = int(tested.sum())
    if m == 0:
        return adjusted.tolist()
    positions = np.flatnonzero(tested)
    order = np.argsort(p[positions], kind="stable")
    scaled = (m - np.arange(m)) * p[positions][order]  # (m − j + 1) p_(j) for j = 1..m
    adjusted[positions[order]] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return [float(x) for x in adjusted]


def _paired_arrays(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    left = np.asarray(a, dtype=np.float64)
    right = np.asarray(b, dtype=np.float64)
    if left.ndim != 1 or left.shape != right.shape:
        raise ValueError(f"a {left.shape} and b {right.shape} must be 1-d with one value per prompt")
    return right - left


def _resampled_deltas(diff: NDArray[np.float64], indices: NDArray[np.int64], chunk: int = 256) -> NDArray[np.float64]:
    """Δ* per replicate: the mean of the finite ``diff`` over each row's drawn prompts (NaN when
    none is finite), from per-replicate prompt counts so memory stays at chunk × P."""
    finite = np.isfinite(diff)
    values = np.where(finite, diff, 0.0)
    replicates, n_prompts = indices.shape
    out = np.empty(replicates)
    for start in range(0, replicates, chunk):
        block = indices[start : start + chunk]
        rows = block.shape[0]
        flat = (np.arange(rows)[:, None] * n_prompts + block).ravel()
        counts = np.bincount(flat, minlength=rows * n_prompts).reshape(rows, n_prompts)
        drawn = counts @ finite.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + rows] = np.where(drawn > 0, (counts @ values) / drawn, np.nan)
    return out


def _paired_delta(diff: NDArray[np.float64], indices: NDArray[np.int64], level: float) -> PairedDelta:
    finite = np.isfinite(diff)
    n_prompts = int(finite.sum())
    if n_prompts == 0:
        raise ValueError("no prompt is finite in both a and b")
    deltas = _resampled_deltas(diff, indices)
    deltas = deltas[np.isfinite(deltas)]
    replicates = int(deltas.size)
    return PairedDelta(
        delta=float(diff[finite].mean()),
        ci=percentile_interval(deltas, level),
        p_greater=(1 + int(np.sum(deltas <= 0))) / (1 + replicates),
        p_less=(1 + int(np.sum(deltas >= 0))) / (1 + replicates),
        n_prompts=n_prompts,
        n_dropped=int(diff.size - n_prompts),
        level=level,
        replicates=replicates,
    )


def paired_bootstrap(
    a: ArrayLike,
    b: ArrayLike,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> PairedDelta:
    """Δ = mean(b − a) over the prompts finite in both, with its paired percentile interval and
    one-sided bootstrap p-values (module docstring). ``a`` is the baseline, ``b`` the candidate;
    both (P,) with NaN for a missing prompt.

    >>> paired_bootstrap([0.0, 1.0, float("nan")], [0.5, 1.5, 2.0], replicates=50).n_dropped
    1
    """
    diff = _paired_arrays(a, b)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level}: use a probability in (0, 1)")
    return _paired_delta(diff, prompt_resamples(diff.size, replicates, seed), level)


def _verdict(delta: float, significant: bool, higher_is_better: bool | None) -> tuple[bool | None, str]:
    if not significant:
        return None, "no significant change"
    if higher_is_better is None:
        return None, "increased" if delta > 0 else "decreased"
    improvement = (delta > 0) == higher_is_better
    return improvement, "improved" if improvement else "regressed"


def compare_metrics(
    metrics: Mapping[str, tuple[ArrayLike, ArrayLike]],
    higher_is_better: Mapping[str, bool] | None = None,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> list[MetricComparison]:
    """A paired bootstrap per metric (name → (a, b), each (P,) over the same P prompts), all with
    the same seeded replicate indices, and Holm-adjusted two-sided p-values over the metrics.

    A change is significant when its adjusted p-value is ≤ 1 − level; ``higher_is_better`` (name →
    bool, for any subset of the metrics) says which direction is an improvement. The result keeps
    the order of ``metrics``; for a single metric it is :func:`paired_bootstrap` with the same seed.

    >>> rows = compare_metrics({"gold": ([0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])}, {"gold": True}, replicates=100)
    >>> rows[0].verdict, rows[0].improvement
    ('improved', True)
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level}: use a probability in (0, 1)")
    directions = dict(higher_is_better or {})
    unknown = sorted(set(directions) - set(metrics))
    if unknown:
        raise ValueError(f"higher_is_better names metrics that are not compared: {unknown}")
    if not metrics:
        return []
    diffs = {name: _paired_arrays(a, b) for name, (a, b) in metrics.items()}
    sizes = {diff.size for diff in diffs.values()}
    if len(sizes) != 1:
        raise ValueError(f"every metric must cover the same prompts; got lengths {sorted(sizes)}")
    indices = prompt_resamples(sizes.pop(), replicates, seed)
    results = {}
    for name, diff in diffs.items():
        try:
            results[name] = _paired_delta(diff, indices, level)
        except ValueError as error:
            raise ValueError(f"metric {name!r}: {error}") from error
    p_values = [result.p_two_sided for result in results.values()]
    comparisons = []
    for (name, result), p_value, p_adjusted in zip(results.items(), p_values, holm(p_values), strict=True):
        significant = bool(p_adjusted <= 1.0 - level)
        direction = directions.get(name)
        improvement, verdict = _verdict(result.delta, significant, direction)
        comparisons.append(
            MetricComparison(
                metric=name,
                paired=result,
                p_value=p_value,
                p_adjusted=p_adjusted,
                significant=significant,
                higher_is_better=direction,
                improvement=improvement,
                verdict=verdict,
            )
        )
    return comparisons
