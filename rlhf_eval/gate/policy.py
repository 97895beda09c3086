"""Gate policies: versioned YAML files of rules, parsed into typed records before any data is read.

A policy is data, not code (evidently's test suites, lm-evaluation-harness's task YAML)::

    version: 1
    name: default
    bootstrap: {replicates: 2000, seed: 0}
    rules:
      - name: kl-budget
        metric: kl
        statistic: ci_high          # compare the upper bound of the 95% CI
        max: 10                     # nats
      - name: gold-not-below-baseline
        metric: gold_reward
        test: paired                # paired bootstrap over prompts, one-sided
        direction: not_lower
        alpha: 0.05
      - name: not-past-peak
        metric: past_peak
        equals: false
      - name: length-inflation
        metric: mean_length
        max: reference + 20%
        severity: warning

Every rule has exactly one of ``max`` (value ≤ threshold), ``min`` (value ≥ threshold),
``equals`` (a boolean column) or ``test: paired``. A threshold is a number, or ``baseline`` /
``reference`` optionally followed by ``+ x``, ``- x``, ``+ x%``, ``- x%`` or ``* f``
(``x%`` is a share of the anchor's absolute value). ``severity`` is ``critical`` (the default:
a failure fails the gate) or ``warning`` (reported, exit code unchanged).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_eval.errors import UserInputError, did_you_mean

SUPPORTED_VERSIONS = (1,)
SEVERITIES = ("critical", "warning")
STATISTICS = ("value", "ci_low", "ci_high")
DIRECTIONS = ("not_lower", "not_higher")
POLICY_KEYS = ("version", "name", "description", "bootstrap", "rules")
RULE_KEYS = (
    "name", "metric", "description", "severity", "statistic", "max", "min", "equals",
    "test", "direction", "margin", "alpha",
)  # fmt: skip
ANCHORS = ("baseline", "reference")

_THRESHOLD = re.compile(
    r"^\s*(?P<anchor>baseline|reference)\s*"
    r"(?:(?P<op>[-+*])\s*(?P<number>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<percent>%)?)?\s*$"
)


@dataclass(frozen=True)
class Threshold:
    """An absolute number, or an anchor (``baseline`` or ``reference``) moved by an offset.

    >>> parse_threshold("reference + 20%").resolve(10.0)
    12.0
    >>> parse_threshold("baseline - 0.5").resolve(-1.0)
    -1.5
    >>> parse_threshold("baseline - 10%").resolve(-2.0)
    -2.2
    >>> parse_threshold("3").resolve(None)
    3.0
    """

    text: str
    anchor: str | None  # None: absolute
    op: str  # "", "+", "-", "*"
    number: float
    percent: bool

    def resolve(self, anchor_value: float | None) -> float:
        """The number the rule compares against, given the anchor's value (ignored when absolute)."""
        if self.anchor is None:
            return self.number
        if anchor_value is None:
            raise ValueError(f"threshold {self.text!r} needs the {self.anchor}'s value")
        amount = abs(anchor_value) * self.number / 100.0 if self.percent else self.number
        if self.op == "+":
            return anchor_value + amount
        if self.op == "-":
            return anchor_value - amount
        if self.op == "*":
            return anchor_value * self.number
        return anchor_value


def parse_threshold(value: Any, where: str = "threshold") -> Threshold:
    """A number, or ``baseline``/``reference`` with an optional ``+ x``, ``- x``, ``± x%``, ``* f``."""
    if isinstance(value, bool) or value is None:
        raise UserInputError(f"{where}: {value!r} is not a threshold; write a number or e.g. 'reference + 20%'")
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            raise UserInputError(f"{where}: {value!r} is not a finite number")
        return Threshold(str(value), None, "", number, False)
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(number):
            return Threshold(text, None, "", number, False)
    match = _THRESHOLD.match(text)
    if not match:
        raise UserInputError(
            f"{where}: {text!r} is not a threshold; write a number, 'baseline', 'reference', or one of them "
            f"with '+ x', '- x', '+ x%', '- x%', '* f' (e.g. 'reference + 20%')"
        )
    op = match.group("op") or ""
    percent = bool(match.group("percent"))
    if op == "*" and percent:
        raise UserInputError(f"{where}: {text!r}: '* f' takes a plain factor, not a percentage")
    number = float(match.group("number")) if match.group("number") else 0.0
    return Threshold(text, match.group("anchor"), op, number, percent)


