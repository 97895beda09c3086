"""A ``GateReport`` as a terminal table, JUnit XML (one test case per rule) and GitHub Markdown.

JUnit is what CI systems (GitHub Actions test reporters, GitLab, Jenkins) display natively: a
failed critical rule is a ``<failure>``, a rule without data an ``<error>``, a failed warning a
passing case whose ``<system-out>`` says so (JUnit has no "warning" outcome).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

from rlhf_eval.gate.records import GateReport, RuleResult
from rlhf_eval.gate.rules import fmt

STATUS_MARK = {"pass": "✅ pass", "warn": "⚠️ warn", "fail": "❌ fail", "error": "⛔ error"}


def value_cell(result: RuleResult) -> str:
    """The candidate's value with its interval, e.g. ``7.65 [5.93, 9.37]``."""
    text = fmt(result.value)
    if result.ci_low is not None and result.ci_high is not None:
        text += f" [{fmt(result.ci_low)}, {fmt(result.ci_high)}]"
    return text


def threshold_cell(result: RuleResult) -> str:
    """The rule without its metric name, with a relative threshold's resolved number:
    ``<= reference + 20% = 18.52``, ``upper bound <= 10``, ``== false``."""
    text = result.threshold_text
    if text.startswith(result.metric + " "):
        text = text[len(result.metric) + 1 :]
    if result.kind == "relative":
        text += f" = {fmt(result.threshold)}"
    return text


def table_rows(report: GateReport) -> list[dict[str, str]]:
    """One row per rule with the cells the table, the Markdown and the HTML report show."""
    return [
        {
            "status": r.status.upper(),
            "rule": r.rule,
            "severity": r.severity,
            "metric": r.metric,
            "value": value_cell(r),
            "threshold": threshold_cell(r),
            "baseline": "-" if r.baseline is None else f"{fmt(r.baseline)} ({r.baseline_label})",
            "message": r.message,
        }
        for r in report.results
    ]


def junit_xml(report: GateReport) -> str:
    """The report as a JUnit XML document: a ``testsuite`` named for the policy, a ``testcase`` per rule."""
    counts = report.counts
    suites = ET.Element("testsuites", name="rlhf-eval gate")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"rlhf-eval gate: {report.policy_name} on {report.candidate}",
        tests=str(len(report.results)),
        failures=str(counts["fail"]),
        errors=str(counts["error"]),
        skipped="0",
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("candidate", report.candidate),
        ("baseline", report.baseline),
        ("policy", report.policy_path),
        ("policy_version", str(report.policy_version)),
        ("database", report.db),
    ):
        ET.SubElement(props, "property", name=name, value=value)
    for r in report.results:
        case = ET.SubElement(suite, "testcase", classname=f"rlhf_eval.gate.{report.policy_name}", name=r.rule)
        if r.status == "fail":
            ET.SubElement(case, "failure", message=r.message, type=r.severity).text = r.message
        elif r.status == "error":
            ET.SubElement(case, "error", message=r.message, type="missing-data").text = r.message
        else:
            prefix = "warning: " if r.status == "warn" else ""
            ET.SubElement(case, "system-out").text = prefix + r.message
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: GateReport) -> str:
    """A GitHub-flavoured Markdown summary: the headline and a table of every rule."""
    icon = {0: "✅", 1: "❌", 2: "⛔"}[report.exit_code]
    lines = [
        f"### {icon} {markdown_cell(report.headline)}",
        "",
        f"Policy `{report.policy_path}` · database `{report.db}`",
        "",
        "| status | rule | metric | value [95% CI] | threshold | baseline | explanation |",
        "|---|---|---|---|---|---|---|",
    ]
    for r, row in zip(report.results, table_rows(report), strict=True):
        cells = [
            STATUS_MARK[r.status],
            f"`{row['rule']}`",
            f"`{row['metric']}`",
            row["value"],
            row["threshold"],
            row["baseline"],
            row["message"],
        ]
        lines.append("| " + " | ".join(markdown_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_text(path: str | Path, text: str) -> None:
    """Write atomically (temp file, then rename), so CI never reads half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)


def append_step_summary(report: GateReport, environ: Mapping[str, str] | None = None) -> Path | None:
    """Append the Markdown to ``$GITHUB_STEP_SUMMARY`` when GitHub Actions set it; the path or None."""
    env = os.environ if environ is None else environ
    target = env.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(markdown(report) + "\n")
    return Path(target)
