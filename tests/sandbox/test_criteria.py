"""The over-optimization checks on synthetic curves whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf_eval.sandbox.criteria import CurvePoint, bon_ns, check_run, drop_from_best_ci


def point(label: str, kl: float, proxy: float, gold: np.ndarray, length: float) -> CurvePoint:
    n = len(gold)
    return CurvePoint(
        label=label,
        step=int(kl * 10),
        kl=kl,
        proxy=np.full(n, proxy),
        gold=gold,
        symptoms={"length_words": np.full(n, length), "seq_rep_4": np.zeros(n), "hedge": np.zeros(n)},
    )


def test_interior_peak_and_significant_drop() -> None:
    rng = np.random.default_rng(0)
    noise = lambda: rng.normal(0, 0.5, size=200)  # noqa: E731
    points = [
        point("reference", 0.0, 0.0, 1.0 + noise(), 20),
        point("late", 9.0, 3.0, 0.0 + noise(), 40),  # given out of order: sorted by KL
        point("peak", 2.0, 1.0, 2.0 + noise(), 25),
        point("after", 5.0, 2.0, 1.5 + noise(), 30),
    ]
    check = check_run("r", points)
    assert check.peak == "peak" and check.peak_interior
    assert check.proxy_kl_spearman == pytest.approx(1.0)
    assert check.gold_drop == pytest.approx(float(np.mean(points[2].gold - points[1].gold)))
    assert check.drop_significant and check.symptom_grew and check.passed()
    assert check.symptoms["length"] == (25.0, 40.0)
    assert [row["label"] for row in check.points] == ["reference", "peak", "after", "late"]


def test_monotone_gold_has_no_interior_peak() -> None:
    gold = np.linspace(0, 1, 50)
    points = [point(f"c{i}", float(i), float(i), gold + i, 20 + i) for i in range(4)]
    check = check_run("r", points)
    assert check.peak == "c3" and not check.peak_interior and not check.passed()
    assert check.gold_drop == 0.0 and check.gold_drop_ci == (0.0, 0.0)


def test_paired_bootstrap_matches_the_normal_approximation() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(1.0, 1.0, size=2000)
    b = a - rng.normal(0.3, 0.5, size=2000)
    low, high = drop_from_best_ci(a[None, :], b, replicates=4000)  # one earlier point: a paired bootstrap
    diff = a - b
    half = 1.96 * diff.std(ddof=1) / np.sqrt(diff.size)
    assert low == pytest.approx(diff.mean() - half, abs=0.01)
    assert high == pytest.approx(diff.mean() + half, abs=0.01)
    with pytest.raises(ValueError, match="no prompt"):
        drop_from_best_ci(np.array([[np.nan]]), np.array([1.0]))


def test_too_few_points_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        check_run("r", [point("a", 0, 0, np.zeros(3), 1), point("b", 1, 1, np.zeros(3), 1)])


def test_bon_ns() -> None:
    assert bon_ns(1) == [1]
    assert bon_ns(64) == [1, 2, 4, 8, 16, 32, 64]
    assert bon_ns(100) == [1, 2, 4, 8, 16, 32, 64, 100]


def test_drop_from_best_reselects_the_peak_in_each_replicate() -> None:
    rng = np.random.default_rng(2)
    a, b, last = rng.normal(1.0, 1, 300), rng.normal(1.0, 1, 300), rng.normal(0.5, 1, 300)
    # one earlier point: the plain paired bootstrap, computed here with the same draws
    idx = np.random.default_rng(3).integers(0, 300, size=(2000, 300))
    plain = np.percentile((a - last)[idx].mean(axis=1), [2.5, 97.5])
    assert drop_from_best_ci(a[None, :], last, seed=3) == pytest.approx(tuple(plain), abs=1e-12)
    # two equal earlier points: the max of two replicate means sits above either one alone
    two = drop_from_best_ci(np.stack([a, b]), last, seed=3)
    singles = [drop_from_best_ci(x[None, :], last, seed=3)[0] for x in (a, b)]
    assert two[0] > min(singles)
    with pytest.raises(ValueError, match="no prompt"):
        drop_from_best_ci(np.array([[np.nan]]), np.array([1.0]))
