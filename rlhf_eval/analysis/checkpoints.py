"""Compare two stored checkpoints: a paired bootstrap over their shared prompts for every metric.

A checkpoint is named ``RUN/CHECKPOINT`` (``ppo/checkpoint-18``, ``bon/n=16``, ``ppo/reference``)
or ``RUN/STEP``; it is read with the run's loader (``rlhf_eval.analysis.load``), so a best-of-n
point compares like any checkpoint. Prompts are matched by id; each metric is compared on the
prompts where both sides have it, with the same bootstrap replicates for every metric
(``rlhf_eval.analysis.compare``), and Holm's correction across the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rlhf_eval.analysis.compare import MetricComparison, compare_metrics
from rlhf_eval.analysis.load import SAMPLE_VALUES, RunData, analysable_runs, load_run
from rlhf_eval.analysis.resample import DEFAULT_LEVEL, DEFAULT_REPLICATES, DEFAULT_SEED
from rlhf_eval.errors import UserInputError, did_you_mean

#: Direction of each compared metric (None: a change is neither good nor bad by itself).
HIGHER_IS_BETTER: dict[str, bool | None] = {
    "gold_reward": True,
    "proxy_reward": True,
    "kl": None,
    "n_tokens": None,
    "ended_eos": None,
    "length_chars": None,
    "length_words": None,
    "md_headers": None,
    "md_list_items": None,
    "md_bold": None,
    "seq_rep_1": False,
    "seq_rep_2": False,
    "seq_rep_3": False,
    "seq_rep_4": False,
    "distinct_1": True,
    "distinct_2": True,
    "compression_ratio": False,
    "tail_loop": False,
    "hedge": False,
    "apology": False,
    "refusal": False,
    "closer": False,
}


@dataclass(frozen=True)
class PointRef:
    run: str
    checkpoint: str


@dataclass(frozen=True)
class CheckpointComparison:
    a: PointRef
    b: PointRef
    n_shared_prompts: int
    metrics: list[MetricComparison]


def parse_point(text: str) -> tuple[str, str]:
    """``RUN/CHECKPOINT`` split at the first slash (checkpoint names may hold more).

    >>> parse_point("ppo/checkpoint-18"), parse_point("bon/n=16")
    (('ppo', 'checkpoint-18'), ('bon', 'n=16'))
    """
    run, sep, checkpoint = text.partition("/")
    if not sep or not run or not checkpoint:
        raise UserInputError(f"{text!r}: name a checkpoint as RUN/CHECKPOINT (e.g. ppo/checkpoint-18) or RUN/STEP")
    return run, checkpoint


def point_values(data: RunData, checkpoint: str) -> tuple[str, dict[str, dict[str, float]]]:
    """(label, metric -> prompt id -> value) of one point of a loaded run; a step number also names it."""
    curve = data.curve
    labels = list(curve.labels)
    if checkpoint in labels:
        index = labels.index(checkpoint)
    elif checkpoint.isdigit() and int(checkpoint) in curve.steps:
        index = curve.steps.index(int(checkpoint))
    else:
        known = ", ".join(labels)
        raise UserInputError(
            f"{curve.run}/{checkpoint}: no such checkpoint; it has {known}.{did_you_mean(checkpoint, labels)}"
        )
    values: dict[str, dict[str, float]] = {"kl": row_values(curve.kl[index], curve.prompt_ids)}
    for name in SAMPLE_VALUES:
        values[name] = row_values(curve.metrics[name][index], curve.prompt_ids)
    return labels[index], values


def stored_label(con: Any, run: str, name: str) -> str | None:
    """The checkpoint of ``run`` in ``checkpoints`` that ``name`` (a label, else a step) names."""
    step = int(name) if name.isdigit() else None
    rows = con.execute(
        "SELECT checkpoint FROM checkpoints WHERE run = ? AND (checkpoint = ? OR step = ?) "
        "ORDER BY checkpoint = ? DESC, checkpoint LIMIT 1",
        [run, name, step, name],
    ).fetchall()
    return str(rows[0][0]) if rows else None


def row_values(row: NDArray[np.float64], prompt_ids: tuple[str, ...]) -> dict[str, float]:
    return {pid: float(v) for pid, v in zip(prompt_ids, row, strict=True)}


def compare_checkpoints(
    db: str | Path,
    a: str,
    b: str,
    metrics: list[str] | None = None,
    *,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> CheckpointComparison:
    """B − A for every metric (or those named), paired on shared prompts."""
    from rlhf_eval.query import read_connection

    chosen = metrics or list(HIGHER_IS_BETTER)
    for name in chosen:
        if name not in HIGHER_IS_BETTER:
            raise UserInputError(
                f"--metric {name!r}: unknown metric; use one of {', '.join(HIGHER_IS_BETTER)}."
                f"{did_you_mean(name, list(HIGHER_IS_BETTER))}"
            )
    from rlhf_eval.analysis.runner import require_schema

    (run_a, ckpt_a), (run_b, ckpt_b) = parse_point(a), parse_point(b)
    with read_connection(db) as con:
        require_schema(con, db)
        known = analysable_runs(con)
        loaded: dict[str, RunData] = {}
        for run in (run_a, run_b):
            if run not in known:
                raise UserInputError(
                    f"{run!r}: no such run in {db}; runs: {', '.join(known)}.{did_you_mean(run, known)}"
                )
        requested: dict[str, list[str]] = {}
        for run, checkpoint in ((run_a, ckpt_a), (run_b, ckpt_b)):
            requested.setdefault(run, []).append(checkpoint)
        for run, names in requested.items():
            # two points of a run need those points and its reference, not the whole run; a name
            # that matches no stored checkpoint (or a best-of-n run) loads the whole run
            labels = [stored_label(con, run, name) for name in names]
            only = None if None in labels else [label for label in labels if label is not None]
            loaded[run] = load_run(con, run, checkpoints=only)
    label_a, values_a = point_values(loaded[run_a], ckpt_a)
    label_b, values_b = point_values(loaded[run_b], ckpt_b)
    shared = sorted(set(values_a["gold_reward"]) & set(values_b["gold_reward"]))
    if not shared:
        raise UserInputError(f"{a} and {b} share no prompt; evaluate both on the same suite")
    arrays = {}
    for name in chosen:
        left = np.array([values_a[name].get(pid, np.nan) for pid in shared])
        right = np.array([values_b[name].get(pid, np.nan) for pid in shared])
        if (np.isfinite(left) & np.isfinite(right)).any():
            arrays[name] = (left, right)
    directions = {name: HIGHER_IS_BETTER[name] for name in arrays if HIGHER_IS_BETTER[name] is not None}
    results = compare_metrics(arrays, directions, replicates=replicates, seed=seed, level=level)  # type: ignore[arg-type]
    return CheckpointComparison(PointRef(run_a, label_a), PointRef(run_b, label_b), len(shared), results)


@dataclass(frozen=True)
class RankingResult:
    """A Bradley–Terry ranking of stored points (``RUN/CHECKPOINT`` labels), and the Plackett–Luce
    worths of the same points from per-prompt K-way rankings."""

    ranking: Any
    plackett_luce: Any
    n_external_labels: int


def gold_matrix(db: str | Path, runs: list[str] | None) -> tuple[list[str], NDArray[np.float64], list[str]]:
    """(labels, (K, P) per-prompt gold, prompt ids) of every point of ``runs`` (default: all), the
    first run's reference first and once: other runs' references with the same per-prompt gold
    are the same policy and are left out."""
    from rlhf_eval.analysis.runner import require_schema
    from rlhf_eval.query import read_connection

    with read_connection(db) as con:
        require_schema(con, db)
        known = analysable_runs(con)
        if not known:
            raise UserInputError(f"{db}: no evaluated run to rank; fill it with `rlhf-eval eval` or `rlhf-eval demo`")
        wanted = runs or known
        for run in wanted:
            if run not in known:
                raise UserInputError(f"--run {run!r}: no such run in {db}.{did_you_mean(run, known)}")
        loaded = [load_run(con, run) for run in wanted]
    prompt_ids = sorted({pid for data in loaded for pid in data.curve.prompt_ids})
    column = {pid: j for j, pid in enumerate(prompt_ids)}
    labels: list[str] = []
    rows: list[NDArray[np.float64]] = []
    for data in loaded:
        curve = data.curve
        for k, label in enumerate(curve.labels):
            row = np.full(len(prompt_ids), np.nan)
            for j, pid in enumerate(curve.prompt_ids):
                row[column[pid]] = curve.metrics["gold"][k, j]
            if k == 0 and rows and np.allclose(row, rows[0], equal_nan=True):
                continue
            labels.append(f"{curve.run}/{label}")
            rows.append(row)
    return labels, np.vstack(rows), prompt_ids


def rank_checkpoints(
    db: str | Path,
    runs: list[str] | None = None,
    labels_file: str | Path | None = None,
    *,
    replicates: int = 1000,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> RankingResult:
    """Bradley–Terry over pairwise gold comparisons on shared prompts (ties half), anchored at the
    first run's reference, with prompt-cluster bootstrap intervals, plus external pairwise labels
    (``prompt_id, a, b, winner`` JSONL) in the same fit; and Plackett–Luce on per-prompt rankings."""
    from rlhf_eval.analysis.ranking import (
        bradley_terry_ranking,
        fit_plackett_luce,
        rankings_from_scores,
        read_pairwise_labels,
    )

    labels, scores, prompt_ids = gold_matrix(db, runs)
    extra = read_pairwise_labels(labels_file) if labels_file else []
    ranking = bradley_terry_ranking(
        scores, labels, anchor=0, replicates=replicates, seed=seed, extra=extra, prompt_ids=prompt_ids, level=level
    )
    per_prompt = rankings_from_scores(scores, ties="drop")
    plackett_luce = fit_plackett_luce(per_prompt, len(labels), anchor=0) if per_prompt else None
    return RankingResult(ranking, plackett_luce, len(extra))
