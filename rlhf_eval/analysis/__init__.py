"""Estimators that turn stored samples into over-optimization answers.

Pure functions over arrays (one module per concern) plus a thin layer that reads runs from the
database and stores the results. The public API:

- ``analyze_database(db, runs, AnalysisOptions(...))``: analyse and store; ``RunReport``.
- ``analyze_curve(Curve)``: the verdict of one run from per-prompt arrays (``RunAnalysis``).
- best-of-n: ``expected_best_of_n``, ``best_of_n_table``, ``bon_kl``, ``bon_kl_plugin``, ``pool_kl``.
- fits: ``fit_gao``, ``bootstrap_gao`` (Gao et al. 2022 functional forms).
- comparisons: ``paired_bootstrap``, ``compare_metrics``, ``holm``, ``compare_checkpoints``.
- rankings: ``bradley_terry_ranking``, ``fit_bradley_terry``, ``fit_plackett_luce``,
  ``read_pairwise_labels``, ``rank_checkpoints``.
- length: ``fit_log_length``, ``length_explained_share``; agreement: ``kendall_tau``,
  ``tau_by_bucket``, ``ensemble_disagreement``.

See docs/analysis.md for the formulas and their sources.
"""

from rlhf_eval.analysis.agreement import ensemble_disagreement, kendall_tau, tau_by_bucket
from rlhf_eval.analysis.bon import (
    best_of_n_table,
    bon_kl,
    bon_kl_plugin,
    duplicate_fraction,
    expected_best_of_n,
    pool_kl,
)
from rlhf_eval.analysis.checkpoints import compare_checkpoints, rank_checkpoints
from rlhf_eval.analysis.compare import compare_metrics, holm, paired_bootstrap
from rlhf_eval.analysis.curves import Curve
from rlhf_eval.analysis.fits import bootstrap_gao, fit_gao
from rlhf_eval.analysis.length import fit_log_length, length_explained_share
from rlhf_eval.analysis.overopt import RunAnalysis, analyze_curve
from rlhf_eval.analysis.ranking import (
    bradley_terry_ranking,
    fit_bradley_terry,
    fit_plackett_luce,
    read_pairwise_labels,
)
from rlhf_eval.analysis.runner import AnalysisOptions, RunReport, analyze_database

__all__ = [
    "AnalysisOptions",
    "Curve",
    "RunAnalysis",
    "RunReport",
    "analyze_curve",
    "analyze_database",
    "best_of_n_table",
    "bon_kl",
    "bon_kl_plugin",
    "bootstrap_gao",
    "bradley_terry_ranking",
    "compare_checkpoints",
    "compare_metrics",
    "duplicate_fraction",
    "ensemble_disagreement",
    "expected_best_of_n",
    "fit_bradley_terry",
    "fit_gao",
    "fit_log_length",
    "fit_plackett_luce",
    "holm",
    "kendall_tau",
    "length_explained_share",
    "paired_bootstrap",
    "pool_kl",
    "rank_checkpoints",
    "read_pairwise_labels",
    "tau_by_bucket",
]
