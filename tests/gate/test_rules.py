"""Truth tables of every rule form: each row states the comparison it checks."""

from __future__ import annotations

import pytest

from rlhf_eval.analysis.compare import PairedDelta
from rlhf_eval.gate.policy import parse_policy
from rlhf_eval.gate.records import GateReport
from rlhf_eval.gate.rules import Observation, check_rule


def rule(spec: dict[str, object]):  # type: ignore[no-untyped-def]
    return parse_policy({"version": 1, "rules": [{"name": "r", "metric": "m", **spec}]}, "p.yaml").rules[0]


@pytest.mark.parametrize(
    ("spec", "obs", "status"),
    [
        # absolute max: value ≤ threshold, equality holds
        ({"max": 10}, Observation(value=9.9), "pass"),
        ({"max": 10}, Observation(value=10.0), "pass"),
        ({"max": 10}, Observation(value=10.1), "fail"),
        ({"max": 10, "severity": "warning"}, Observation(value=10.1), "warn"),
        # absolute min: value ≥ threshold
        ({"min": 0}, Observation(value=0.0), "pass"),
        ({"min": 0}, Observation(value=-0.01), "fail"),
        # the upper bound of the interval is what a ci_high rule compares: 9 ≤ 10 but 11 > 10
        ({"max": 10, "statistic": "ci_high"}, Observation(value=9.0, ci_low=7.0, ci_high=11.0), "fail"),
        ({"max": 10, "statistic": "ci_high"}, Observation(value=9.0, ci_low=7.0, ci_high=9.5), "pass"),
        ({"min": 8, "statistic": "ci_low"}, Observation(value=9.0, ci_low=7.0, ci_high=11.0), "fail"),
        # relative: reference 20 + 20% = 24
        ({"max": "reference + 20%"}, Observation(value=24.0, anchor_value=20.0), "pass"),
        ({"max": "reference + 20%"}, Observation(value=24.1, anchor_value=20.0), "fail"),
        # relative: baseline 0.5 − 0.1 = 0.4
        ({"min": "baseline - 0.1"}, Observation(value=0.41, anchor_value=0.5), "pass"),
        ({"min": "baseline - 0.1"}, Observation(value=0.39, anchor_value=0.5), "fail"),
        # boolean
        ({"equals": False}, Observation(value=False), "pass"),
        ({"equals": False}, Observation(value=True), "fail"),
        ({"equals": True, "severity": "warning"}, Observation(value=False), "warn"),
        # missing data is never a pass
        ({"max": 10}, Observation(value=None), "error"),
        ({"max": 10}, Observation(value=float("nan")), "error"),
        ({"max": 10, "statistic": "ci_high"}, Observation(value=1.0), "error"),
        ({"max": "baseline + 1"}, Observation(value=1.0, anchor_value=None), "error"),
        ({"equals": False}, Observation(value=None), "error"),
        ({"max": 10}, Observation(missing="analysis is stale"), "error"),
        ({"max": 10, "severity": "warning"}, Observation(missing="no row"), "error"),
    ],
)
def test_threshold_and_boolean_truth_table(spec: dict[str, object], obs: Observation, status: str) -> None:
    result = check_rule(rule(spec), obs)
    assert result.status == status
    assert result.message.endswith(status.upper() + ("" if status != "error" else " (missing data never passes)"))


def delta(value: float, low: float, high: float) -> PairedDelta:
    return PairedDelta(value, (low, high), 0.5, 0.5, 30, 0, 0.9, 2000)


@pytest.mark.parametrize(
    ("spec", "paired", "status", "actual"),
    [
        # not_lower fails only when the upper bound of Δ is below −margin
        ({"direction": "not_lower"}, delta(-0.5, -0.9, -0.1), "fail", -0.1),
        ({"direction": "not_lower"}, delta(-0.5, -0.9, 0.1), "pass", 0.1),
        ({"direction": "not_lower"}, delta(-0.5, -0.9, 0.0), "pass", 0.0),
        ({"direction": "not_lower", "margin": 0.2}, delta(-0.5, -0.9, -0.1), "pass", -0.1),  # −0.1 ≥ −0.2
        ({"direction": "not_lower", "margin": 0.05}, delta(-0.5, -0.9, -0.1), "fail", -0.1),  # −0.1 < −0.05
        # not_higher fails only when the lower bound is above +margin
        ({"direction": "not_higher"}, delta(0.5, 0.1, 0.9), "fail", 0.1),
        ({"direction": "not_higher"}, delta(0.5, -0.1, 0.9), "pass", -0.1),
        ({"direction": "not_higher", "margin": 0.2, "severity": "warning"}, delta(0.5, 0.3, 0.9), "warn", 0.3),
    ],
)
def test_paired_truth_table(spec: dict[str, object], paired: PairedDelta, status: str, actual: float) -> None:
    result = check_rule(
        rule({"test": "paired", **spec}), Observation(anchor_value=1.0, anchor_label="r/ref", paired=paired)
    )
    assert (result.status, result.actual, result.value) == (status, actual, paired.delta)
    assert (result.ci_low, result.ci_high) == paired.ci
    assert "r/ref" in result.message and "one-sided α=0.05" in result.message


def test_paired_without_data_is_an_error() -> None:
    assert check_rule(rule({"test": "paired"}), Observation()).status == "error"


def test_message_explains_value_interval_threshold_and_baseline() -> None:
    result = check_rule(
        rule({"max": "reference + 20%"}),
        Observation(value=27.1, ci_low=25.0, ci_high=29.2, anchor_value=19.71, anchor_label="ppo/reference"),
    )
    assert result.message == ("m 27.1 [95% CI 25, 29.2] > reference + 20% = 23.65 (ppo/reference 19.71): FAIL")
    assert result.threshold == pytest.approx(19.71 * 1.2)


def test_report_exit_codes() -> None:
    rules = [rule({"max": 1}), rule({"max": 1, "severity": "warning"})]
    ok, bad = Observation(value=0.5), Observation(value=2.0)

    def report(*results):  # type: ignore[no-untyped-def]
        return GateReport("p.yaml", "p", 1, "db", "r/c", 1, "r/reference", list(results))

    assert report(check_rule(rules[0], ok), check_rule(rules[1], bad)).exit_code == 0  # a warning does not fail
    assert report(check_rule(rules[0], bad), check_rule(rules[1], ok)).exit_code == 1
    assert report(check_rule(rules[0], bad), check_rule(rules[1], Observation())).exit_code == 2  # errors win
    assert report(check_rule(rules[0], ok)).headline.startswith("gate PASSED: r/c against r/reference")
