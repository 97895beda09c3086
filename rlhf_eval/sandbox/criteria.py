"""Does a run over-optimize? The sandbox's checks, measured on what the harness stored.

For one run (an RL run's checkpoints, or the best-of-n family of a pool), with the reference as
its first point and points ordered by KL from the reference:

- **proxy rises with KL**: Spearman correlation between mean proxy reward and KL over the points;
- **gold peaks inside**: the point with the highest mean gold is neither the first nor the last;
- **the last point is past the peak**: gold(peak) − gold(last), averaged over prompts, with a
  95% paired bootstrap interval over prompts (prompts are resampled with replacement, the same
  prompts for every point; percentile interval) in which each replicate takes the best of the
  earlier points again (the peak is chosen on the same data: the winner's curse); the drop is
  significant when the interval's lower end is above 0;
- **symptoms**: mean length in words, seq-rep-4 and hedge rate at the peak and at the last point.

Prompts are the unit: each point is summarized per prompt first (mean over its samples), so a
prompt with more samples does not weigh more. A best-of-n point's per-prompt value is the exact
expectation over the prompt's pool (``rlhf_eval.analysis.bon``), its KL the analytic
log n − (n − 1)/n.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_eval.sandbox.proxy import spearman

#: The symptoms checked past the peak: checkpoint_samples column -> label.
SYMPTOMS = {"length_words": "length", "seq_rep_4": "seq-rep-4", "hedge": "hedge rate"}
BOOTSTRAP_REPLICATES = 2000


@dataclass(frozen=True)
class CurvePoint:
    """One point of a run's curve: its label, step and KL, and per-prompt means in a shared prompt order."""

    label: str
    step: int
    kl: float
    proxy: np.ndarray
    gold: np.ndarray
    symptoms: Mapping[str, np.ndarray] = field(default_factory=dict)

    def mean(self, name: str) -> float:
        values = self.proxy if name == "proxy" else self.gold if name == "gold" else self.symptoms[name]
        return float(np.nanmean(values))


@dataclass(frozen=True)
class OveroptimizationCheck:
    """The measured criteria for one run (see the module docstring)."""

    run: str
    points: list[dict[str, Any]]
    proxy_kl_spearman: float
    peak: str
    peak_step: int
    peak_kl: float
    peak_interior: bool
    gold_drop: float
    gold_drop_ci: tuple[float, float]
    symptoms: dict[str, tuple[float, float]]

    @property
    def drop_significant(self) -> bool:
        return self.gold_drop_ci[0] > 0

    @property
    def symptom_grew(self) -> bool:
        return any(last > peak for peak, last in self.symptoms.values())

    def passed(self, min_spearman: float = 0.9) -> bool:
        """Proxy Spearman ≥ ``min_spearman``, an interior gold peak, a significant drop at the
        last point, and at least one symptom higher at the last point than at the peak."""
        return (
            self.proxy_kl_spearman >= min_spearman
            and self.peak_interior
            and self.drop_significant
            and self.symptom_grew
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "proxy_kl_spearman": self.proxy_kl_spearman,
            "peak": self.peak,
            "peak_step": self.peak_step,
            "peak_kl": self.peak_kl,
            "peak_interior": self.peak_interior,
            "gold_drop": self.gold_drop,
            "gold_drop_ci": list(self.gold_drop_ci),
            "drop_significant": self.drop_significant,
            "symptoms": {name: {"peak": p, "last": last} for name, (p, last) in self.symptoms.items()},
            "symptom_grew": self.symptom_grew,
            "passed": self.passed(),
            "points": self.points,
        }


