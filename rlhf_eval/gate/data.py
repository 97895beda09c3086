"""What the gate reads from the database: the candidate, baseline and reference points, their runs'
verdicts, and the per-prompt values paired rules and derived metrics need.

The database is opened read-only (``rlhf_eval.query``), so a gate can run while an evaluation
writes. Names resolve as in ``rlhf-eval compare``: ``RUN/CHECKPOINT``, ``RUN/STEP``, ``RUN/latest``
(the run's last step), and ``latest`` (the most recently evaluated trained checkpoint of any run:
best-of-n points and references are not release candidates).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_eval.errors import UserInputError, did_you_mean

#: Columns of ``checkpoint_summary`` that come from the over-optimization analysis: a rule on one
#: of them needs an analysis that is not stale.
ANALYSIS_COLUMNS = frozenset(
    {
        "proxy_reward_norm", "proxy_reward_norm_ci_low", "proxy_reward_norm_ci_high",
        "gold_reward_norm", "gold_reward_norm_ci_low", "gold_reward_norm_ci_high",
        "gold_reward_debiased", "gold_length_share", "prob_best", "past_peak", "kl_bon_differ",
        "proxy_gold_tau", "proxy_disagreement",
    }
)  # fmt: skip

#: Metrics computed by the gate from per-prompt values (not columns of a view).
DERIVED = {
    "proxy_gold_gap": (
        "normalized proxy minus normalized gold, mean over prompts of "
        "(proxy_k(p) − proxy_ref(p))/sd_proxy,ref − (gold_k(p) − gold_ref(p))/sd_gold,ref, with a prompt bootstrap CI"
    ),
}

#: checkpoint_summary's names of per-sample means -> the per-prompt metric a paired rule compares.
PAIRED_ALIASES = {
    "mean_length": "n_tokens",
    "mean_chars": "length_chars",
    "mean_words": "length_words",
    "loop_rate": "tail_loop",
    "hedge_rate": "hedge",
    "apology_rate": "apology",
    "refusal_rate": "refusal",
    "closer_rate": "closer",
    "eos_rate": "ended_eos",
}


@dataclass(frozen=True)
class Point:
    """A resolved checkpoint: its ``checkpoint_summary`` row and its run's ``overoptimization`` row."""

    run: str
    checkpoint: str
    step: int
    row: dict[str, Any]
    run_row: dict[str, Any] | None

    @property
    def label(self) -> str:
        return f"{self.run}/{self.checkpoint}"

    def analysis_problem(self, db: str) -> str | None:
        """Why this point's analysis columns cannot be trusted, or None."""
        fix = f"run `rlhf-eval analyze --db {db} --run {self.run}`"
        if self.run_row is None:
            return f"run {self.run!r} has not been analysed; {fix}"
        if self.run_row.get("stale"):
            return f"the analysis of run {self.run!r} is stale (points were stored after it); {fix}"
        return None


@dataclass
class GateData:
    db: str
    candidate: Point
    baseline: Point
    reference: Point
    summary_columns: list[str]
    run_columns: list[str]
    runs: dict[str, Any] = field(default_factory=dict)  # run -> RunData, loaded on demand


def known_metrics(summary_columns: Sequence[str], run_columns: Sequence[str]) -> list[str]:
    return sorted({*summary_columns, *run_columns, *DERIVED})


def pairable_metrics() -> list[str]:
    from rlhf_eval.analysis.checkpoints import HIGHER_IS_BETTER

    return sorted({*HIGHER_IS_BETTER, *PAIRED_ALIASES})


def paired_name(metric: str) -> str:
    return PAIRED_ALIASES.get(metric, metric)


def columns_of(con: Any, view: str) -> list[str]:
    return [row[0] for row in con.execute(f"SELECT column_name FROM (DESCRIBE SELECT * FROM {view})").fetchall()]


