"""Where did gold reward peak, and is a checkpoint past it? The verdict of one run.

Everything here is computed from a ``Curve`` (per-prompt values, reference first, training order)
with one paired bootstrap over prompts (``rlhf_eval.analysis.resample``): each replicate draws P
prompts with replacement and every point is averaged over the same draw. Gold and proxy are the
normalized values (reference at 0, in reference standard deviations; Gao et al. 2022).

- **Probability of being the best**: the share of replicates in which a point has the highest
  mean gold (bootstrap argmax).
- **Past the peak** (point k ≥ 1): D_k = max_{j<k} mean gold_j − mean gold_k. The maximum is taken
  inside each replicate, so the interval carries the uncertainty of which earlier point was best
  (the winner's curse: the peak is chosen on the same prompts it is measured on; DESIGN.md,
  "Statistics"). A point is past the peak when the interval's lower end is above 0; the run is
  **over-optimized** when its last point is.
- **Divergence**: after the peak, the least-squares slopes of mean proxy and mean gold over
  d = sqrt(KL) (KL resampled with the prompts); proxy rising while gold falls, each with its
  interval, is the Goodhart signature.
- **Early warning**: the gold slope over the last ``k`` points; it fires when the slope's lower
  bound is below 0, i.e. gold is no longer significantly rising. It needs no peak, so a watcher can
  act on it during training; a significantly falling gold (upper bound below 0) is reported too.
- **Gao fit** of gold against d (``rlhf_eval.analysis.fits``): best-of-n R = d(α − βd), RL
  R = d(α − β log d), with the peak d* and its interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rlhf_eval.analysis.curves import Curve, nanmean_rows
from rlhf_eval.analysis.resample import (
    DEFAULT_LEVEL,
    DEFAULT_REPLICATES,
    DEFAULT_SEED,
    complete_prompts,
    percentile_interval,
    resampled_means,
)

#: Points in the early-warning slope unless said otherwise.
EARLY_WARNING_POINTS = 3


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float

    @classmethod
    def missing(cls) -> Interval:
        return cls(float("nan"), float("nan"), float("nan"))

    def excludes_zero_above(self) -> bool:
        """The whole interval is above 0."""
        return bool(self.low > 0)

    def excludes_zero_below(self) -> bool:
        """The whole interval is below 0."""
        return bool(self.high < 0)

    def as_dict(self, prefix: str) -> dict[str, float]:
        return {prefix: self.estimate, f"{prefix}_ci_low": self.low, f"{prefix}_ci_high": self.high}


@dataclass(frozen=True)
class PointAnalysis:
    """One point of a run: its KL, normalized rewards, and where it stands against the peak."""

    label: str
    step: int
    kl: float
    sqrt_kl: float
    proxy: float
    gold: float
    proxy_norm: Interval
    gold_norm: Interval
    prob_best: float
    drop_from_best: Interval  # max over earlier points − this point (NaN for the first point)
    past_peak: bool


@dataclass(frozen=True)
class RunAnalysis:
    """The verdict of one run with its evidence (see the module docstring)."""

    run: str
    method: str
    kind: str
    kl_estimator: str
    n_points: int
    n_prompts: int
    replicates: int
    seed: int
    points: list[PointAnalysis]
    peak: PointAnalysis
    last: PointAnalysis
    gold_drop: Interval
    proxy_gain_after_peak: Interval
    overoptimized: bool
    proxy_slope_after_peak: Interval
    gold_slope_after_peak: Interval
    diverging: bool
    early_warning_points: int
    gold_slope_recent: Interval
    early_warning: bool
    gold_falling: bool
    fit: Any = None  # rlhf_eval.analysis.fits.GaoFitResult, when a fit was possible
    notes: list[str] = field(default_factory=list)

    @property
    def evidence(self) -> str:
        """One line a person can read: the peak, the drop with its interval, the verdict."""
        drop = self.gold_drop
        if self.peak is self.last:
            head = f"gold peaks at the last point ({self.peak.label})"
        else:
            head = (
                f"gold peaks at {self.peak.label} (KL {self.peak.kl:.2f}); last point {self.last.label} is "
                f"{drop.estimate:+.2f} sd below the best earlier point [95% CI {drop.low:+.2f}, {drop.high:+.2f}]"
            )
        verdict = "over-optimized" if self.overoptimized else "not over-optimized"
        return f"{head}: {verdict}"


def slope(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Least-squares slope of y on x along the last axis (x and y broadcast; NaN with < 2 distinct x).

    >>> float(slope(np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0, 5.0])))
    2.0
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    sxx = (xc * xc).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sxx > 0, (xc * yc).sum(axis=-1) / np.where(sxx > 0, sxx, 1.0), np.nan)


def interval(estimate: float, replicates: NDArray[np.float64], level: float) -> Interval:
    low, high = percentile_interval(replicates, level)
    return Interval(float(estimate), low, high)


def analyze_curve(
    curve: Curve,
    *,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
    early_warning_points: int = EARLY_WARNING_POINTS,
    fit: bool = True,
) -> RunAnalysis:
    """The verdict of ``curve`` (at least 2 points: the reference and one more). Prompts missing
    gold, proxy or KL at any point are left out, so every point is compared on the same prompts."""
    if curve.n_points < 2:
        raise ValueError(f"run {curve.run!r}: {curve.n_points} point(s); the analysis needs the reference and one more")
    gold_n, proxy_n = curve.normalized("gold"), curve.normalized("proxy")
    keep = complete_prompts(np.vstack([gold_n, proxy_n, curve.kl]))
    notes = []
    if not keep.any():
        raise ValueError(f"run {curve.run!r}: no prompt has gold, proxy and KL at every point")
    if not keep.all():
        notes.append(f"{int((~keep).sum())} of {keep.size} prompts left out: missing at some point")
    gold_n, proxy_n, kl = gold_n[:, keep], proxy_n[:, keep], curve.kl[:, keep]
    gold_raw, proxy_raw = curve.metrics["gold"][:, keep], curve.metrics["proxy"][:, keep]
    n_points, n_prompts = gold_n.shape
    gold_b, proxy_b, kl_b = resampled_means([gold_n, proxy_n, kl], replicates, seed)
    d_b = np.sqrt(np.clip(kl_b, 0.0, None))
    gold_m, proxy_m = gold_n.mean(axis=1), proxy_n.mean(axis=1)
    kl_m = kl.mean(axis=1)
    d_m = np.sqrt(np.clip(kl_m, 0.0, None))

    best_counts = np.bincount(np.argmax(gold_b, axis=1), minlength=n_points)
    points = []
    for k in range(n_points):
        if k == 0:
            drop = Interval.missing()
        else:
            drop = interval(float(gold_m[:k].max() - gold_m[k]), gold_b[:, :k].max(axis=1) - gold_b[:, k], level)
        points.append(
            PointAnalysis(
                label=curve.labels[k],
                step=int(curve.steps[k]),
                kl=float(kl_m[k]),
                sqrt_kl=float(d_m[k]),
                proxy=float(proxy_raw[k].mean()),
                gold=float(gold_raw[k].mean()),
                proxy_norm=interval(float(proxy_m[k]), proxy_b[:, k], level),
                gold_norm=interval(float(gold_m[k]), gold_b[:, k], level),
                prob_best=float(best_counts[k] / replicates),
                drop_from_best=drop,
                past_peak=k > 0 and drop.excludes_zero_above(),
            )
        )
    peak_index = int(np.argmax(gold_m))
    peak, last = points[peak_index], points[-1]
    after = slice(peak_index, n_points)
    if n_points - peak_index >= 2:
        proxy_slope = interval(float(slope(d_m[after], proxy_m[after])), slope(d_b[:, after], proxy_b[:, after]), level)
        gold_slope = interval(float(slope(d_m[after], gold_m[after])), slope(d_b[:, after], gold_b[:, after]), level)
        gain = interval(float(proxy_m[-1] - proxy_m[peak_index]), proxy_b[:, -1] - proxy_b[:, peak_index], level)
    else:
        proxy_slope = gold_slope = Interval.missing()
        gain = Interval(0.0, 0.0, 0.0)
    recent = slice(max(0, n_points - max(2, early_warning_points)), n_points)
    gold_recent = interval(float(slope(d_m[recent], gold_m[recent])), slope(d_b[:, recent], gold_b[:, recent]), level)
    fit_result = None
    if fit:
        fit_result, fit_note = gao_fit(curve, kl, gold_n, replicates=replicates, seed=seed, level=level)
        if fit_note:
            notes.append(fit_note)
    return RunAnalysis(
        run=curve.run,
        method=curve.method,
        kind=curve.kind,
        kl_estimator=curve.kl_estimator,
        n_points=n_points,
        n_prompts=n_prompts,
        replicates=replicates,
        seed=seed,
        points=points,
        peak=peak,
        last=last,
        gold_drop=last.drop_from_best,
        proxy_gain_after_peak=gain,
        overoptimized=last.past_peak,
        proxy_slope_after_peak=proxy_slope,
        gold_slope_after_peak=gold_slope,
        diverging=proxy_slope.excludes_zero_above() and gold_slope.excludes_zero_below(),
        early_warning_points=recent.stop - recent.start,
        gold_slope_recent=gold_recent,
        early_warning=bool(gold_recent.low < 0),
        gold_falling=gold_recent.excludes_zero_below(),
        fit=fit_result,
        notes=notes,
    )


def gao_fit(
    curve: Curve, kl: NDArray[np.float64], gold: NDArray[np.float64], *, replicates: int, seed: int, level: float
) -> tuple[Any, str]:
    """The Gao et al. fit of normalized gold against sqrt(KL) for the run's kind, or (None, why not)."""
    from rlhf_eval.analysis.fits import bootstrap_gao

    positive = nanmean_rows(kl) > 0
    if int(positive.sum()) < 2:
        return None, "Gao fit skipped: fewer than 2 points with KL > 0"
    try:
        result = bootstrap_gao(
            nanmean_rows(kl),
            gold,
            form="bon" if curve.kind == "bon" else "rl",
            kl_per_prompt=kl if curve.kind == "rl" else None,
            replicates=replicates,
            seed=seed,
            level=level,
        )
    except ValueError as exc:
        return None, f"Gao fit failed: {exc}"
    return result, ""
