"""Analyse runs of a database and store the results (``analysis_points``, ``analysis_runs``,
``bon_values``), which the ``checkpoint_summary`` and ``overoptimization`` views join.

The data is read with a read-only connection that is closed before anything is written, and the
results are written through the store's single writer (``rlhf_eval.store.Store``), so readers
keep working. Rerunning replaces a run's rows: the analysis is a pure function of the stored
samples, the options and the seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_eval.analysis.length import bucket_means, debiased_mean, fit_log_length, length_explained_share
from rlhf_eval.analysis.load import RunData, analysable_runs, bon_value_rows, load_run
from rlhf_eval.analysis.overopt import EARLY_WARNING_POINTS, Interval, RunAnalysis, analyze_curve
from rlhf_eval.analysis.resample import DEFAULT_LEVEL, DEFAULT_REPLICATES, DEFAULT_SEED
from rlhf_eval.errors import UserInputError


@dataclass(frozen=True)
class AnalysisOptions:
    """How runs are analysed; stored with the results (the seed makes them reproducible)."""

    kl_estimator: str | None = None  # None: kl_full for RL runs, the analytic bound for best-of-n
    replicates: int = DEFAULT_REPLICATES
    seed: int = DEFAULT_SEED
    level: float = DEFAULT_LEVEL
    length_buckets: int = 5
    early_warning_points: int = EARLY_WARNING_POINTS

    def __post_init__(self) -> None:
        if self.replicates < 100:
            raise UserInputError(f"--replicates {self.replicates}: use at least 100 (1000 or more for reported CIs)")
        if not 0.5 <= self.level < 1.0:
            raise UserInputError(f"--level {self.level}: use a confidence level in [0.5, 1), e.g. 0.95")
        if self.length_buckets < 1:
            raise UserInputError(f"--length-buckets {self.length_buckets}: use at least 1")
        if self.early_warning_points < 2:
            raise UserInputError(f"--early-warning-points {self.early_warning_points}: a slope needs at least 2")


@dataclass(frozen=True)
class RunReport:
    """One analysed run: the verdict and the rows stored for it."""

    analysis: RunAnalysis
    point_rows: list[dict[str, Any]]
    run_row: dict[str, Any]


def analyze_database(
    db: str | Path,
    runs: Sequence[str] | None = None,
    options: AnalysisOptions | None = None,
    *,
    write: bool = True,
    skip_unknown: bool = False,
) -> tuple[list[RunReport], list[str]]:
    """Analyse ``runs`` (default: every run) of ``db``; returns the reports and the runs skipped
    with why (too few points, or with ``skip_unknown`` not analysable: a best-of-n pool). With
    ``write``, the results are stored."""
    from rlhf_eval.query import read_connection

    options = options or AnalysisOptions()
    reports: list[RunReport] = []
    skipped: list[str] = []
    bon_rows: list[dict[str, Any]] = []
    with read_connection(db) as con:
        require_schema(con, db)
        known = analysable_runs(con)
        if not known:
            raise UserInputError(
                f"{db}: no evaluated run to analyse; fill it with `rlhf-eval eval PATH --ref REF --suite SUITE "
                f"--proxy RM --gold RM --db {db}` or `rlhf-eval demo`"
            )
        wanted = list(runs) if runs else known
        for run in wanted:
            if run not in known and skip_unknown:
                skipped.append(f"{run}: not analysed on its own (a best-of-n pool)")
                continue
            if run not in known:
                from rlhf_eval.errors import did_you_mean

                raise UserInputError(f"--run {run!r}: no such run in {db}.{did_you_mean(run, known)}")
            data = load_run(con, run, options.kl_estimator, options.length_buckets)
            if data.curve.kind == "bon":
                bon_rows += bon_value_rows(data)
            if data.curve.n_points < 2:
                skipped.append(f"{run}: {data.curve.n_points} point(s); the analysis needs the reference and one more")
                continue
            unusable = why_not_analysable(data)
            if unusable:
                skipped.append(f"{run}: {unusable}")
                continue
            try:
                reports.append(report_run(data, options))
            except ValueError as exc:  # e.g. no prompt complete at every point
                skipped.append(f"{run}: {exc}")
    if write and (reports or bon_rows):
        store_reports(db, reports, bon_rows)
    return reports, skipped


def require_schema(con: Any, db: str | Path) -> None:
    """The analysis tables exist, or a one-line error saying how to get them."""
    tables = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if "checkpoints" not in tables:
        raise UserInputError(
            f"{db}: not an rlhf-eval database (no checkpoints table); pass --db with the file "
            "`rlhf-eval eval` or `rlhf-eval demo` wrote"
        )
    if "checkpoint_stats" not in tables:
        raise UserInputError(
            f"{db}: written by an older rlhf-eval (schema before 0003_checkpoint_stats); run any "
            "`rlhf-eval eval` on it once to upgrade it in place, then analyse"
        )


def why_not_analysable(data: RunData) -> str:
    """Why a run's rewards cannot be normalized (the reference has no spread), or ''."""
    for name in ("gold", "proxy"):
        sd = data.curve.reference_sd.get(name, float("nan"))
        values = data.curve.metrics[name][0]
        scale = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 0.0
        if not np.isfinite(sd) or sd <= 1e-9 * max(scale, 1.0):
            return (
                f"the reference's {name} reward has no spread over its samples (sd {sd:.3g}), so rewards cannot be "
                "normalized; evaluate more prompts or --samples"
            )
    return ""


def report_run(data: RunData, options: AnalysisOptions) -> RunReport:
    """The verdict of one run and its rows."""
    analysis = analyze_curve(
        data.curve,
        replicates=options.replicates,
        seed=options.seed,
        level=options.level,
        early_warning_points=options.early_warning_points,
    )
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return RunReport(analysis, point_rows(data, analysis, now), run_row(analysis, now))


