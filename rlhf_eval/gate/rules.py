"""Judging one rule on what the data layer observed: a pure function with a truth table.

- **absolute / relative** (``max``/``min``): the compared statistic (the value, or a bound of its
  95% interval) against the threshold, resolved from the anchor (baseline or reference) when
  relative. ``max`` holds when compared ≤ threshold, ``min`` when compared ≥ threshold.
- **boolean** (``equals``): the column equals the expected truth value.
- **paired** (``test: paired``): Δ = candidate − baseline on shared prompts with a paired
  percentile bootstrap over prompts (Efron & Tibshirani 1993, ch. 13; prompts are the unit). The
  one-sided test at level α uses the two-sided (1 − 2α) interval: ``not_lower`` fails when its
  upper bound is below −margin (the candidate is significantly worse by more than the margin),
  ``not_higher`` when its lower bound is above +margin.

A rule whose data is missing is an **error**, never a pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rlhf_eval.analysis.compare import PairedDelta
from rlhf_eval.gate.policy import Rule
from rlhf_eval.gate.records import RuleResult

NEGATION = {"<=": ">", ">=": "<", "==": "!="}
BOUND_NAMES = {"ci_low": "lower bound", "ci_high": "upper bound"}


@dataclass(frozen=True)
class Observation:
    """What the data layer found for one rule on the candidate.

    ``value`` is the candidate's point estimate (a boolean for yes/no columns), ``ci_low`` /
    ``ci_high`` its interval at ``ci_level`` when one exists; ``anchor_value`` the value of the
    rule's anchor (baseline or reference) with its ``anchor_label``; ``paired`` the paired
    bootstrap of a paired rule; ``missing`` a reason the rule cannot be judged.
    """

    value: float | bool | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_level: float = 0.95
    anchor_value: float | bool | None = None
    anchor_label: str | None = None
    paired: PairedDelta | None = None
    missing: str | None = None


def fmt(value: float | bool | None) -> str:
    """Numbers with 4 significant digits, booleans as true/false, missing as '-'.

    >>> fmt(0.12345), fmt(True), fmt(None), fmt(-1234.5)
    ('0.1235', 'true', '-', '-1234')
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:.4g}"


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def status_of(rule: Rule, holds: bool) -> str:
    if holds:
        return "pass"
    return "fail" if rule.severity == "critical" else "warn"


def check_rule(rule: Rule, obs: Observation) -> RuleResult:
    """The ``RuleResult`` of ``rule`` on ``obs`` (see the module docstring for the semantics)."""
    if obs.missing is not None:
        return error(rule, obs, obs.missing)
    if rule.kind == "boolean":
        return check_boolean(rule, obs)
    if rule.kind == "paired":
        return check_paired(rule, obs)
    return check_threshold(rule, obs)


def result(rule: Rule, obs: Observation, **fields: object) -> RuleResult:
    base: dict[str, object] = {
        "rule": rule.name,
        "metric": rule.metric,
        "severity": rule.severity,
        "kind": rule.kind,
        "value": obs.value,
        "ci_low": obs.ci_low,
        "ci_high": obs.ci_high,
        "compared": "value",
        "actual": obs.value,
        "op": rule.op,
        "threshold": None,
        "threshold_text": rule.rule_text,
        "baseline": obs.anchor_value,
        "baseline_label": obs.anchor_label,
    }
    base.update(fields)
    return RuleResult(**base)  # type: ignore[arg-type]


def error(rule: Rule, obs: Observation, reason: str) -> RuleResult:
    return result(rule, obs, status="error", message=f"{rule.metric}: {reason}: ERROR (missing data never passes)")


def value_text(obs: Observation, metric: str) -> str:
    if is_number(obs.ci_low) and is_number(obs.ci_high):
        level = f"{obs.ci_level * 100:g}%"
        return f"{metric} {fmt(obs.value)} [{level} CI {fmt(obs.ci_low)}, {fmt(obs.ci_high)}]"
    return f"{metric} {fmt(obs.value)}"


