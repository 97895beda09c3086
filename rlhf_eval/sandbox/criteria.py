"""Does a sandbox run over-optimize? The sandbox's checks, read off the harness's own analysis.

For one analysed run (``rlhf_eval.analysis``: an RL run's checkpoints or a best-of-n family,
the reference first, in training order):

- **proxy rises with KL**: Spearman correlation between mean proxy reward and KL over the points;
- **gold peaks inside**: the point with the highest mean gold is neither the first nor the last;
- **the last point is past the peak**: the analysis's drop of the last point below the best
  earlier one, in reference standard deviations, with its paired bootstrap interval over prompts
  in which the best earlier point is chosen again in each replicate (the winner's curse,
  ``rlhf_eval.analysis.overopt``); the drop is significant when the interval's lower end is above 0;
- **symptoms**: mean length in words, seq-rep-4 and hedge rate at the peak and at the last point
  (``checkpoint_summary``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlhf_eval.analysis.runner import RunReport
from rlhf_eval.sandbox.proxy import spearman

#: The symptoms checked past the peak: checkpoint_summary column -> label.
SYMPTOMS = {"mean_words": "length", "seq_rep_4": "seq-rep-4", "hedge_rate": "hedge rate"}


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


def check_report(report: RunReport, summary: Sequence[Mapping[str, Any]]) -> OveroptimizationCheck:
    """The criteria of an analysed run; ``summary`` holds its ``checkpoint_summary`` rows."""
    analysis = report.analysis
    if analysis.n_points < 3:
        raise ValueError(f"run {analysis.run!r}: {analysis.n_points} points; a peak needs at least 3")
    by_label = {row["checkpoint"]: row for row in summary}
    rows = []
    for point in analysis.points:
        row = by_label.get(point.label, {})
        rows.append(
            {"label": point.label, "step": point.step, "kl": point.kl, "proxy": point.proxy, "gold": point.gold}
            | {"gold_norm": point.gold_norm.estimate, "prob_best": point.prob_best}
            | {label: row.get(column) for column, label in SYMPTOMS.items()}
        )
    peak_index = analysis.points.index(analysis.peak)
    peak_row, last_row = by_label.get(analysis.peak.label, {}), by_label.get(analysis.last.label, {})
    symptoms = {
        label: (float(peak_row[column]), float(last_row[column]))
        for column, label in SYMPTOMS.items()
        if peak_row.get(column) is not None and last_row.get(column) is not None
    }
    drop = analysis.gold_drop
    at_peak = analysis.peak is analysis.last
    return OveroptimizationCheck(
        run=analysis.run,
        points=rows,
        proxy_kl_spearman=spearman([p.kl for p in analysis.points], [p.proxy for p in analysis.points]),
        peak=analysis.peak.label,
        peak_step=analysis.peak.step,
        peak_kl=analysis.peak.kl,
        peak_interior=0 < peak_index < analysis.n_points - 1,
        gold_drop=0.0 if at_peak else drop.estimate,
        gold_drop_ci=(0.0, 0.0) if at_peak else (drop.low, drop.high),
        symptoms=symptoms,
    )