def fetch_rows(con: Any, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    cursor = con.execute(sql, list(params))
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def run_points(con: Any, run: str) -> list[dict[str, Any]]:
    return fetch_rows(con, "SELECT * FROM checkpoint_summary WHERE run = ? ORDER BY step, checkpoint", [run])


def run_row(con: Any, run: str) -> dict[str, Any] | None:
    rows = fetch_rows(con, "SELECT * FROM overoptimization WHERE run = ?", [run])
    return rows[0] if rows else None


def known_runs(con: Any) -> list[str]:
    return [r[0] for r in con.execute("SELECT DISTINCT run FROM checkpoint_summary ORDER BY run").fetchall()]


def resolve_point(con: Any, db: str, name: str, option: str) -> Point:
    """The point ``name`` (``latest``, ``RUN/latest``, ``RUN/CHECKPOINT``, ``RUN/STEP``)."""
    if name == "latest":
        rows = fetch_rows(
            con,
            "SELECT run, checkpoint FROM checkpoint_summary WHERE NOT is_reference AND method <> 'bon' "
            "ORDER BY evaluated_at DESC NULLS LAST, step DESC, run LIMIT 1",
            [],
        )
        if not rows:
            raise UserInputError(
                f"{option} latest: {db} holds no evaluated trained checkpoint; evaluate one with `rlhf-eval eval`"
            )
        run, checkpoint = rows[0]["run"], rows[0]["checkpoint"]
    else:
        run, sep, checkpoint = name.partition("/")
        if not sep or not run or not checkpoint:
            raise UserInputError(
                f"{option} {name!r}: name a checkpoint as RUN/CHECKPOINT, RUN/STEP or RUN/latest "
                "(e.g. ppo/checkpoint-18), or 'latest'"
            )
    points = run_points(con, run)
    if not points:
        runs = known_runs(con)
        raise UserInputError(
            f"{option} {name!r}: no run {run!r} in {db}; runs: {', '.join(runs) or 'none'}.{did_you_mean(run, runs)}"
        )
    labels = [p["checkpoint"] for p in points]
    if checkpoint == "latest":
        row = max(points, key=lambda p: (p["step"], p["evaluated_at"] is not None))
    elif checkpoint in labels:
        row = points[labels.index(checkpoint)]
    elif checkpoint.isdigit() and [p for p in points if p["step"] == int(checkpoint)]:
        row = [p for p in points if p["step"] == int(checkpoint)][-1]
    else:
        raise UserInputError(
            f"{option} {name!r}: run {run!r} has no checkpoint {checkpoint!r}; it has {', '.join(labels)}."
            f"{did_you_mean(checkpoint, labels)}"
        )
    return Point(run, row["checkpoint"], int(row["step"]), row, run_row(con, run))


def reference_of(con: Any, point: Point) -> Point:
    """The reference point of ``point``'s run (n=1 for a best-of-n run)."""
    for row in run_points(con, point.run):
        if row["is_reference"]:
            return Point(point.run, row["checkpoint"], int(row["step"]), row, point.run_row)
    raise UserInputError(f"run {point.run!r} has no reference point; evaluate it with --ref so the gate has a baseline")


def load_gate_data(db: str | Path, candidate: str, baseline: str) -> GateData:
    """Resolve the candidate, the baseline (``reference``: the candidate run's reference) and the
    reference, with the columns a policy may name."""
    from rlhf_eval.analysis.runner import require_schema
    from rlhf_eval.query import read_connection

    with read_connection(db) as con:
        require_schema(con, db)
        cand = resolve_point(con, str(db), candidate, "--candidate")
        ref = reference_of(con, cand)
        base = ref if baseline == "reference" else resolve_point(con, str(db), baseline, "--baseline")
        return GateData(
            db=str(db),
            candidate=cand,
            baseline=base,
            reference=ref,
            summary_columns=columns_of(con, "checkpoint_summary"),
            run_columns=columns_of(con, "overoptimization"),
        )


def run_data(data: GateData, run: str) -> Any:
    """The run's per-prompt ``RunData`` (``rlhf_eval.analysis.load``), loaded once."""
    if run not in data.runs:
        from rlhf_eval.analysis.load import load_run
        from rlhf_eval.query import read_connection

        with read_connection(data.db) as con:
            data.runs[run] = load_run(con, run)
    return data.runs[run]


def prompt_values(data: GateData, point: Point, metric: str) -> dict[str, float]:
    """prompt id -> the point's per-prompt value of a pairable metric."""
    from rlhf_eval.analysis.checkpoints import point_values

    _, values = point_values(run_data(data, point.run), point.checkpoint)
    return values[paired_name(metric)]


def proxy_gold_gap(
    data: GateData, point: Point, replicates: int, seed: int, level: float = 0.95
) -> tuple[float, float, float] | None:
    """(mean, CI low, CI high) of the per-prompt normalized proxy − normalized gold of ``point``
    (Gao et al. 2022's centring and scaling, ``rlhf_eval.analysis.curves``), percentile bootstrap
    over prompts; None when either reward has no normalized value."""
    from rlhf_eval.analysis.resample import percentile_interval, prompt_resamples

    curve = run_data(data, point.run).curve
    k = list(curve.labels).index(point.checkpoint)
    gap = curve.normalized("proxy")[k] - curve.normalized("gold")[k]
    gap = gap[np.isfinite(gap)]
    if gap.size == 0:
        return None
    draws = prompt_resamples(gap.size, replicates, seed)
    low, high = percentile_interval(gap[draws].mean(axis=1), level)
    return float(gap.mean()), low, high
