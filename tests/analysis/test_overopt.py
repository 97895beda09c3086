"""The verdict of a run against synthetic curves whose answer is known, and against an independent
recomputation of each bootstrap statistic with the same replicate draws."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf_eval.analysis.curves import Curve
from rlhf_eval.analysis.overopt import analyze_curve, slope
from rlhf_eval.analysis.resample import prompt_resamples


def make_curve(
    gold_means: list[float],
    kls: list[float],
    *,
    prompts: int = 300,
    noise: float = 0.5,
    seed: int = 0,
    proxy_means: list[float] | None = None,
    kind: str = "rl",
) -> Curve:
    """A run whose point k has per-prompt gold = prompt effect + gold_means[k] + noise, KL kls[k]."""
    rng = np.random.default_rng(seed)
    effect = rng.normal(0.0, 1.0, size=prompts)
    gold = np.stack([effect + m + rng.normal(0, noise, size=prompts) for m in gold_means])
    gold[0] = effect  # the reference
    proxy_means = proxy_means or [float(k) for k in kls]
    proxy = np.stack([effect + m + rng.normal(0, noise, size=prompts) for m in proxy_means])
    proxy[0] = effect
    kl = np.stack([np.full(prompts, k) for k in kls])
    labels = tuple(["reference", *[f"c{k}" for k in range(1, len(kls))]])
    return Curve(
        "r",
        "ppo",
        kind,
        labels,
        tuple(range(len(kls))),
        kl,
        {"gold": gold, "proxy": proxy},
        {"gold": 2.0, "proxy": 1.0},
    )


def test_a_rise_then_fall_is_overoptimized_with_the_peak_inside() -> None:
    curve = make_curve([0.0, 1.0, 2.0, 1.0, 0.0], [0.0, 1.0, 4.0, 9.0, 16.0], proxy_means=[0, 1, 2, 3, 4])
    result = analyze_curve(curve, replicates=500)
    assert result.peak.label == "c2"
    assert result.overoptimized and result.last.past_peak
    # gold at the peak is 2 raw units = 1 reference sd above the reference; the last is back at 0
    assert result.peak.gold_norm.estimate == pytest.approx(1.0, abs=0.05)
    assert result.gold_drop.estimate == pytest.approx(1.0, abs=0.05)
    assert result.gold_drop.low > 0.8
    assert result.diverging  # proxy slope > 0, gold slope < 0 after the peak, both significant
    assert result.proxy_slope_after_peak.low > 0 and result.gold_slope_after_peak.high < 0
    assert result.points[2].prob_best > 0.99
    assert result.early_warning and result.gold_falling
    assert "over-optimized" in result.evidence and "c2" in result.evidence


def test_a_steady_rise_is_not_overoptimized_and_raises_no_warning() -> None:
    curve = make_curve([0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 4.0, 9.0, 16.0])
    result = analyze_curve(curve, replicates=500)
    assert result.peak is result.last and not result.overoptimized
    assert not any(p.past_peak for p in result.points)
    assert not result.early_warning and not result.diverging
    assert result.points[-1].prob_best > 0.99
    assert "not over-optimized" in result.evidence


def test_a_noisy_plateau_is_not_significant() -> None:
    curve = make_curve([0.0, 1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 2.0, 3.0, 4.0], noise=1.0, prompts=40)
    result = analyze_curve(curve, replicates=500)
    assert not result.overoptimized
    assert result.gold_drop.low <= 0
    # probability of being best is spread over the plateau
    assert max(p.prob_best for p in result.points[1:]) < 0.9


def test_bootstrap_statistics_match_an_independent_recomputation() -> None:
    curve = make_curve([0.0, 2.0, 1.0, 0.5], [0.0, 1.0, 4.0, 9.0], prompts=50, noise=1.0)
    replicates, seed = 300, 7
    result = analyze_curve(curve, replicates=replicates, seed=seed, fit=False)
    gold = (curve.metrics["gold"] - curve.metrics["gold"][0]) / 2.0
    idx = prompt_resamples(50, replicates, seed)
    means = np.stack([gold[:, row].mean(axis=1) for row in idx])  # (B, K), a loop instead of fancy indexing
    # prob best: share of replicates whose argmax is each point
    counts = np.bincount(means.argmax(axis=1), minlength=4) / replicates
    assert [p.prob_best for p in result.points] == pytest.approx(counts.tolist())
    # past-the-peak for the last point: max over earlier points inside each replicate
    drops = means[:, :3].max(axis=1) - means[:, 3]
    low, high = np.percentile(drops, [2.5, 97.5])
    assert (result.gold_drop.low, result.gold_drop.high) == pytest.approx((low, high))
    assert result.gold_drop.estimate == pytest.approx(gold[:3].mean(axis=1).max() - gold[3].mean())
    # the max inside each replicate is at least the fixed-peak difference (winner's curse)
    fixed = means[:, 1] - means[:, 3]
    assert np.all(drops >= fixed - 1e-12)
    # proxy gain after the peak, fixed peak index
    proxy = curve.metrics["proxy"] - curve.metrics["proxy"][0]
    gain = np.array([proxy[3, row].mean() - proxy[1, row].mean() for row in idx])
    assert (result.proxy_gain_after_peak.low, result.proxy_gain_after_peak.high) == pytest.approx(
        tuple(np.percentile(gain, [2.5, 97.5]))
    )


def test_prompts_missing_at_some_point_are_left_out_and_noted() -> None:
    curve = make_curve([0.0, 1.0, 2.0], [0.0, 1.0, 2.0], prompts=20)
    curve.metrics["gold"][1, :5] = np.nan
    result = analyze_curve(curve, replicates=200, fit=False)
    assert result.n_prompts == 15
    assert any("5 of 20 prompts" in note for note in result.notes)


def test_a_reference_without_spread_gives_nan_normalized_values() -> None:
    curve = make_curve([0.0, 1.0, 2.0], [0.0, 1.0, 2.0], prompts=10)
    flat = Curve(
        curve.run,
        curve.method,
        curve.kind,
        curve.labels,
        curve.steps,
        curve.kl,
        curve.metrics,
        {"gold": 0.0, "proxy": 1.0},
    )
    assert np.isnan(flat.normalized("gold")).all()
    with pytest.raises(ValueError, match="no prompt"):
        analyze_curve(flat, replicates=200)


def test_one_point_is_an_error() -> None:
    curve = make_curve([0.0], [0.0], prompts=5)
    with pytest.raises(ValueError, match="needs the reference and one more"):
        analyze_curve(curve)


def test_slope_is_least_squares() -> None:
    x = np.array([0.0, 1.0, 2.0, 4.0])
    y = np.array([1.0, 2.0, 2.5, 5.0])
    assert float(slope(x, y)) == pytest.approx(np.polyfit(x, y, 1)[0])
    assert np.isnan(slope(np.array([1.0, 1.0]), np.array([0.0, 1.0])))


def test_the_gao_fit_is_attached_for_the_run_kind() -> None:
    d = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    alpha, beta = 1.0, 0.4  # best-of-n: R = d(alpha - beta d), peak at d* = 1.25
    means = (d * (alpha - beta * d)).tolist()
    curve = make_curve([2.0 * m for m in means], (d**2).tolist(), prompts=400, noise=0.3, kind="bon")
    result = analyze_curve(curve, replicates=300)
    assert result.fit is not None and result.fit.fit.form == "bon"
    low, high = result.fit.d_star_ci
    assert low < 1.25 < high
