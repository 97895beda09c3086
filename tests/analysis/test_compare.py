"""Paired comparisons: Holm against hand arithmetic and brute force, the paired bootstrap against
known shifts, an independent unpaired interval, missing prompts and shared replicates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_eval.analysis.compare import MetricComparison, compare_metrics, holm, paired_bootstrap
from rlhf_eval.analysis.resample import percentile_interval, prompt_resamples


def holm_brute_force(p: list[float]) -> list[float]:
    """adjusted p_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j)), written as nested loops."""
    m = len(p)
    order = sorted(range(m), key=lambda k: p[k])
    adjusted = [0.0] * m
    for i in range(1, m + 1):
        adjusted[order[i - 1]] = max(min(1.0, (m - j + 1) * p[order[j - 1]]) for j in range(1, i + 1))
    return adjusted


def holm_rejects(p: list[float], alpha: float) -> set[int]:
    """Holm's step-down procedure itself: walk up the sorted p-values, rejecting while
    p_(j) ≤ α / (m − j + 1), and stop at the first that is not."""
    m = len(p)
    rejected: set[int] = set()
    for j, k in enumerate(sorted(range(m), key=lambda k: p[k]), start=1):
        if p[k] > alpha / (m - j + 1):
            break
        rejected.add(k)
    return rejected


def test_holm_hand_computed() -> None:
    # p = [0.01, 0.04, 0.03, 0.005], m = 4. Sorted: 0.005 (#4), 0.01 (#1), 0.03 (#3), 0.04 (#2).
    #   j=1: 4 × 0.005 = 0.02                  → 0.02
    #   j=2: 3 × 0.01  = 0.03, max(0.02, 0.03)  → 0.03
    #   j=3: 2 × 0.03  = 0.06, max(0.03, 0.06)  → 0.06
    #   j=4: 1 × 0.04  = 0.04, max(0.06, 0.04)  → 0.06 (monotone: never below an earlier step)
    # Back in input order: [0.03, 0.06, 0.06, 0.02].
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # Capped at 1: 3 × 0.5 = 1.5 → 1.
    assert holm([0.5, 0.6, 0.001]) == pytest.approx([1.0, 1.0, 0.003])
    assert holm([]) == []
    nan_kept = holm([0.01, float("nan"), 0.02])  # m = 2: NaN is not a tested hypothesis
    assert nan_kept[0] == pytest.approx(0.02) and math.isnan(nan_kept[1]) and nan_kept[2] == pytest.approx(0.02)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.5, 1.5])


@given(st.lists(st.floats(0.0, 1.0) | st.sampled_from([0.0, 0.01, 0.05, 1.0]), min_size=1, max_size=12))
@settings(max_examples=300, deadline=None)
def test_holm_matches_brute_force_and_the_procedure(p: list[float]) -> None:
    adjusted = holm(p)
    assert adjusted == pytest.approx(holm_brute_force(p), rel=1e-12, abs=1e-15)
    assert all(a >= x for a, x in zip(adjusted, p, strict=True))
    # Rejecting where the adjusted p-value is <= α is the step-down procedure (away from ties with
    # α, where the two computations may round differently).
    for alpha in (0.01, 0.05, 0.1, 0.25):
        rejected = holm_rejects(p, alpha)
        for k, a in enumerate(adjusted):
            if not math.isclose(a, alpha, rel_tol=1e-9):
                assert (k in rejected) == (a <= alpha)


def test_identical_arrays_give_zero() -> None:
    a = np.random.default_rng(0).normal(size=80)
    result = paired_bootstrap(a, a.copy(), replicates=500)
    assert result.delta == 0.0
    assert result.ci == (0.0, 0.0)
    assert result.p_greater == 1.0 and result.p_less == 1.0 and result.p_two_sided == 1.0
    assert result.n_prompts == 80 and result.n_dropped == 0 and result.replicates == 500


def test_known_shift() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=200)
    noise = rng.normal(0, 0.5, size=200)
    b = a + 0.3 + noise - noise.mean()  # mean(b − a) = 0.3 by construction
    result = paired_bootstrap(a, b, replicates=2000, seed=4)
    assert result.delta == pytest.approx(0.3, abs=1e-12)
    assert result.ci[0] < 0.3 < result.ci[1]
    # The percentile interval of a mean: about ±1.96 standard errors (sd 0.5 / sqrt(200)).
    assert result.ci[1] - result.ci[0] == pytest.approx(2 * 1.96 * 0.5 / math.sqrt(200), rel=0.15)
    assert result.p_greater == pytest.approx(1 / 2001)  # no replicate at or below 0
    assert result.p_less == 1.0
    assert result.p_two_sided == pytest.approx(2 / 2001)


def test_p_values_without_an_effect_are_near_one_half() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=400)
    noise = rng.normal(size=400)
    b = a + noise - noise.mean()  # Δ = 0 exactly, replicates scatter on both sides
    result = paired_bootstrap(a, b, replicates=2000)
    assert result.delta == pytest.approx(0.0, abs=1e-12)
    assert result.p_greater == pytest.approx(0.5, abs=0.05)
    assert result.p_less == pytest.approx(0.5, abs=0.05)
    assert result.p_greater + result.p_less == pytest.approx(1.0, abs=2 / 2001)  # ties at 0 aside
    assert result.p_two_sided > 0.9


def test_convention_counts_replicates_on_the_wrong_side() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=30)
    b = a + 0.1 + rng.normal(size=30)
    result = paired_bootstrap(a, b, replicates=300, seed=5)
    # Recompute the replicate deltas independently from the shared indices.
    indices = prompt_resamples(30, 300, 5)
    deltas = (b - a)[indices].mean(axis=1)
    assert result.p_greater == (1 + np.sum(deltas <= 0)) / 301
    assert result.p_less == (1 + np.sum(deltas >= 0)) / 301
    assert result.ci == pytest.approx(percentile_interval(deltas, 0.95))


def test_pairing_narrows_the_interval() -> None:
    rng = np.random.default_rng(4)
    prompts = 300
    difficulty = rng.normal(0, 2.0, size=prompts)  # shared by both checkpoints on a prompt
    a = difficulty + rng.normal(0, 0.2, size=prompts)
    b = difficulty + 0.1 + rng.normal(0, 0.2, size=prompts)
    paired = paired_bootstrap(a, b, replicates=2000, seed=6)
    # Unpaired interval, computed independently: resample a's and b's prompts separately.
    rng_a, rng_b = np.random.default_rng(100), np.random.default_rng(200)
    unpaired_deltas = b[rng_b.integers(0, prompts, size=(2000, prompts))].mean(axis=1) - a[
        rng_a.integers(0, prompts, size=(2000, prompts))
    ].mean(axis=1)
    low, high = np.percentile(unpaired_deltas, [2.5, 97.5])
    paired_width = paired.ci[1] - paired.ci[0]
    assert high - low > 5 * paired_width
    assert low < 0 < high  # unpaired: the 0.1 improvement is lost in the prompts' spread
    assert paired.ci[0] > 0  # paired: it is clear
    assert paired.p_greater < 0.01


def test_missing_prompts_are_dropped_and_counted() -> None:
    a = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    b = np.array([2.0, 3.0, 3.0, np.nan, np.inf, 8.0])
    result = paired_bootstrap(a, b, replicates=400)
    assert result.n_prompts == 3 and result.n_dropped == 3
    assert result.delta == pytest.approx((1.0 + 1.0 + 2.0) / 3)
    assert 1.0 <= result.ci[0] <= result.ci[1] <= 2.0
    # A replicate drawing only missing prompts has no Δ* and is left out of the count.
    indices = prompt_resamples(6, 400, 0)
    usable = np.isin(indices, [0, 1, 5]).any(axis=1).sum()
    assert result.replicates == usable
    with pytest.raises(ValueError, match="finite in both"):
        paired_bootstrap([np.nan, 1.0], [1.0, np.nan], replicates=10)
    with pytest.raises(ValueError, match="one value per prompt"):
        paired_bootstrap([1.0, 2.0], [1.0], replicates=10)


def test_same_seed_same_result() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    assert paired_bootstrap(a, b, seed=7).ci != paired_bootstrap(a, b, seed=8).ci


def test_compare_metrics_shares_replicates_and_adjusts() -> None:
    rng = np.random.default_rng(6)
    prompts = 200
    base = rng.normal(size=prompts)
    metrics = {
        "gold": (base, base + 0.5 + rng.normal(0, 0.3, prompts)),  # clearly up, higher is better
        "refusal": (base, base + 0.4 + rng.normal(0, 0.3, prompts)),  # clearly up, lower is better
        "length": (base, base + 0.3 + rng.normal(0, 0.3, prompts)),  # clearly up, direction not given
        "noise": (base, base + rng.normal(0, 0.3, prompts) + 0.005),  # nothing
    }
    rows = compare_metrics(metrics, {"gold": True, "refusal": False, "noise": True}, replicates=1000, seed=3)
    assert [row.metric for row in rows] == list(metrics)
    assert all(isinstance(row, MetricComparison) for row in rows)
    by_name = {row.metric: row for row in rows}
    # Each metric's result is exactly the single-metric bootstrap with the same seed: same indices.
    for name, (a, b) in metrics.items():
        assert by_name[name].paired == paired_bootstrap(a, b, replicates=1000, seed=3)
    assert [row.p_adjusted for row in rows] == pytest.approx(holm([row.p_value for row in rows]))
    assert [row.p_value for row in rows] == [row.paired.p_two_sided for row in rows]
    assert (by_name["gold"].verdict, by_name["gold"].improvement) == ("improved", True)
    assert (by_name["refusal"].verdict, by_name["refusal"].improvement) == ("regressed", False)
    assert (by_name["length"].verdict, by_name["length"].improvement) == ("increased", None)
    assert by_name["length"].higher_is_better is None
    noise = by_name["noise"]
    assert not noise.significant and noise.improvement is None and noise.verdict == "no significant change"


def test_holm_can_remove_a_marginal_result() -> None:
    # One metric alone is significant at 95%, but not once three null metrics join the family.
    rng = np.random.default_rng(7)
    prompts = 200
    a = rng.normal(size=prompts)
    noise = rng.normal(size=prompts)
    noise -= noise.mean()
    marginal = a + noise + 2.3 * noise.std() / math.sqrt(prompts)  # Δ ≈ 2.3 standard errors
    alone = compare_metrics({"m": (a, marginal)}, replicates=2000)
    assert alone[0].significant
    family = {"m": (a, marginal)}
    for k in range(3):
        null = rng.normal(size=prompts)
        family[f"null{k}"] = (a, a + null - null.mean())
    rows = compare_metrics(family, replicates=2000)
    assert rows[0].p_value == alone[0].p_value
    assert rows[0].p_adjusted > 0.05 and not rows[0].significant


def test_compare_metrics_with_different_missing_prompts() -> None:
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=40), rng.normal(size=40) + 1.0
    b_missing = b.copy()
    b_missing[:10] = np.nan
    rows = compare_metrics({"full": (a, b), "partial": (a, b_missing)}, replicates=300)
    assert rows[0].paired.n_prompts == 40 and rows[1].paired.n_prompts == 30 and rows[1].paired.n_dropped == 10
    assert rows[1].paired == paired_bootstrap(a, b_missing, replicates=300)


def test_compare_metrics_input_checks() -> None:
    assert compare_metrics({}) == []
    with pytest.raises(ValueError, match="same prompts"):
        compare_metrics({"x": ([1.0, 2.0], [1.0, 2.0]), "y": ([1.0], [2.0])}, replicates=10)
    with pytest.raises(ValueError, match="not compared"):
        compare_metrics({"x": ([1.0, 2.0], [1.0, 2.0])}, {"typo": True}, replicates=10)
    with pytest.raises(ValueError, match="metric 'x'"):
        compare_metrics({"x": ([np.nan], [1.0])}, replicates=10)