def drop_from_best_ci(
    earlier: np.ndarray, last: np.ndarray, replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of max_k mean(earlier[k]) − mean(last) when prompts (the columns of
    ``earlier`` (K, P) and the entries of ``last`` (P,)) are resampled, the best earlier point
    chosen again inside each replicate: the peak is itself estimated from the same prompts, and the
    interval carries the uncertainty of which point it is (DESIGN.md, "Statistics"). Prompts
    missing at any point are left out.

    >>> drop_from_best_ci(np.array([[2.0, 2.0], [3.0, 3.0]]), np.array([1.0, 1.0]))
    (2.0, 2.0)
    """
    earlier = np.atleast_2d(np.asarray(earlier, dtype=np.float64))
    last = np.asarray(last, dtype=np.float64)
    keep = np.isfinite(earlier).all(axis=0) & np.isfinite(last)
    if not keep.any():
        raise ValueError("no prompt has a value at every point")
    earlier, last = earlier[:, keep], last[keep]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, last.size, size=(replicates, last.size))
    drops = earlier[:, idx].mean(axis=2).max(axis=0) - last[idx].mean(axis=1)
    low, high = np.percentile(drops, [2.5, 97.5])
    return float(low), float(high)


def check_run(run: str, points: Sequence[CurvePoint], seed: int = 0) -> OveroptimizationCheck:
    """The criteria for ``points`` (any order; sorted by KL here, the first being the reference)."""
    if len(points) < 3:
        raise ValueError(f"run {run!r}: {len(points)} points; a peak needs at least 3 (reference and two more)")
    ordered = sorted(points, key=lambda p: (p.kl, p.step))
    golds = [p.mean("gold") for p in ordered]
    peak_index = int(np.argmax(golds))
    peak, last = ordered[peak_index], ordered[-1]
    drop = float(np.nanmean(peak.gold - last.gold))
    earlier = np.stack([p.gold for p in ordered[:-1]])
    ci = drop_from_best_ci(earlier, last.gold, seed=seed) if peak is not last else (0.0, 0.0)
    symptoms = {label: (peak.mean(name), last.mean(name)) for name, label in SYMPTOMS.items() if name in peak.symptoms}
    rows = [
        {"label": p.label, "step": p.step, "kl": p.kl, "proxy": p.mean("proxy"), "gold": p.mean("gold")}
        | {label: p.mean(name) for name, label in SYMPTOMS.items() if name in p.symptoms}
        for p in ordered
    ]
    return OveroptimizationCheck(
        run=run,
        points=rows,
        proxy_kl_spearman=spearman([p.kl for p in ordered], [p.mean("proxy") for p in ordered]),
        peak=peak.label,
        peak_step=peak.step,
        peak_kl=peak.kl,
        peak_interior=0 < peak_index < len(ordered) - 1,
        gold_drop=drop,
        gold_drop_ci=ci,
        symptoms=symptoms,
    )


# -- reading the database --------------------------------------------------------------------

PER_PROMPT_SQL = """
SELECT checkpoint, step, is_reference, prompt_id,
       avg(kl_full) AS kl, avg(proxy_reward) AS proxy, avg(gold_reward) AS gold,
       avg(length_words) AS length_words, avg(seq_rep_4) AS seq_rep_4, avg(hedge) AS hedge
FROM checkpoint_samples
WHERE run = ?
GROUP BY checkpoint, step, is_reference, prompt_id
ORDER BY step, checkpoint, prompt_id
"""

POOL_SQL = """
SELECT prompt_id, sample_idx, proxy_reward AS proxy, gold_reward AS gold, length_words, seq_rep_4, hedge
FROM checkpoint_samples
WHERE run = ? AND is_reference
ORDER BY prompt_id, sample_idx
"""


def rl_points(db: Path | str, run: str) -> list[CurvePoint]:
    """The points of an evaluated run: each checkpoint (the reference included) summarized per prompt."""
    from rlhf_eval.query import fetch_dicts

    rows = fetch_dicts(Path(db), PER_PROMPT_SQL, [run])
    if not rows:
        raise ValueError(f"{db}: no samples for run {run!r}; evaluate it first")
    prompt_ids = sorted({r["prompt_id"] for r in rows})
    position = {pid: i for i, pid in enumerate(prompt_ids)}
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[(row["checkpoint"], row["step"])].append(row)
    points = []
    for (label, step), group in grouped.items():
        arrays = {name: np.full(len(prompt_ids), np.nan) for name in ("kl", "proxy", "gold", *SYMPTOMS)}
        for row in group:
            for name, values in arrays.items():
                values[position[row["prompt_id"]]] = np.nan if row[name] is None else row[name]
        points.append(
            CurvePoint(
                label=label,
                step=int(step),
                kl=float(np.nanmean(arrays["kl"])),
                proxy=arrays["proxy"],
                gold=arrays["gold"],
                symptoms={name: arrays[name] for name in SYMPTOMS},
            )
        )
    return points


def bon_ns(pool_size: int) -> list[int]:
    """1, 2, 4, … up to the pool size (the pool size itself included).

    >>> bon_ns(64), bon_ns(10)
    ([1, 2, 4, 8, 16, 32, 64], [1, 2, 4, 8, 10])
    """
    ns = [1]
    while ns[-1] * 2 <= pool_size:
        ns.append(ns[-1] * 2)
    return ns if ns[-1] == pool_size else [*ns, pool_size]


def bon_points(db: Path | str, run: str) -> list[CurvePoint]:
    """The best-of-n family of the reference's pool stored under ``run``: one point per n in
    ``bon_ns(N)``, N the smallest pool over prompts; samples without a finite proxy score are left out."""
    from rlhf_eval.analysis.bon import bon_kl, expected_best_of_n
    from rlhf_eval.query import fetch_dicts

    rows = fetch_dicts(Path(db), POOL_SQL, [run])
    pools: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["proxy"] is not None and np.isfinite(row["proxy"]):
            pools[row["prompt_id"]].append(row)
    if not pools:
        raise ValueError(f"{db}: no reference samples for run {run!r}; evaluate the pool first")
    prompt_ids = sorted(pools)
    pool_size = min(len(pool) for pool in pools.values())
    points = []
    for n in bon_ns(pool_size):
        values = {name: np.full(len(prompt_ids), np.nan) for name in ("proxy", "gold", *SYMPTOMS)}
        for i, pid in enumerate(prompt_ids):
            pool = pools[pid][:pool_size]
            proxy = [row["proxy"] for row in pool]
            for name, array in values.items():
                column = [np.nan if row[name] is None else row[name] for row in pool]
                array[i] = expected_best_of_n(proxy, column, n)
        points.append(
            CurvePoint(
                label=f"n={n}",
                step=n,
                kl=bon_kl(n),
                proxy=values["proxy"],
                gold=values["gold"],
                symptoms={name: values[name] for name in SYMPTOMS},
            )
        )
    return points