@dataclass(frozen=True)
class Rule:
    """One rule of a policy. ``kind`` is ``absolute`` or ``relative`` (a ``max``/``min`` threshold
    without or with an anchor), ``boolean`` (``equals``) or ``paired`` (``test: paired``)."""

    name: str
    metric: str
    kind: str
    severity: str = "critical"
    description: str = ""
    op: str = "<="  # "<=", ">=", "=="
    threshold: Threshold | None = None
    statistic: str = "value"
    expected: bool | None = None
    direction: str = "not_lower"
    margin: float = 0.0
    alpha: float = 0.05

    @property
    def rule_text(self) -> str:
        """The rule as a person reads it, e.g. ``mean_length <= reference + 20%``."""
        if self.kind == "boolean":
            return f"{self.metric} == {str(self.expected).lower()}"
        if self.kind == "paired":
            side = "lower" if self.direction == "not_lower" else "higher"
            margin = f" by more than {self.margin:g}" if self.margin else ""
            return f"{self.metric} not significantly {side} than baseline{margin} (paired, one-sided α={self.alpha:g})"
        assert self.threshold is not None
        stat = {"value": "", "ci_low": " lower bound", "ci_high": " upper bound"}[self.statistic]
        return f"{self.metric}{stat} {self.op} {self.threshold.text}"


@dataclass(frozen=True)
class GatePolicy:
    path: str
    name: str
    version: int
    rules: tuple[Rule, ...]
    description: str = ""
    replicates: int = 2000
    seed: int = 0


def load_policy(path: str | Path) -> GatePolicy:
    """Read and validate a policy file; every problem is one ``UserInputError`` line naming the file."""
    import yaml

    file = Path(path)
    try:
        found = file.is_file()
    except OSError:  # a name the system refuses, e.g. too long
        found = False
    if not found:
        raise UserInputError(f"--policy {file}: no such file; pass a gate policy YAML (e.g. suites/gates/default.yaml)")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserInputError(f"{file}: not UTF-8 text; save the policy as UTF-8 YAML") from None
    except OSError as exc:
        raise UserInputError(f"{file}: cannot read the policy ({exc.strerror}); check its permissions") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or "invalid YAML").split())
        raise UserInputError(f"{file}: not valid YAML{where} ({problem}); fix the syntax") from None
    except RecursionError:
        raise UserInputError(f"{file}: not valid YAML (nested too deeply); write the rules as a flat list") from None
    except Exception as exc:  # a value YAML's own constructors refuse: a bad date, `!!int abc`, a huge number
        problem = " ".join(str(exc).split())
        raise UserInputError(f"{file}: not valid YAML ({problem}); fix the value it names") from None
    check_values(data, str(file))
    return parse_policy(data, str(file))


def check_values(data: Any, source: str) -> None:
    """Refuse what YAML reads but no rule can use: an integer beyond any float (``0x...`` of any
    length; Python cannot even print one of over 4300 digits) and text with a lone surrogate (the
    escape ``"\\ud800"``; it cannot be printed as UTF-8). Aliases may share or nest values, so each
    container is visited once."""
    seen: set[int] = set()
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict | list | tuple | set):  # !!set, !!omap and !!pairs give the last two
            if id(item) not in seen:
                seen.add(id(item))
                stack.extend([*item, *item.values()] if isinstance(item, dict) else item)
        elif isinstance(item, int) and item.bit_length() > 1024:
            raise UserInputError(
                f"{source}: a number of {item.bit_length()} bits is beyond any float; write a smaller number"
            )
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                escape = f"\\u{ord(item[exc.start]):04x}"
                raise UserInputError(
                    f"{source}: {escape} is a lone surrogate, not Unicode text; remove that escape"
                ) from None


