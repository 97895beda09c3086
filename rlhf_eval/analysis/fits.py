"""Gold reward against KL distance in the functional forms of Gao et al. (2022), with a prompt bootstrap.

Gao, Schulman & Hilton (2022), "Scaling Laws for Reward Model Overoptimization", write
the gold reward of a policy as a function of d = sqrt(KL(π ‖ π_ref)) (KL in nats), with the
reference policy at R = 0:

    best-of-n:  R_bon(d) = d (α − β d)
    RL:         R_RL(d)  = d (α − β log d)

Both are linear in (α, β) with no intercept, so they are fitted by weighted least squares on the
design columns [d, −d²] (best-of-n) or [d, −d log d] (RL), minimising Σ_k w_k (R_k − x_kᵀθ)². A
point at d = 0 has both columns zero (d log d → 0), so it contributes nothing to the fit: the
forms already pass through the reference.

The peak, where dR/dd = 0:

    best-of-n:  α − 2βd = 0          →  d* = α / (2β),        R* = α² / (4β)
    RL:         α − β log d − β = 0  →  d* = exp(α/β − 1),    R* = β d*

and KL* = d*². It is a maximum only for β > 0 (d²R/dd² is −2β, resp. −β/d). With β < 0, or
β = 0 and α > 0, the fitted reward rises without bound: d*, KL* and R* are +inf. With β = 0 and
α ≤ 0, or for best-of-n β > 0 and α ≤ 0 (stationary point at d ≤ 0), the largest fitted reward on
d ≥ 0 is the reference itself: d* = KL* = R* = 0. ``has_peak`` is true only for 0 < d* < inf.

A fitted peak is an extrapolation unless the data bracket it, so :func:`bootstrap_gao` reports
``peak_resolved`` only when β's bootstrap interval lies above 0 and d* lies inside the observed
range of d > 0.

>>> fit = fit_gao([0.0, 1.0, 2.0, 3.0], [0.0, 1.5, 2.0, 1.5], "bon")
>>> round(fit.alpha, 6), round(fit.beta, 6), round(fit.d_star, 6), round(fit.kl_star, 6), round(fit.r_star, 6)
(2.0, 0.5, 2.0, 4.0, 2.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
from numpy.typing import NDArray

from rlhf_eval.analysis.resample import (
    DEFAULT_LEVEL,
    DEFAULT_REPLICATES,
    DEFAULT_SEED,
    complete_prompts,
    percentile_interval,
    resampled_means,
)

Form = Literal["bon", "rl"]
FORMS: tuple[Form, ...] = ("bon", "rl")

#: A point's variance of the mean is floored at this fraction of the median positive variance
#: over points, so a point that happens to have no spread (the reference at exactly 0, a
#: saturated reward) gets a large but finite weight instead of an infinite one.
VARIANCE_FLOOR_FRACTION = 0.01

ArrayLike = Sequence[float] | NDArray[np.float64]


@dataclass(frozen=True)
class GaoFit:
    """One weighted least-squares fit of a Gao et al. form.

    ``residuals`` is reward − fitted per input point (NaN where the point was left out),
    ``weighted_rss`` is Σ w_k residual_k² over the points used, ``n_points`` counts the points with
    d > 0 that carry the fit (d = 0 points are used but add nothing).
    """

    form: Form
    alpha: float
    beta: float
    d_star: float
    kl_star: float
    r_star: float
    has_peak: bool
    n_points: int
    weighted_rss: float
    residuals: tuple[float, ...]


@dataclass(frozen=True)
class GaoFitResult:
    """A fit with percentile intervals over prompt-bootstrap refits.

    ``weights`` are the WLS weights used for the point fit and every replicate; ``d_range`` is
    (min, max) of the observed d > 0; ``no_peak_fraction`` is the share of finite replicates whose
    fitted curve has no peak at finite d > 0 (their d*, KL*, R* are +inf or 0 and enter the
    intervals as such); ``failed_replicates`` counts replicates too degenerate to fit.
    ``reason`` is "peak resolved" or "peak not resolved: …" saying why.
    """

    fit: GaoFit
    alpha_ci: tuple[float, float]
    beta_ci: tuple[float, float]
    d_star_ci: tuple[float, float]
    kl_star_ci: tuple[float, float]
    r_star_ci: tuple[float, float]
    level: float
    replicates: int
    seed: int
    n_prompts: int
    weights: tuple[float, ...]
    d_range: tuple[float, float]
    no_peak_fraction: float
    failed_replicates: int
    peak_resolved: bool
    reason: str


def _check_form(form: str) -> Form:
    if form not in FORMS:
        raise ValueError(f"form={form!r}: use one of {FORMS}")
    return cast(Form, form)


def design_matrix(d: ArrayLike, form: Form) -> NDArray[np.float64]:
    """The (K, 2) design [d, −d²] (best-of-n) or [d, −d log d] (RL), with d log d = 0 at d = 0.

    >>> design_matrix([0.0, 1.0, 2.0], "bon").tolist()
    [[0.0, -0.0], [1.0, -1.0], [2.0, -4.0]]
    >>> design_matrix([0.0, 1.0], "rl").tolist()
    [[0.0, -0.0], [1.0, -0.0]]
    """
    form = _check_form(form)
    distance = np.asarray(d, dtype=np.float64)
    if form == "bon":
        second = distance**2
    else:
        positive = distance > 0
        second = np.zeros_like(distance)
        second[positive] = distance[positive] * np.log(distance[positive])
    return np.stack([distance, -second], axis=-1)


def gao_reward(d: ArrayLike, alpha: float, beta: float, form: Form) -> NDArray[np.float64]:
    """R(d) of the form at (α, β).

    >>> gao_reward([1.0, 2.0], 2.0, 0.5, "bon").tolist()
    [1.5, 2.0]
    """
    return np.asarray(design_matrix(d, form) @ np.array([alpha, beta]), dtype=np.float64)


def gao_peak(alpha: float, beta: float, form: Form) -> tuple[float, float, float]:
    """(d*, KL*, R*) of the fitted curve on d ≥ 0, with the no-peak conventions of the module
    docstring (+inf when the curve rises without bound, 0 when the reference is the maximum).

    >>> gao_peak(2.0, 0.5, "bon")
    (2.0, 4.0, 2.0)
    >>> gao_peak(1.0, 1.0, "rl")
    (1.0, 1.0, 1.0)
    >>> gao_peak(1.0, -0.1, "bon")
    (inf, inf, inf)
    """
    form = _check_form(form)
    if not (math.isfinite(alpha) and math.isfinite(beta)):
        return (math.nan, math.nan, math.nan)
    if beta < 0 or (beta == 0 and alpha > 0):
        return (math.inf, math.inf, math.inf)
    if beta == 0 or (form == "bon" and alpha <= 0):
        return (0.0, 0.0, 0.0)
    if form == "bon":
        d_star = alpha / (2.0 * beta)
        r_star = alpha**2 / (4.0 * beta)
    else:
        exponent = alpha / beta - 1.0
        if exponent > 350.0:  # d*² would overflow: the peak is beyond any representable KL
            return (math.inf, math.inf, math.inf)
        d_star = math.exp(exponent)
        r_star = beta * d_star
    return (d_star, d_star * d_star, r_star)


def _solve(x: NDArray[np.float64], y: NDArray[np.float64], w: NDArray[np.float64]) -> tuple[NDArray[np.float64], int]:
    """θ minimising Σ w (y − xθ)², by least squares on the √w-scaled rows; and the rank."""
    root = np.sqrt(w)
    theta, _, rank, _ = np.linalg.lstsq(x * root[:, None], y * root, rcond=None)
    return np.asarray(theta, dtype=np.float64), int(rank)


def fit_gao(d: ArrayLike, reward: ArrayLike, form: Form, weights: ArrayLike | None = None) -> GaoFit:
    """Weighted least squares of ``reward`` on the form's design without intercept.

    ``weights`` (K,) are the w_k of Σ w_k (R_k − x_kᵀθ)², e.g. 1 / variance of each point's mean;
    None fits unweighted. Points with a non-finite reward or weight, or weight 0, are left out.
    Needs two points with distinct d > 0 (and, for RL, not both at d = 1, where d log d = 0).

    >>> fit = fit_gao([1.0, 2.0, 4.0], gao_reward([1.0, 2.0, 4.0], 1.0, 0.25, "rl"), "rl")
    >>> round(fit.alpha, 9), round(fit.beta, 9), fit.has_peak
    (1.0, 0.25, True)
    """
    form = _check_form(form)
    distance = np.asarray(d, dtype=np.float64)
    values = np.asarray(reward, dtype=np.float64)
    if distance.ndim != 1 or distance.shape != values.shape:
        raise ValueError(f"d {distance.shape} and reward {values.shape} must be 1-d of one length")
    if not np.all(np.isfinite(distance)) or np.any(distance < 0):
        raise ValueError("d = sqrt(KL) must be finite and >= 0")
    w = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != values.shape:
        raise ValueError(f"weights {w.shape} must match reward {values.shape}")
    if np.any(w < 0):
        raise ValueError("weights must be >= 0")
    used = np.isfinite(values) & np.isfinite(w) & (w > 0)
    x = design_matrix(distance, form)
    theta, rank = _solve(x[used], values[used], w[used])
    if rank < 2:
        raise ValueError("the fit needs at least two usable points with distinct d > 0")
    alpha, beta = float(theta[0]), float(theta[1])
    residuals = np.where(used, values - x @ theta, np.nan)
    d_star, kl_star, r_star = gao_peak(alpha, beta, form)
    return GaoFit(
        form=form,
        alpha=alpha,
        beta=beta,
        d_star=d_star,
        kl_star=kl_star,
        r_star=r_star,
        has_peak=0.0 < d_star < math.inf,
        n_points=int(np.sum(used & (distance > 0))),
        weighted_rss=float(np.sum(w[used] * residuals[used] ** 2)),
        residuals=tuple(float(r) for r in residuals),
    )


def inverse_variance_weights(rewards: NDArray[np.float64]) -> NDArray[np.float64]:
    """w_k = 1 / Var(mean of point k over prompts) = n_k / s_k² from a (K, P) matrix (NaN = missing).

    The variance is floored at ``VARIANCE_FLOOR_FRACTION`` × the median positive variance over the
    points, so a point without spread (the reference at exactly 0) gets a large finite weight;
    equal weights when no point has spread. A point with fewer than two prompts gets weight 0.

    Below, the variances of the means are 0, 1/3 and 4/3; the floor is 0.01 × median(1/3, 4/3) = 1/120.

    >>> weights = inverse_variance_weights(np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.0, 2.0, 4.0]]))
    >>> [round(float(w), 9) for w in weights]
    [120.0, 3.0, 0.75]
    """
    matrix = np.atleast_2d(np.asarray(rewards, dtype=np.float64))
    counts = np.isfinite(matrix).sum(axis=1)
    weights = np.zeros(matrix.shape[0])
    enough = counts >= 2
    if not np.any(enough):
        return weights
    variance = np.nanvar(matrix[enough], axis=1, ddof=1) / counts[enough]
    positive = variance[variance > 0]
    if positive.size == 0:
        weights[enough] = 1.0
        return weights
    floor = VARIANCE_FLOOR_FRACTION * float(np.median(positive))
    weights[enough] = 1.0 / np.maximum(variance, floor)
    return weights


def _interval_with_infinity(values: NDArray[np.float64], level: float) -> tuple[float, float]:
    """The percentile interval of ``percentile_interval`` (numpy's linear interpolation), but with
    +inf replicates (no finite peak) ranked above every finite one instead of dropped: a bound
    that falls among or next to them is +inf."""
    array = np.sort(values[~np.isnan(values)])
    if array.size == 0:
        return (math.nan, math.nan)
    if np.all(np.isfinite(array)):
        return percentile_interval(array, level)
    tail = (1.0 - level) / 2.0
    bounds = []
    for q in (tail, 1.0 - tail):
        position = q * (array.size - 1)
        below, above = array[math.floor(position)], array[math.ceil(position)]
        if not np.isfinite(above):
            bounds.append(math.inf)
        else:
            bounds.append(float(below + (position - math.floor(position)) * (above - below)))
    return (bounds[0], bounds[1])


def bootstrap_gao(
    kl_per_point: ArrayLike,
    rewards: NDArray[np.float64],
    form: Form,
    weights: ArrayLike | None = None,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
    kl_per_prompt: NDArray[np.float64] | None = None,
) -> GaoFitResult:
    """Fit the form to each point's mean reward over prompts, with percentile intervals from
    refitting on prompt-bootstrap replicates (the same resampled prompts at every point).

    ``kl_per_point`` (K,) is each point's KL in nats, ``rewards`` (K, P) the per-prompt normalized
    rewards (NaN = missing; only prompts finite at every point are used, as everywhere in paired
    statistics). With ``kl_per_prompt`` (K, P), each replicate's d is the square root of the mean
    KL over its prompts (``kl_per_point`` still gives the point fit's d); otherwise d is fixed.
    KL below 0 (estimator noise) counts as 0. The reward–d fit treats d as exact.

    ``weights`` None uses :func:`inverse_variance_weights` of the reward matrix: the WLS
    estimate that is efficient when each point's mean has independent noise of that variance. The
    weights are computed once from the full sample and held fixed in every replicate, so the
    interval reflects the estimate's spread, not a re-chosen weighting.

    The peak is resolved when β̂ > 0, β's interval lies above 0 and d* is inside [min d>0, max d].
    """
    form = _check_form(form)
    matrix = np.atleast_2d(np.asarray(rewards, dtype=np.float64))
    kl = np.asarray(kl_per_point, dtype=np.float64)
    if matrix.ndim != 2 or kl.shape != (matrix.shape[0],):
        raise ValueError(f"kl_per_point {kl.shape} must have one value per row of rewards {matrix.shape}")
    if not np.all(np.isfinite(kl)):
        raise ValueError("kl_per_point must be finite")
    mask = complete_prompts(matrix)
    kl_matrix: NDArray[np.float64] | None = None
    if kl_per_prompt is not None:
        kl_matrix = np.asarray(kl_per_prompt, dtype=np.float64)
        if kl_matrix.shape != matrix.shape:
            raise ValueError(f"kl_per_prompt {kl_matrix.shape} must match rewards {matrix.shape}")
        mask &= complete_prompts(kl_matrix)
    n_prompts = int(mask.sum())
    if n_prompts < 2:
        raise ValueError("the bootstrap needs at least two prompts finite at every point")
    values = matrix[:, mask]
    if weights is None:
        w = inverse_variance_weights(values)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != kl.shape:
            raise ValueError(f"weights {w.shape} must have one value per point {kl.shape}")

    distance = np.sqrt(np.maximum(kl, 0.0))
    fit = fit_gao(distance, values.mean(axis=1), form, w)

    if kl_matrix is not None:
        reward_means, kl_means = resampled_means([values, kl_matrix[:, mask]], replicates, seed)
        replicate_distance = np.sqrt(np.maximum(kl_means, 0.0))
    else:
        (reward_means,) = resampled_means([values], replicates, seed)
        replicate_distance = np.broadcast_to(distance, reward_means.shape)
    estimates = np.full((replicates, 5), np.nan)
    failed = 0
    for b in range(replicates):
        try:
            refit = fit_gao(replicate_distance[b], reward_means[b], form, w)
        except ValueError:
            failed += 1
            continue
        estimates[b] = (refit.alpha, refit.beta, refit.d_star, refit.kl_star, refit.r_star)

    fitted = estimates[~np.isnan(estimates[:, 0])]
    peaks = fitted[:, 2]
    no_peak_fraction = float(np.mean(~((peaks > 0) & np.isfinite(peaks)))) if fitted.size else math.nan
    alpha_ci = percentile_interval(fitted[:, 0], level)
    beta_ci = percentile_interval(fitted[:, 1], level)
    d_star_ci, kl_star_ci, r_star_ci = (_interval_with_infinity(fitted[:, column], level) for column in (2, 3, 4))

    observed = distance[(distance > 0) & np.isfinite(values.mean(axis=1))]
    d_range = (float(observed.min()), float(observed.max())) if observed.size else (math.nan, math.nan)
    reasons = []
    if fit.beta <= 0:
        reasons.append(f"fitted beta = {fit.beta:.3g} <= 0, so the fitted curve does not turn over")
    elif not beta_ci[0] > 0:
        reasons.append(f"the {level:.0%} interval of beta [{beta_ci[0]:.3g}, {beta_ci[1]:.3g}] includes 0")
    if fit.beta > 0 and not d_range[0] <= fit.d_star <= d_range[1]:
        reasons.append(
            f"d* = {fit.d_star:.3g} lies outside the observed range of d [{d_range[0]:.3g}, {d_range[1]:.3g}]"
        )
    reason = "peak not resolved: " + "; ".join(reasons) if reasons else "peak resolved"

    return GaoFitResult(
        fit=fit,
        alpha_ci=alpha_ci,
        beta_ci=beta_ci,
        d_star_ci=d_star_ci,
        kl_star_ci=kl_star_ci,
        r_star_ci=r_star_ci,
        level=level,
        replicates=replicates,
        seed=seed,
        n_prompts=n_prompts,
        weights=tuple(float(x) for x in w),
        d_range=d_range,
        no_peak_fraction=no_peak_fraction,
        failed_replicates=failed,
        peak_resolved=not reasons,
        reason=reason,
    )
