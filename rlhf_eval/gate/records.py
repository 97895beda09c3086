"""Typed records of a gate evaluation: one :class:`RuleResult` per rule, one :class:`GateReport` per run
of the gate. Every output (table, JSON, JUnit, Markdown, the HTML report) renders these."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: A rule that holds is "pass"; one that does not is "fail" when critical and "warn" when a warning;
#: one whose data is missing (or whose analysis is stale) is "error": never a pass.
STATUSES = ("pass", "warn", "fail", "error")


@dataclass(frozen=True)
class RuleResult:
    """The outcome of one rule on the candidate, explaining itself.

    ``value`` is the candidate's point estimate with its interval ``ci_low``/``ci_high`` when one
    exists (for a paired rule: the candidate − baseline delta and its paired bootstrap interval);
    ``actual`` the statistic the rule compared (the value, an interval bound, or for a paired rule
    the bound of the delta's one-sided test); ``threshold`` the resolved number (or boolean) it was
    compared against; ``baseline`` the anchor's value (baseline or reference) when the rule has one.
    """

    rule: str
    metric: str
    severity: str  # "critical" | "warning"
    status: str  # "pass" | "warn" | "fail" | "error"
    kind: str  # "absolute" | "relative" | "paired" | "boolean"
    value: float | bool | None
    ci_low: float | None
    ci_high: float | None
    compared: str  # which statistic was compared: "value", "ci_high", "ci_low", "delta_ci_high", ...
    actual: float | bool | None
    op: str  # "<=", "<", ">=", ">", "==", "!="
    threshold: float | bool | None
    threshold_text: str  # the rule as written, e.g. "<= baseline + 20%"
    baseline: float | bool | None
    baseline_label: str | None  # "ppo/reference", ...
    message: str  # one line: metric, actual with CI, threshold, baseline, verdict

    @property
    def failed(self) -> bool:
        return self.status != "pass"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateReport:
    """All rules of one policy on one candidate against one baseline."""

    policy_path: str
    policy_name: str
    policy_version: int
    db: str
    candidate: str  # "RUN/CHECKPOINT"
    candidate_step: int
    baseline: str  # "RUN/CHECKPOINT"
    results: list[RuleResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no critical rule failed and every rule had its data (warnings do not fail)."""
        return not any(r.status in ("fail", "error") for r in self.results)

    @property
    def exit_code(self) -> int:
        """0 pass, 1 a critical rule failed, 2 a rule could not be evaluated (missing data)."""
        if any(r.status == "error" for r in self.results):
            return 2
        return 0 if self.passed else 1

    @property
    def counts(self) -> dict[str, int]:
        return {status: sum(r.status == status for r in self.results) for status in STATUSES}

    @property
    def headline(self) -> str:
        c = self.counts
        verdict = {0: "PASSED", 1: "FAILED", 2: "ERROR"}[self.exit_code]
        errors = f", {c['error']} errors" if c["error"] else ""
        return (
            f"gate {verdict}: {self.candidate} against {self.baseline} under {self.policy_name} "
            f"(v{self.policy_version}): {c['pass']} passed, {c['warn']} warnings, {c['fail']} failed{errors}"
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(passed=self.passed, exit_code=self.exit_code, counts=self.counts, headline=self.headline)
        return data