def point_rows(data: RunData, analysis: RunAnalysis, now: datetime) -> list[dict[str, Any]]:
    curve = data.curve
    fit = fit_log_length(data.reference_gold, data.reference_lengths)
    ref_bucket_gold = bucket_means(data.reference_gold, data.reference_lengths, data.length_edges)
    buckets = [f"length_bucket_{b}" for b in range(len(data.length_edges) + 1)]
    shares = np.stack([curve.means(name) for name in buckets], axis=1)  # (K, buckets)
    gold_means, log_lengths = curve.means("gold"), curve.means("log_length")
    rows = []
    for k, point in enumerate(analysis.points):
        explained, share = length_explained_share(shares[k], shares[0], ref_bucket_gold, gold_means[k] - gold_means[0])
        analytic, plugin, differ, duplicates = data.bon_kl.get(point.label, (math.nan, math.nan, None, math.nan))
        rows.append(
            {
                "run": curve.run,
                "checkpoint": point.label,
                "step": point.step,
                "kl_estimator": curve.kl_estimator,
                "kl": point.kl,
                "sqrt_kl": point.sqrt_kl,
                **point.proxy_norm.as_dict("proxy_norm"),
                **point.gold_norm.as_dict("gold_norm"),
                "prob_best": point.prob_best,
                **point.drop_from_best.as_dict("gold_drop_from_best"),
                "past_peak": point.past_peak,
                "gold_debiased": debiased_mean(fit, float(gold_means[k]), float(log_lengths[k])),
                "gold_length_explained": explained,
                "gold_length_share": share,
                "proxy_gold_tau": data.taus.get(point.label, math.nan),
                "proxy_disagreement": data.disagreement.get(point.label, math.nan),
                "kl_bon_analytic": analytic,
                "kl_bon_plugin": plugin,
                "kl_bon_differ": differ,
                "duplicate_fraction": duplicates,
                "analysed_at": now,
            }
        )
    return [clean(row) for row in rows]


def run_row(analysis: RunAnalysis, now: datetime) -> dict[str, Any]:
    best = max(analysis.points, key=lambda p: p.prob_best)
    row: dict[str, Any] = {
        "run": analysis.run,
        "method": analysis.method,
        "kind": analysis.kind,
        "kl_estimator": analysis.kl_estimator,
        "n_points": analysis.n_points,
        "n_prompts": analysis.n_prompts,
        "replicates": analysis.replicates,
        "seed": analysis.seed,
        "peak_checkpoint": analysis.peak.label,
        "peak_step": analysis.peak.step,
        "peak_kl": analysis.peak.kl,
        "peak_sqrt_kl": analysis.peak.sqrt_kl,
        "gold_at_peak": analysis.peak.gold,
        "gold_at_last": analysis.last.gold,
        "gold_norm_at_peak": analysis.peak.gold_norm.estimate,
        "gold_norm_at_last": analysis.last.gold_norm.estimate,
        "last_checkpoint": analysis.last.label,
        "last_step": analysis.last.step,
        **analysis.gold_drop.as_dict("gold_drop"),
        **analysis.proxy_gain_after_peak.as_dict("proxy_gain_after_peak"),
        "overoptimized": analysis.overoptimized,
        "best_checkpoint": best.label,
        "best_probability": best.prob_best,
        **analysis.proxy_slope_after_peak.as_dict("proxy_slope_after_peak"),
        **analysis.gold_slope_after_peak.as_dict("gold_slope_after_peak"),
        "diverging": analysis.diverging,
        "early_warning": analysis.early_warning,
        "early_warning_points": analysis.early_warning_points,
        **analysis.gold_slope_recent.as_dict("gold_slope_recent"),
        "gold_falling": analysis.gold_falling,
        **fit_columns(analysis.fit),
        "evidence": analysis.evidence,
        "notes": "; ".join(analysis.notes),
        "analysed_at": now,
    }
    return clean(row)


def fit_columns(fit: Any) -> dict[str, Any]:
    """The Gao fit's columns of analysis_runs (all NULL when there is no fit)."""
    names = ("alpha", "beta", "d_star", "kl_star", "r_star")
    if fit is None:
        columns: dict[str, Any] = {"fit_form": None, "fit_peak_resolved": None, "fit_note": "no fit"}
        for name in names:
            columns |= Interval.missing().as_dict(f"fit_{name}")
        return columns
    columns = {"fit_form": fit.fit.form, "fit_peak_resolved": fit.peak_resolved, "fit_note": fit.reason}
    for name in names:
        estimate, (low, high) = getattr(fit.fit, name), getattr(fit, f"{name}_ci")
        columns |= Interval(float(estimate), float(low), float(high)).as_dict(f"fit_{name}")
    return columns


def clean(row: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinity become NULL (None); numpy scalars become Python ones."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out


def store_reports(db: str | Path, reports: Sequence[RunReport], bon_rows: Sequence[dict[str, Any]]) -> None:
    """Replace the stored analysis of the reported runs (one writer transaction)."""
    from rlhf_eval.store import Store

    store = Store(db)
    with store.writer():
        runs = [r.analysis.run for r in reports]
        if runs:  # a run's old point rows go first, so points that no longer exist do not linger
            store.query("DELETE FROM analysis_points WHERE list_contains(?, run)", [runs])
        store.stage("bon_values", list(bon_rows))
        store.stage("analysis_points", [row for r in reports for row in r.point_rows])
        store.stage("analysis_runs", [r.run_row for r in reports])
