"""Gao et al. (2022) fits: exact recovery, WLS against the normal equations, bootstrap coverage on
synthetic per-prompt data from known (α, β), and the "peak not resolved" cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlhf_eval.analysis.fits import (
    Form,
    GaoFitResult,
    bootstrap_gao,
    design_matrix,
    fit_gao,
    gao_peak,
    gao_reward,
    inverse_variance_weights,
)

KL = np.array([0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 6.0, 9.0, 12.0, 16.0])
D = np.sqrt(KL)


def synthetic(
    form: Form, alpha: float, beta: float, prompts: int, seed: int, noise: float = 0.5, spread: float = 0.3
) -> np.ndarray:
    """(K, P) rewards whose mean over prompts follows the form at (α, β): each prompt has its own
    α_p = α + spread·N(0, 1) (shared by every point, so points are correlated through prompts) and
    each (point, prompt) gets noise·d·N(0, 1), so the reference row is exactly 0."""
    rng = np.random.default_rng(seed)
    alpha_p = alpha + spread * rng.normal(size=prompts)
    if form == "bon":
        second = D**2
    else:
        second = np.where(D > 0, D * np.log(np.where(D > 0, D, 1.0)), 0.0)
    mean_part = D[:, None] * alpha_p[None, :] - beta * second[:, None]
    return mean_part + noise * D[:, None] * rng.normal(size=(KL.size, prompts))


def covers(interval: tuple[float, float], value: float) -> bool:
    return interval[0] <= value <= interval[1]


@pytest.mark.parametrize(("form", "alpha", "beta"), [("bon", 1.0, 0.25), ("bon", 0.7, 0.1), ("rl", 1.0, 0.5)])
def test_exact_recovery_without_noise(form: Form, alpha: float, beta: float) -> None:
    reward = alpha * D - beta * (D**2 if form == "bon" else np.where(D > 0, D * np.log(np.where(D > 0, D, 1)), 0))
    fit = fit_gao(D, reward, form)
    assert fit.alpha == pytest.approx(alpha, abs=1e-10)
    assert fit.beta == pytest.approx(beta, abs=1e-10)
    assert fit.weighted_rss == pytest.approx(0.0, abs=1e-18)
    assert fit.n_points == KL.size - 1  # the d = 0 point is used but carries nothing
    if form == "bon":
        d_star = alpha / (2 * beta)
        r_star = alpha**2 / (4 * beta)
    else:
        d_star = math.exp(alpha / beta - 1)
        r_star = beta * d_star
    assert fit.d_star == pytest.approx(d_star)
    assert fit.kl_star == pytest.approx(d_star**2)
    assert fit.r_star == pytest.approx(r_star)
    assert fit.has_peak
    # The peak is the maximum of the curve: a grid search finds the same place.
    grid = np.linspace(1e-6, 3 * d_star, 300_001)
    values = gao_reward(grid, alpha, beta, form)
    assert grid[np.argmax(values)] == pytest.approx(d_star, rel=1e-4)
    assert values.max() == pytest.approx(r_star, rel=1e-8)


def test_design_columns_and_zero_distance() -> None:
    assert design_matrix([0.0, 2.0], "bon").tolist() == [[0.0, -0.0], [2.0, -4.0]]
    x = design_matrix([0.0, math.e], "rl")
    assert x[0].tolist() == [0.0, 0.0]
    assert x[1].tolist() == pytest.approx([math.e, -math.e])
    # Adding or removing the reference point (d = 0, R = 0) changes nothing, whatever its weight.
    reward = gao_reward(D, 1.0, 0.25, "bon") + np.random.default_rng(0).normal(0, 0.05, D.size)
    with_zero = fit_gao(D, reward, "bon", weights=np.r_[1e9, np.ones(D.size - 1)])
    without = fit_gao(D[1:], reward[1:], "bon")
    assert with_zero.alpha == pytest.approx(without.alpha, rel=1e-12)
    assert with_zero.beta == pytest.approx(without.beta, rel=1e-12)


def test_weighted_least_squares_matches_normal_equations() -> None:
    rng = np.random.default_rng(1)
    for form in ("bon", "rl"):
        reward = gao_reward(D, 0.9, 0.3, form) + rng.normal(0, 0.2, D.size)
        weights = rng.uniform(0.1, 5.0, D.size)
        # Normal equations of min Σ w (R − α x1 − β x2)², written out for the 2 × 2 case:
        #   [Σ w x1²   Σ w x1 x2] [α]   [Σ w x1 R]
        #   [Σ w x1 x2 Σ w x2²  ] [β] = [Σ w x2 R]
        x1 = D
        x2 = -(D**2) if form == "bon" else -np.where(D > 0, D * np.log(np.where(D > 0, D, 1)), 0)
        a11, a12, a22 = np.sum(weights * x1 * x1), np.sum(weights * x1 * x2), np.sum(weights * x2 * x2)
        b1, b2 = np.sum(weights * x1 * reward), np.sum(weights * x2 * reward)
        det = a11 * a22 - a12**2
        alpha = (a22 * b1 - a12 * b2) / det
        beta = (a11 * b2 - a12 * b1) / det
        fit = fit_gao(D, reward, form, weights)
        assert fit.alpha == pytest.approx(alpha, rel=1e-10)
        assert fit.beta == pytest.approx(beta, rel=1e-10)
        residuals = reward - alpha * x1 - beta * x2
        assert fit.residuals == pytest.approx(residuals.tolist(), abs=1e-10)
        assert fit.weighted_rss == pytest.approx(np.sum(weights * residuals**2), rel=1e-10)
        # Unweighted is every weight 1; uniform scaling of the weights changes nothing.
        assert fit_gao(D, reward, form, 7.0 * weights).alpha == pytest.approx(alpha, rel=1e-10)
        plain = np.linalg.lstsq(np.column_stack([x1, x2]), reward, rcond=None)[0]
        assert [fit_gao(D, reward, form).alpha, fit_gao(D, reward, form).beta] == pytest.approx(plain)


def test_missing_and_zero_weight_points_are_left_out() -> None:
    reward = gao_reward(D, 1.0, 0.25, "bon")
    reward[4] = np.nan
    weights = np.ones(D.size)
    weights[6] = 0.0
    reward[6] = 100.0  # would ruin the fit if it counted
    fit = fit_gao(D, reward, "bon", weights)
    assert (fit.alpha, fit.beta) == pytest.approx((1.0, 0.25))
    assert fit.n_points == D.size - 3
    assert math.isnan(fit.residuals[4]) and math.isnan(fit.residuals[6])


def test_degenerate_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="distinct d > 0"):
        fit_gao([0.0, 1.0, 1.0], [0.0, 0.5, 0.6], "bon")
    with pytest.raises(ValueError, match="sqrt"):
        fit_gao([-1.0, 1.0, 2.0], [0.0, 0.5, 0.6], "bon")
    with pytest.raises(ValueError, match="form"):
        fit_gao([1.0, 2.0], [0.5, 0.6], "ppo")  # type: ignore[arg-type]


def test_no_peak_conventions() -> None:
    assert gao_peak(1.0, -0.2, "bon") == (math.inf, math.inf, math.inf)
    assert gao_peak(1.0, -0.2, "rl") == (math.inf, math.inf, math.inf)
    assert gao_peak(1.0, 0.0, "rl") == (math.inf, math.inf, math.inf)
    assert gao_peak(-1.0, 0.0, "bon") == (0.0, 0.0, 0.0)
    assert gao_peak(-1.0, 0.5, "bon") == (0.0, 0.0, 0.0)  # stationary point at d = -1
    assert gao_peak(1.0, 1e-4, "rl") == (math.inf, math.inf, math.inf)  # exp(1e4 − 1) overflows
    assert gao_peak(-1.0, 0.5, "rl")[0] == pytest.approx(math.exp(-3))  # RL always peaks for β > 0
    fit = fit_gao(D, 0.8 * D + 0.01 * D**2, "bon")
    assert fit.beta < 0 and not fit.has_peak and fit.d_star == math.inf


def test_inverse_variance_weights() -> None:
    rng = np.random.default_rng(2)
    matrix = rng.normal(size=(3, 50)) * np.array([[0.0], [1.0], [2.0]])
    matrix[2, :10] = np.nan
    weights = inverse_variance_weights(matrix)
    variance_1 = np.var(matrix[1], ddof=1) / 50
    variance_2 = np.nanvar(matrix[2], ddof=1) / 40
    floor = 0.01 * np.median([variance_1, variance_2])
    assert weights.tolist() == pytest.approx([1 / floor, 1 / variance_1, 1 / variance_2])
    assert inverse_variance_weights(np.zeros((2, 5))).tolist() == [1.0, 1.0]


@pytest.mark.parametrize(("form", "alpha", "beta"), [("bon", 1.0, 0.25), ("rl", 1.0, 0.5)])
def test_bootstrap_recovers_known_parameters(form: Form, alpha: float, beta: float) -> None:
    rewards = synthetic(form, alpha, beta, prompts=300, seed=11)
    result = bootstrap_gao(KL, rewards, form, replicates=800, seed=3)
    d_star, kl_star, r_star = gao_peak(alpha, beta, form)
    assert result.fit.alpha == pytest.approx(alpha, abs=0.08)
    assert result.fit.beta == pytest.approx(beta, abs=0.05)
    assert result.fit.d_star == pytest.approx(d_star, rel=0.15)
    assert covers(result.alpha_ci, alpha)
    assert covers(result.beta_ci, beta)
    assert covers(result.d_star_ci, d_star)
    assert covers(result.kl_star_ci, kl_star)
    assert covers(result.r_star_ci, r_star)
    assert result.alpha_ci[0] < result.fit.alpha < result.alpha_ci[1]
    assert result.peak_resolved, result.reason
    assert result.reason == "peak resolved"
    assert result.n_prompts == 300
    assert result.no_peak_fraction == 0.0 and result.failed_replicates == 0
    assert result.d_range == (0.5, 4.0)
    # The reference row has no spread: its weight is the floored one, the largest.
    assert result.weights[0] == max(result.weights)


def test_bootstrap_is_reproducible_and_replicates_are_paired() -> None:
    rewards = synthetic("bon", 1.0, 0.25, prompts=60, seed=4)
    first = bootstrap_gao(KL, rewards, "bon", replicates=200, seed=9)
    assert first == bootstrap_gao(KL, rewards, "bon", replicates=200, seed=9)
    assert first.alpha_ci != bootstrap_gao(KL, rewards, "bon", replicates=200, seed=10).alpha_ci
    # Paired resampling: with rewards that are one per-prompt factor times a fixed curve, every
    # replicate's point means are proportional to the curve, so every refit has the same d*.
    factor = 1.0 + 0.5 * np.random.default_rng(5).normal(size=60)
    proportional = gao_reward(D, 1.0, 0.25, "bon")[:, None] * factor[None, :]
    result = bootstrap_gao(KL, proportional, "bon", weights=np.ones(KL.size), replicates=200)
    assert result.d_star_ci == pytest.approx((2.0, 2.0))
    assert result.beta_ci[1] - result.beta_ci[0] > 0.01


def test_missing_prompts_and_explicit_weights() -> None:
    rewards = synthetic("rl", 1.0, 0.5, prompts=120, seed=6)
    rewards[3, :20] = np.nan
    result = bootstrap_gao(KL, rewards, "rl", replicates=200)
    assert result.n_prompts == 100  # prompts missing at any point are left out everywhere
    expected = fit_gao(D, rewards[:, 20:].mean(axis=1), "rl", inverse_variance_weights(rewards[:, 20:]))
    assert (result.fit.alpha, result.fit.beta) == pytest.approx((expected.alpha, expected.beta), rel=1e-12)
    unweighted = bootstrap_gao(KL, rewards, "rl", weights=np.ones(KL.size), replicates=200)
    plain = fit_gao(D, rewards[:, 20:].mean(axis=1), "rl")
    assert (unweighted.fit.alpha, unweighted.fit.beta) == pytest.approx((plain.alpha, plain.beta), rel=1e-12)
    assert unweighted.weights == (1.0,) * KL.size


def test_per_prompt_kl_moves_the_distances() -> None:
    rewards = synthetic("bon", 1.0, 0.25, prompts=200, seed=7)
    rng = np.random.default_rng(8)
    kl_per_prompt = KL[:, None] * rng.exponential(size=(KL.size, 200))  # mean KL ≈ KL, spread per prompt
    kl_point = kl_per_prompt.mean(axis=1)
    fixed = bootstrap_gao(kl_point, rewards, "bon", replicates=400)
    moving = bootstrap_gao(kl_point, rewards, "bon", replicates=400, kl_per_prompt=kl_per_prompt)
    assert moving.fit == fixed.fit  # the point fit uses kl_per_point either way
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(moving.kl_star_ci) > width(fixed.kl_star_ci)  # KL noise adds to KL*'s uncertainty
    assert covers(moving.kl_star_ci, 4.0)


def test_monotone_data_do_not_resolve_a_peak() -> None:
    for form in ("bon", "rl"):
        rewards = synthetic(form, 1.0, 0.0, prompts=300, seed=12)  # R = α d: rising throughout
        result = bootstrap_gao(KL, rewards, form, replicates=600)
        assert result.beta_ci[0] < 0 < result.beta_ci[1]
        assert not result.peak_resolved
        assert result.reason.startswith("peak not resolved: ")
        assert "beta" in result.reason
        assert result.no_peak_fraction > 0.2
        assert result.d_star_ci[1] == math.inf  # replicates without a peak rank above every finite d*


def test_peak_beyond_the_data_is_not_resolved() -> None:
    # β clearly > 0 but the peak d* = α / (2β) = 10 lies past the largest observed d = 4.
    rewards = synthetic("bon", 1.0, 0.05, prompts=300, seed=13, noise=0.1, spread=0.05)
    result = bootstrap_gao(KL, rewards, "bon", replicates=600)
    assert result.beta_ci[0] > 0
    assert result.fit.d_star > 4.0
    assert not result.peak_resolved
    assert "outside the observed range of d [0.5, 4]" in result.reason
    assert "interval of beta" not in result.reason


def test_result_type_and_input_checks() -> None:
    rewards = synthetic("bon", 1.0, 0.25, prompts=20, seed=0)
    assert isinstance(bootstrap_gao(KL, rewards, "bon", replicates=50), GaoFitResult)
    with pytest.raises(ValueError, match="one value per row"):
        bootstrap_gao(KL[:-1], rewards, "bon", replicates=50)
    with pytest.raises(ValueError, match="kl_per_prompt"):
        bootstrap_gao(KL, rewards, "bon", replicates=50, kl_per_prompt=np.ones((2, 20)))
    with pytest.raises(ValueError, match="two prompts"):
        bootstrap_gao(KL, rewards[:, :1], "bon", replicates=50)