def parse_policy(data: Any, source: str = "<policy>") -> GatePolicy:
    """A ``GatePolicy`` from parsed YAML; ``source`` names the file in errors."""
    if not isinstance(data, dict):
        raise UserInputError(f"{source}: a gate policy is a mapping with 'version' and 'rules'; see docs/ci.md")
    check_keys(data, POLICY_KEYS, source)
    version = data.get("version")
    if version is None:
        raise UserInputError(f"{source}: missing 'version'; add 'version: 1' at the top")
    if isinstance(version, bool) or not isinstance(version, int) or version not in SUPPORTED_VERSIONS:
        raise UserInputError(
            f"{source}: version {version!r} is not supported; this rlhf-eval reads version "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}"
        )
    rules_data = data.get("rules")
    if not isinstance(rules_data, list) or not rules_data:
        raise UserInputError(f"{source}: 'rules' must be a non-empty list of rules; see docs/ci.md")
    replicates, seed = parse_bootstrap(data.get("bootstrap"), source)
    rules = tuple(parse_rule(item, f"{source}: rule {i + 1}") for i, item in enumerate(rules_data))
    names = [r.name for r in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        shown = ", ".join(" ".join(n.split()) for n in duplicates)  # a name may hold a line break
        raise UserInputError(f"{source}: rule names must be unique; {shown} appear more than once")
    name = data.get("name", Path(source).stem)
    return GatePolicy(
        path=source,
        name=str(name),
        version=version,
        rules=rules,
        description=str(data.get("description") or ""),
        replicates=replicates,
        seed=seed,
    )


def parse_bootstrap(value: Any, source: str) -> tuple[int, int]:
    if value is None:
        return 2000, 0
    if not isinstance(value, dict):
        raise UserInputError(f"{source}: 'bootstrap' is a mapping like {{replicates: 2000, seed: 0}}")
    check_keys(value, ("replicates", "seed"), f"{source}: bootstrap")
    replicates, seed = value.get("replicates", 2000), value.get("seed", 0)
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 100:
        raise UserInputError(
            f"{source}: bootstrap.replicates {replicates!r}: use an integer ≥ 100 (2000 is the default)"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserInputError(f"{source}: bootstrap.seed {seed!r}: use a non-negative integer")
    return replicates, seed


def check_keys(data: dict[Any, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise UserInputError(
                f"{where}: unknown key {key!r}; allowed: {', '.join(allowed)}.{did_you_mean(str(key), list(allowed))}"
            )


def parse_rule(item: Any, where: str) -> Rule:
    if not isinstance(item, dict):
        raise UserInputError(f"{where}: a rule is a mapping with 'name', 'metric' and one of max/min/equals/test")
    check_keys(item, RULE_KEYS, where)
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise UserInputError(f"{where}: missing 'name'; give every rule a short unique name")
    where = f"{where} ({name!r})"
    metric = item.get("metric")
    if not isinstance(metric, str) or not metric.strip():
        raise UserInputError(f"{where}: missing 'metric'; name a column of checkpoint_summary or overoptimization")
    severity = item.get("severity", "critical")
    if severity not in SEVERITIES:
        raise UserInputError(f"{where}: severity {severity!r}: use critical or warning")
    forms = [key for key in ("max", "min", "equals", "test") if key in item]
    if len(forms) != 1:
        found = ", ".join(forms) if forms else "none"
        raise UserInputError(f"{where}: give exactly one of max, min, equals, test (found {found})")
    common: dict[str, Any] = {
        "name": name,
        "metric": metric,
        "severity": severity,
        "description": str(item.get("description") or ""),
    }
    form = forms[0]
    misplaced = [k for k in ("direction", "margin", "alpha") if k in item and form != "test"]
    if "statistic" in item and form in ("equals", "test"):
        misplaced.append("statistic")
    if misplaced:
        raise UserInputError(f"{where}: {', '.join(misplaced)} only apply to other rule forms; remove them")
    if form == "equals":
        expected = item["equals"]
        if not isinstance(expected, bool):
            raise UserInputError(f"{where}: equals {expected!r}: use true or false (equals is for yes/no columns)")
        return Rule(kind="boolean", op="==", expected=expected, **common)
    if form == "test":
        return parse_paired(item, where, common)
    threshold = parse_threshold(item[form], f"{where}: {form}")
    statistic = item.get("statistic", "value")
    if statistic not in STATISTICS:
        raise UserInputError(f"{where}: statistic {statistic!r}: use one of {', '.join(STATISTICS)}")
    kind = "absolute" if threshold.anchor is None else "relative"
    return Rule(kind=kind, op="<=" if form == "max" else ">=", threshold=threshold, statistic=statistic, **common)


def parse_paired(item: dict[str, Any], where: str, common: dict[str, Any]) -> Rule:
    if item["test"] != "paired":
        raise UserInputError(
            f"{where}: test {item['test']!r}: the only test is 'paired' (paired bootstrap over prompts)"
        )
    direction = item.get("direction", "not_lower")
    if direction not in DIRECTIONS:
        raise UserInputError(f"{where}: direction {direction!r}: use not_lower or not_higher")
    margin = item.get("margin", 0.0)
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not math.isfinite(margin) or margin < 0:
        raise UserInputError(f"{where}: margin {margin!r}: use a non-negative number in the metric's units")
    alpha = item.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 < alpha < 0.5:
        raise UserInputError(f"{where}: alpha {alpha!r}: use a one-sided level in (0, 0.5), e.g. 0.05")
    return Rule(kind="paired", op="paired", direction=direction, margin=float(margin), alpha=float(alpha), **common)
