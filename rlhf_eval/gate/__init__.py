"""The release gate: versioned YAML policies of rules judged on a stored checkpoint.

``evaluate_gate(db, policy, candidate, baseline)`` returns a ``GateReport``; ``rlhf_eval.gate.output``
renders it as a table, JUnit XML or Markdown. See docs/ci.md.
"""

from rlhf_eval.gate.evaluate import evaluate_gate
from rlhf_eval.gate.policy import GatePolicy, Rule, Threshold, load_policy, parse_policy, parse_threshold
from rlhf_eval.gate.records import GateReport, RuleResult
from rlhf_eval.gate.rules import Observation, check_rule

__all__ = [
    "GatePolicy",
    "GateReport",
    "Observation",
    "Rule",
    "RuleResult",
    "Threshold",
    "check_rule",
    "evaluate_gate",
    "load_policy",
    "parse_policy",
    "parse_threshold",
]
