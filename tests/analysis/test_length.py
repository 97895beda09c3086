"""Length-debiased reward and the share of a gain explained by length, against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf_eval.analysis.length import (
    bucket_edges,
    bucket_means,
    bucket_of,
    debiased_mean,
    fit_log_length,
    length_explained_share,
)


def test_fit_recovers_a_log_length_law() -> None:
    lengths = np.arange(0, 200)
    reward = 0.5 + 2.0 * np.log1p(lengths)
    fit = fit_log_length(reward, lengths)
    assert (fit.intercept, fit.slope) == pytest.approx((0.5, 2.0))
    # a checkpoint that only grew longer has no debiased gain
    longer = np.arange(100, 300)
    assert debiased_mean(fit, float(np.mean(0.5 + 2.0 * np.log1p(longer))), float(np.mean(np.log1p(longer)))) == (
        pytest.approx(0.0, abs=1e-12)
    )


def test_fit_matches_numpy_least_squares_and_skips_nan() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 80, size=300).astype(float)
    reward = rng.normal(size=300) + 0.3 * np.log1p(lengths)
    reward[:10] = np.nan
    fit = fit_log_length(reward, lengths)
    slope, intercept = np.polyfit(np.log1p(lengths[10:]), reward[10:], 1)
    assert (fit.intercept, fit.slope, fit.n_samples) == pytest.approx((intercept, slope, 290))


def test_one_length_has_no_slope() -> None:
    assert fit_log_length([1.0, 3.0], [5, 5]).slope == 0.0
    with pytest.raises(ValueError, match="no reference sample"):
        fit_log_length([np.nan], [1])


def test_buckets_at_reference_quantiles() -> None:
    edges = bucket_edges(np.arange(1, 101), 4)  # quartile edges 25.75, 50.5, 75.25
    assert edges == pytest.approx([25.75, 50.5, 75.25])
    assert bucket_of([1, 25.75, 60, 100], edges).tolist() == [0, 1, 2, 3]
    assert bucket_edges([3, 3, 3, 3], 4) == [3.0]  # ties merge buckets
    means = bucket_means([1.0, 2.0, 3.0, np.nan], [1, 2, 90, 95], edges)
    assert means[0] == 1.5 and np.isnan(means[1]) and np.isnan(means[2]) and means[3] == 3.0


def test_explained_share_by_direct_standardization() -> None:
    # reference: half short (gold 1), half long (gold 3); checkpoint: 80% long, gold 3.4 on average
    ref_shares, shares, ref_gold = np.array([0.5, 0.5]), np.array([0.2, 0.8]), np.array([1.0, 3.0])
    gain = 3.4 - 2.0
    explained, share = length_explained_share(shares, ref_shares, ref_gold, gain)
    assert explained == pytest.approx(0.3 * 2.0)  # (-0.3)(1) + (0.3)(3)
    assert share == pytest.approx(0.6 / 1.4)
    assert np.isnan(length_explained_share(shares, ref_shares, ref_gold, 0.0)[1])


def test_unreached_buckets_take_the_nearest_reference_value() -> None:
    explained, _ = length_explained_share(
        np.array([0.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.0]), np.array([1.0, 2.0, np.nan]), 1.0
    )
    assert explained == pytest.approx(-0.5 - 1.0 + 2.0)  # the empty bucket counts as its neighbour's 2.0
