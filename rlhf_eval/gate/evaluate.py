"""Run a gate policy on a candidate checkpoint: resolve the points, observe every rule, judge it.

Unknown metric names and ill-formed policies are errors before anything is judged (exit code 2);
a rule whose data is missing, or that reads an analysis older than the stored points, is judged
"error" (exit code 2), never "pass".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_eval.errors import UserInputError, did_you_mean
from rlhf_eval.gate.data import (
    ANALYSIS_COLUMNS,
    DERIVED,
    GateData,
    Point,
    known_metrics,
    load_gate_data,
    pairable_metrics,
    prompt_values,
    proxy_gold_gap,
)
from rlhf_eval.gate.policy import GatePolicy, Rule, load_policy
from rlhf_eval.gate.records import GateReport, RuleResult
from rlhf_eval.gate.rules import Observation, check_rule


def evaluate_gate(
    db: str | Path,
    policy: str | Path | GatePolicy,
    candidate: str = "latest",
    baseline: str = "reference",
) -> GateReport:
    """Judge every rule of ``policy`` on ``candidate`` against ``baseline`` (default: the candidate
    run's reference policy). ``report.exit_code`` is 0 pass, 1 a critical rule failed, 2 missing data."""
    parsed = policy if isinstance(policy, GatePolicy) else load_policy(policy)
    data = load_gate_data(db, candidate, baseline)
    validate_metrics(parsed, data)
    results = [judge(rule, parsed, data) for rule in parsed.rules]
    return GateReport(
        policy_path=parsed.path,
        policy_name=parsed.name,
        policy_version=parsed.version,
        db=str(db),
        candidate=data.candidate.label,
        candidate_step=data.candidate.step,
        baseline=data.baseline.label,
        results=results,
    )


def validate_metrics(policy: GatePolicy, data: GateData) -> None:
    """Every rule names a metric the database has, in a form that rule can use."""
    known = known_metrics(data.summary_columns, data.run_columns)
    pairable = pairable_metrics()
    for rule in policy.rules:
        where = f"{policy.path}: rule {rule.name!r}"
        if rule.kind == "paired":
            if rule.metric not in pairable:
                raise UserInputError(
                    f"{where}: metric {rule.metric!r} has no per-prompt values for a paired test; use one of "
                    f"{', '.join(pairable)}.{did_you_mean(rule.metric, pairable)}"
                )
            continue
        if rule.metric not in known:
            raise UserInputError(
                f"{where}: unknown metric {rule.metric!r}; use a column of checkpoint_summary or overoptimization "
                f"(docs/schema.md) or {', '.join(DERIVED)}.{did_you_mean(rule.metric, known)}"
            )
        if rule.statistic != "value" and rule.metric not in DERIVED:
            column = f"{rule.metric}_{rule.statistic}"
            if column not in data.summary_columns and column not in data.run_columns:
                raise UserInputError(
                    f"{where}: metric {rule.metric!r} has no interval ({column} is not a column); use statistic: value"
                )


def as_number(value: Any) -> float | bool | None:
    """A stored value as a float (bool kept), NaN and NULL as None."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | float | np.floating | np.integer):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def column_source(metric: str, data: GateData) -> str:
    """Where a metric is read: checkpoint_summary's row of the point ('summary'), its run's
    overoptimization row ('run') or the gate's own computation ('derived')."""
    if metric in DERIVED:
        return "derived"
    return "summary" if metric in data.summary_columns else "run"


def point_stat(point: Point, metric: str, source: str, suffix: str = "") -> Any:
    if source == "summary":
        return point.row.get(metric + suffix)
    return None if point.run_row is None else point.run_row.get(metric + suffix)


def observe(rule: Rule, policy: GatePolicy, data: GateData) -> Observation:
    """What the rule needs from the candidate (and its anchor), or why it is missing."""
    if rule.kind == "paired":
        return observe_paired(rule, policy, data)
    source = column_source(rule.metric, data)
    anchor = None
    if rule.threshold is not None and rule.threshold.anchor is not None:
        anchor = data.baseline if rule.threshold.anchor == "baseline" else data.reference
    needs_analysis = source == "run" or rule.metric in ANALYSIS_COLUMNS
    if needs_analysis:
        for point in (data.candidate, anchor):
            problem = None if point is None else point.analysis_problem(data.db)
            if problem:
                return Observation(missing=problem)
    if source == "derived":
        gap = proxy_gold_gap(data, data.candidate, policy.replicates, policy.seed)
        if gap is None:
            return Observation(missing="no normalized proxy and gold values for the candidate")
        anchor_value = None
        if anchor is not None:
            anchor_gap = proxy_gold_gap(data, anchor, policy.replicates, policy.seed)
            anchor_value = None if anchor_gap is None else anchor_gap[0]
        return Observation(
            value=gap[0], ci_low=gap[1], ci_high=gap[2], anchor_value=anchor_value,
            anchor_label=None if anchor is None else anchor.label,
        )  # fmt: skip
    value = as_number(point_stat(data.candidate, rule.metric, source))
    if value is None:
        return Observation(missing=f"no value for {data.candidate.label} (NULL in the database)")
    return Observation(
        value=value,
        ci_low=as_number(point_stat(data.candidate, rule.metric, source, "_ci_low")),
        ci_high=as_number(point_stat(data.candidate, rule.metric, source, "_ci_high")),
        anchor_value=None if anchor is None else as_number(point_stat(anchor, rule.metric, source)),
        anchor_label=None if anchor is None else anchor.label,
    )


def observe_paired(rule: Rule, policy: GatePolicy, data: GateData) -> Observation:
    from rlhf_eval.analysis.compare import paired_bootstrap

    cand = prompt_values(data, data.candidate, rule.metric)
    base = prompt_values(data, data.baseline, rule.metric)
    shared = sorted(pid for pid in set(cand) & set(base) if math.isfinite(cand[pid]) and math.isfinite(base[pid]))
    label = data.baseline.label
    if not shared:
        return Observation(
            missing=f"{data.candidate.label} and {label} share no prompt with a value; evaluate both on one suite",
            anchor_label=label,
        )
    a = np.array([base[pid] for pid in shared])
    b = np.array([cand[pid] for pid in shared])
    paired = paired_bootstrap(a, b, replicates=policy.replicates, seed=policy.seed, level=1.0 - 2.0 * rule.alpha)
    return Observation(value=float(b.mean()), anchor_value=float(a.mean()), anchor_label=label, paired=paired)


def judge(rule: Rule, policy: GatePolicy, data: GateData) -> RuleResult:
    return check_rule(rule, observe(rule, policy, data))
