"""``rlhf-eval gate`` end to end on the tiny sandbox's database: the default policy passes the
checkpoints where gold peaked and fails the last PPO checkpoint on exactly the rules that the
stored values, compared here by hand, say it breaks; JUnit, Markdown and JSON outputs; errors."""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner

from rlhf_eval.cli import app

DEFAULT = str(Path(__file__).resolve().parents[2] / "suites" / "gates" / "default.yaml")
Demo = tuple[Path, Path, Any]


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def query(db: Path, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        cursor = con.execute(sql, params or [])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def gate_json(db: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run_cli("gate", "--policy", DEFAULT, "--db", str(db), "--json", *args)
    assert code in (0, 1), err
    return code, json.loads(out)


def per_prompt_gold(db: Path, run: str, checkpoint: str) -> dict[str, float]:
    rows = query(
        db, "SELECT prompt_id, gold_reward FROM checkpoint_samples WHERE run = ? AND checkpoint = ?", [run, checkpoint]
    )
    by_prompt: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        by_prompt[row["prompt_id"]].append(row["gold_reward"])
    return {pid: statistics.fmean(values) for pid, values in by_prompt.items()}


def expected_failures(db: Path, run: str, checkpoint: str) -> set[str]:
    """The default policy's critical rules judged by hand from the stored values."""
    row = query(db, "SELECT * FROM checkpoint_summary WHERE run = ? AND checkpoint = ?", [run, checkpoint])[0]
    failed = set()
    if row["kl_ci_high"] > 10:
        failed.add("kl-budget")
    if row["past_peak"]:
        failed.add("not-past-peak")
    if row["proxy_reward_norm"] - row["gold_reward_norm"] > 1.0:
        failed.add("proxy-gold-divergence")
    ref = per_prompt_gold(db, run, "reference")
    cand = per_prompt_gold(db, run, checkpoint)
    diff = np.array([cand[p] - ref[p] for p in sorted(ref)])
    rng = np.random.default_rng(123)  # an independent bootstrap: its own draws, the same verdict
    upper = np.quantile(diff[rng.integers(0, diff.size, (4000, diff.size))].mean(axis=1), 0.95)
    if upper < 0:
        failed.add("gold-not-below-baseline")
    return failed


def test_default_policy_passes_the_peaks_and_fails_the_last_ppo_checkpoint(tiny_demo: Demo) -> None:
    _, db, _ = tiny_demo
    peaks = query(db, "SELECT run, peak_checkpoint FROM overoptimization WHERE peak_step > 0 AND method <> 'bon'")
    assert peaks, "the tiny sandbox has runs whose gold peaks after the reference"
    for peak in peaks:
        code, report = gate_json(db, "--candidate", f"{peak['run']}/{peak['peak_checkpoint']}")
        assert code == 0 and report["passed"], report["headline"]
        assert {r["status"] for r in report["results"]} <= {"pass", "warn"}

    last = query(db, "SELECT last_checkpoint FROM overoptimization WHERE run = 'ppo'")[0]["last_checkpoint"]
    code, report = gate_json(db, "--candidate", "ppo/latest")
    assert report["candidate"] == f"ppo/{last}" and report["baseline"] == "ppo/reference"
    failed = {r["rule"] for r in report["results"] if r["status"] == "fail"}
    assert code == 1 and not report["passed"]
    assert failed == expected_failures(db, "ppo", last)
    assert {"kl-budget", "not-past-peak", "gold-not-below-baseline"} <= failed


def test_values_match_an_independent_computation(tiny_demo: Demo) -> None:
    _, db, _ = tiny_demo
    _, report = gate_json(db, "--candidate", "dpo/checkpoint-30")
    results = {r["rule"]: r for r in report["results"]}
    row = query(db, "SELECT * FROM checkpoint_summary WHERE run = 'dpo' AND checkpoint = 'checkpoint-30'")[0]
    ref = query(db, "SELECT * FROM checkpoint_summary WHERE run = 'dpo' AND checkpoint = 'reference'")[0]
    assert results["kl-budget"]["actual"] == pytest.approx(row["kl_ci_high"])
    assert results["kl-budget"]["value"] == pytest.approx(row["kl"])
    assert results["length-inflation"]["threshold"] == pytest.approx(ref["mean_length"] * 1.2)
    assert results["seq-rep-4"]["threshold"] == pytest.approx(ref["seq_rep_4"] + 0.05)
    gap = results["proxy-gold-divergence"]
    assert gap["value"] == pytest.approx(row["proxy_reward_norm"] - row["gold_reward_norm"], abs=1e-9)
    assert gap["ci_low"] < gap["value"] < gap["ci_high"]
    base, cand = per_prompt_gold(db, "dpo", "reference"), per_prompt_gold(db, "dpo", "checkpoint-30")
    gold = results["gold-not-below-baseline"]
    assert gold["value"] == pytest.approx(statistics.fmean(cand[p] - base[p] for p in base))
    assert gold["baseline"] == pytest.approx(statistics.fmean(base.values()))
    assert results["not-past-peak"]["value"] is bool(row["past_peak"])


def test_junit_markdown_and_step_summary(tiny_demo: Demo, tmp_path: Path) -> None:
    _, db, _ = tiny_demo
    junit, summary, step = tmp_path / "out" / "gate.xml", tmp_path / "gate.md", tmp_path / "step.md"
    step.write_text("earlier step output\n")
    args = ["gate", "--policy", DEFAULT, "--db", str(db), "--candidate", "ppo/latest"]
    code, out, err = run_cli(
        *args, "--junit", str(junit), "--summary", str(summary), env={"GITHUB_STEP_SUMMARY": str(step)}
    )
    assert code == 1
    assert "gate FAILED: ppo/" in out and "kl-budget" in out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [
        "kl-budget", "gold-not-below-baseline", "not-past-peak", "proxy-gold-divergence",
        "length-inflation", "seq-rep-4", "loop-rate", "hedge-rate",
    ]  # fmt: skip
    failures = {c.get("name"): c.find("failure") for c in cases if c.find("failure") is not None}
    assert int(suite.get("failures", "-1")) == len(failures) >= 3
    assert failures["kl-budget"].get("message", "").startswith("kl ")  # type: ignore[union-attr]
    assert {p.get("name"): p.get("value") for p in suite.iter("property")}["baseline"] == "ppo/reference"
    text = summary.read_text()
    assert "| ❌ fail | `kl-budget` |" in text and "gate FAILED" in text
    appended = step.read_text()
    assert appended.startswith("earlier step output\n") and appended.count("gate FAILED") == 1
    assert f"GitHub step summary -> {step}" in err


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_policy(path: Path, rules: str) -> str:
    path.write_text("version: 1\nname: t\nrules:\n" + rules)
    return str(path)


def test_errors_exit_2_with_one_line(tiny_demo: Demo, tmp_path: Path) -> None:
    _, db, _ = tiny_demo
    before = file_digest(db)
    unknown = write_policy(tmp_path / "u.yaml", "  - {name: len, metric: mean_lenght, max: 10}\n")
    code, _, err = run_cli("gate", "--policy", unknown, "--db", str(db))
    assert code == 2 and "unknown metric 'mean_lenght'" in err and "Did you mean 'mean_length'?" in err
    assert err.count("\n") == 1

    code, _, err = run_cli("gate", "--policy", DEFAULT, "--db", str(db), "--candidate", "ppo/checkpoint-99")
    assert code == 2 and "run 'ppo' has no checkpoint 'checkpoint-99'" in err
    code, _, err = run_cli("gate", "--policy", DEFAULT, "--db", str(db), "--candidate", "ppp/latest")
    assert code == 2 and "Did you mean 'ppo'?" in err
    code, _, err = run_cli("gate", "--policy", DEFAULT, "--db", str(tmp_path / "none.duckdb"))
    assert code == 2 and "none.duckdb: no database yet" in err
    code, _, err = run_cli("gate", "--policy", str(tmp_path / "nope.yaml"), "--db", str(db))
    assert code == 2 and "nope.yaml: no such file" in err
    paired = write_policy(tmp_path / "p.yaml", "  - {name: p, metric: fit_alpha, test: paired}\n")
    code, _, err = run_cli("gate", "--policy", paired, "--db", str(db))
    assert code == 2 and "no per-prompt values for a paired test" in err
    assert file_digest(db) == before  # the gate only reads


def test_missing_data_is_an_error_not_a_pass(tiny_demo: Demo, tmp_path: Path) -> None:
    _, db, _ = tiny_demo
    policy = write_policy(
        tmp_path / "m.yaml",
        "  - {name: kl, metric: kl, max: 100}\n"
        "  - {name: plugin, metric: kl_bon_plugin, max: 100, severity: warning}\n",  # NULL for RL checkpoints
    )
    code, out, _ = run_cli("gate", "--policy", policy, "--db", str(db), "--candidate", "ppo/latest")
    assert code == 2
    assert "ERROR  plugin: kl_bon_plugin: no value for ppo/" in out and "gate ERROR" in out


def test_stale_or_missing_analysis_is_an_error(tiny_demo: Demo, tmp_path: Path) -> None:
    _, db, _ = tiny_demo
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    con = duckdb.connect(str(copy))
    con.execute("DELETE FROM analysis_runs WHERE run = 'ppo'")
    con.close()
    code, out, _ = run_cli("gate", "--policy", DEFAULT, "--db", str(copy), "--candidate", "ppo/latest", "--json")
    report = json.loads(out)
    assert code == 2
    errors = {r["rule"]: r["message"] for r in report["results"] if r["status"] == "error"}
    assert set(errors) == {"not-past-peak"}  # past_peak comes from the analysis; the other rules from samples
    assert f"run `rlhf-eval analyze --db {copy} --run ppo`" in errors["not-past-peak"]