def check_boolean(rule: Rule, obs: Observation) -> RuleResult:
    value = obs.value
    if isinstance(value, int | float) and not isinstance(value, bool) and value in (0, 1):
        value = bool(value)
    if not isinstance(value, bool):
        return error(rule, obs, f"no yes/no value for the candidate (got {value!r})")
    holds = value == rule.expected
    status = status_of(rule, holds)
    op = "==" if holds else "!="
    message = f"{rule.metric} is {fmt(value)} {op} expected {fmt(rule.expected)}: {status.upper()}"
    return result(rule, obs, value=value, actual=value, threshold=rule.expected, status=status, message=message)


def check_threshold(rule: Rule, obs: Observation) -> RuleResult:
    assert rule.threshold is not None
    if not is_number(obs.value):
        return error(
            rule, obs, f"no value for the candidate (got {fmt(obs.value) if obs.value is not None else 'NULL'})"
        )
    compared = {"value": obs.value, "ci_low": obs.ci_low, "ci_high": obs.ci_high}[rule.statistic]
    if not is_number(compared):
        return error(rule, obs, f"no {BOUND_NAMES[rule.statistic]} (95% interval) for the candidate")
    anchor = rule.threshold.anchor
    if anchor is not None and not is_number(obs.anchor_value):
        return error(rule, obs, f"no value for the {anchor} ({obs.anchor_label or 'not found'})")
    threshold = rule.threshold.resolve(obs.anchor_value if anchor is not None else None)
    assert isinstance(compared, float | int)
    holds = compared <= threshold if rule.op == "<=" else compared >= threshold
    status = status_of(rule, holds)
    op = rule.op if holds else NEGATION[rule.op]
    bound = "" if rule.statistic == "value" else f", {BOUND_NAMES[rule.statistic]} {fmt(compared)}"
    target = fmt(threshold)
    if anchor is not None:
        target = f"{rule.threshold.text} = {fmt(threshold)} ({obs.anchor_label or anchor} {fmt(obs.anchor_value)})"
    message = f"{value_text(obs, rule.metric)}{bound} {op} {target}: {status.upper()}"
    return result(
        rule, obs, compared=rule.statistic, actual=float(compared), threshold=threshold, status=status, message=message
    )


def check_paired(rule: Rule, obs: Observation) -> RuleResult:
    paired = obs.paired
    if paired is None or not is_number(paired.delta):
        return error(rule, obs, "no paired values on shared prompts for the candidate and the baseline")
    low, high = paired.ci
    level = f"{paired.level * 100:g}%"
    against = f"{obs.anchor_label or 'baseline'} ({fmt(obs.anchor_value)})"
    margin = f" by more than {rule.margin:g}" if rule.margin else ""
    if rule.direction == "not_lower":
        compared, threshold = high, -rule.margin if rule.margin else 0.0
        holds = not (is_number(high) and high < threshold)
        side, bound = "lower", f"upper bound {fmt(high)} {'>=' if holds else '<'} {fmt(threshold)}"
    else:
        compared, threshold = low, rule.margin
        holds = not (is_number(low) and low > threshold)
        side, bound = "higher", f"lower bound {fmt(low)} {'<=' if holds else '>'} {fmt(threshold)}"
    status = status_of(rule, holds)
    verdict = "not significantly" if holds else "significantly"
    message = (
        f"{rule.metric} candidate − baseline = {paired.delta:+.4g} [{level} CI {fmt(low)}, {fmt(high)}] on "
        f"{paired.n_prompts} prompts: {verdict} {side} than {against}{margin} at one-sided α={rule.alpha:g} "
        f"({bound}): {status.upper()}"
    )
    return result(
        rule,
        obs,
        value=paired.delta,
        ci_low=low,
        ci_high=high,
        compared="delta_ci_high" if rule.direction == "not_lower" else "delta_ci_low",
        actual=compared,
        threshold=threshold,
        status=status,
        message=message,
    )
