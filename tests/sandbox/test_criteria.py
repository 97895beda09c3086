"""The sandbox's checks read off the analysis of synthetic curves whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf_eval.analysis.curves import Curve
from rlhf_eval.analysis.overopt import analyze_curve
from rlhf_eval.analysis.runner import RunReport
from rlhf_eval.sandbox.criteria import check_report


def report_and_summary(gold_means: list[float], kls: list[float], lengths: list[float]) -> tuple[RunReport, list[dict]]:
    rng = np.random.default_rng(0)
    prompts = 200
    effect = rng.normal(size=prompts)
    gold = np.stack([effect + m + rng.normal(0, 0.3, prompts) for m in gold_means])
    proxy = np.stack([effect + k for k in kls])  # proxy rises with KL
    kl = np.stack([np.full(prompts, k) for k in kls])
    labels = tuple(["reference", *[f"checkpoint-{i}" for i in range(1, len(kls))]])
    curve = Curve(
        "ppo",
        "ppo",
        "rl",
        labels,
        tuple(range(len(kls))),
        kl,
        {"gold": gold, "proxy": proxy},
        {"gold": 1.0, "proxy": 1.0},
    )
    analysis = analyze_curve(curve, replicates=300, fit=False)
    summary = [
        {"checkpoint": label, "mean_words": length, "seq_rep_4": 0.05, "hedge_rate": 0.1}
        for label, length in zip(labels, lengths, strict=True)
    ]
    return RunReport(analysis, [], {}), summary


def test_rise_then_fall_passes_every_criterion() -> None:
    report, summary = report_and_summary([0.0, 1.0, 2.0, 1.0], [0.0, 1.0, 2.0, 3.0], [20, 22, 25, 40])
    check = check_report(report, summary)
    assert check.peak == "checkpoint-2" and check.peak_interior
    assert check.proxy_kl_spearman == pytest.approx(1.0)
    assert check.gold_drop == pytest.approx(report.analysis.gold_drop.estimate)
    assert check.gold_drop == pytest.approx(1.0, abs=0.1)
    assert check.drop_significant and check.symptom_grew and check.passed()
    assert check.symptoms["length"] == (25.0, 40.0)
    assert [row["label"] for row in check.points][0] == "reference"
    assert check.as_dict()["passed"] is True


def test_gold_still_rising_has_no_interior_peak_and_fails() -> None:
    report, summary = report_and_summary([0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0], [20, 21, 22, 23])
    check = check_report(report, summary)
    assert check.peak == "checkpoint-3" and not check.peak_interior
    assert check.gold_drop == 0.0 and check.gold_drop_ci == (0.0, 0.0) and not check.passed()


def test_no_symptom_growth_fails() -> None:
    report, summary = report_and_summary([0.0, 1.0, 2.0, 1.0], [0.0, 1.0, 2.0, 3.0], [20, 22, 25, 25])
    check = check_report(report, summary)
    assert check.drop_significant and not check.symptom_grew and not check.passed()


def test_too_few_points_is_an_error() -> None:
    report, summary = report_and_summary([0.0, 1.0], [0.0, 1.0], [20, 21])
    with pytest.raises(ValueError, match="at least 3"):
        check_report(report, summary)
