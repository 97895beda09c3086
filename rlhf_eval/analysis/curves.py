"""A run's curve as the analysis sees it: points (checkpoints or best-of-n values) by prompts.

Every estimator of the analysis takes a ``Curve``: K points in training order (the reference
first), each with a per-prompt value of every metric in a shared prompt order, so that one
bootstrap replicate (a draw of prompt columns) is applied to every point at once (paired). A
checkpoint's per-prompt value is the mean over that prompt's samples (prompts are the unit); a
best-of-n point's is the exact expectation over the prompt's pool (``rlhf_eval.analysis.bon``).

Normalization (Gao et al. 2022, section 2): a reward is reported as its delta from the reference
policy on the same prompts, in units of the reference's standard deviation over its samples,

    r̃_k(p) = (r_k(p) − r_ref(p)) / sd_ref,

so the reference sits at 0 on every prompt and a unit is one reference standard deviation; the
mean over prompts of r̃_k is (mean r_k − mean r_ref) / sd_ref. Raw values stay available.

>>> curve = Curve("run", "ppo", "rl", ("reference", "checkpoint-1"), (0, 1), np.array([[0.0, 0.0], [1.0, 3.0]]),
...               {"gold": np.array([[1.0, 3.0], [2.0, 3.0]])}, {"gold": 2.0})
>>> curve.normalized("gold").tolist()
[[0.0, 0.0], [0.5, 0.0]]
>>> curve.sqrt_kl().tolist()
[0.0, 1.4142135623730951]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

#: Rewards that get normalized against the reference; the rest (detectors) stay raw.
REWARDS = ("proxy", "gold")


@dataclass(frozen=True)
class Curve:
    """One run: ``labels``/``steps`` of K points in training order (index 0 the reference), ``kl``
    (K, P) per-prompt KL in nats from the reference, ``metrics`` name -> (K, P) per-prompt means,
    ``reference_sd`` name -> the reference's standard deviation over its samples (rewards only)."""

    run: str
    method: str
    kind: str  # "rl" (checkpoints of a training run) or "bon" (best-of-n values of one pool)
    labels: tuple[str, ...]
    steps: tuple[int, ...]
    kl: NDArray[np.float64]
    metrics: Mapping[str, NDArray[np.float64]]
    reference_sd: Mapping[str, float]
    kl_estimator: str = "kl_full"
    prompt_ids: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        shape = self.kl.shape
        if len(shape) != 2 or shape[0] != len(self.labels) or len(self.steps) != shape[0]:
            raise ValueError(f"run {self.run!r}: kl has shape {shape} for {len(self.labels)} points")
        for name, values in self.metrics.items():
            if values.shape != shape:
                raise ValueError(f"run {self.run!r}: metric {name!r} has shape {values.shape}, kl {shape}")
        if self.kind not in ("rl", "bon"):
            raise ValueError(f"run {self.run!r}: kind {self.kind!r} is not 'rl' or 'bon'")

    @property
    def n_points(self) -> int:
        return int(self.kl.shape[0])

    @property
    def n_prompts(self) -> int:
        return int(self.kl.shape[1])

    def mean_kl(self) -> NDArray[np.float64]:
        """KL of each point: the mean over prompts with a value."""
        return nanmean_rows(self.kl)

    def sqrt_kl(self) -> NDArray[np.float64]:
        """d = sqrt(KL) of each point, KL clipped at 0 (k1 can dip below it on a few samples)."""
        return np.sqrt(np.clip(self.mean_kl(), 0.0, None))

    def normalized(self, name: str) -> NDArray[np.float64]:
        """(K, P) per-prompt deltas from the reference (row 0) in reference standard deviations;
        NaN where either is missing or the reference has no spread."""
        values = self.metrics[name]
        sd = self.reference_sd.get(name, float("nan"))
        if not np.isfinite(sd) or sd <= 0:
            return np.full_like(values, np.nan)
        return (values - values[0][None, :]) / sd

    def means(self, name: str) -> NDArray[np.float64]:
        """Mean over prompts of a metric at each point (raw)."""
        return nanmean_rows(self.metrics[name])


def nanmean_rows(matrix: NDArray[np.float64]) -> NDArray[np.float64]:
    """Row means ignoring NaN; NaN for an all-NaN row (without numpy's warning).

    >>> nanmean_rows(np.array([[1.0, np.nan], [np.nan, np.nan]])).tolist()
    [1.0, nan]
    """
    finite = np.isfinite(matrix)
    counts = finite.sum(axis=1)
    sums = np.where(finite, matrix, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
