"""The columns and Arrow types of every table the store writes (``TABLES``).

Kept apart from ``store.py`` so that a process that only reads the database (a fully cached
``rlhf-eval eval``, the gate, the dashboard's queries) never imports pyarrow: these types are
needed where rows are written, and importing pyarrow costs a noticeable share of a short
command's start.
"""

from __future__ import annotations

import pyarrow as pa

from rlhf_eval.store import IGNORE, REPLACE

LIST_INT = pa.list_(pa.int32())


def interval_columns(*names: str) -> list[str]:
    """Each name followed by its ``_ci_low`` and ``_ci_high`` columns."""
    return [column for name in names for column in (name, f"{name}_ci_low", f"{name}_ci_high")]


#: analysis_points / analysis_runs columns (see migrations/0002_analysis.sql): name -> type.
ANALYSIS_POINT_COLUMNS: dict[str, pa.DataType] = {
    "run": pa.string(),
    "checkpoint": pa.string(),
    "step": pa.int64(),
    "kl_estimator": pa.string(),
    "kl": pa.float64(),
    "sqrt_kl": pa.float64(),
    **dict.fromkeys(interval_columns("proxy_norm", "gold_norm"), pa.float64()),
    "prob_best": pa.float64(),
    **dict.fromkeys(interval_columns("gold_drop_from_best"), pa.float64()),
    "past_peak": pa.bool_(),
    "gold_debiased": pa.float64(),
    "gold_length_explained": pa.float64(),
    "gold_length_share": pa.float64(),
    "proxy_gold_tau": pa.float64(),
    "proxy_disagreement": pa.float64(),
    "kl_bon_analytic": pa.float64(),
    "kl_bon_plugin": pa.float64(),
    "kl_bon_differ": pa.bool_(),
    "duplicate_fraction": pa.float64(),
    "analysed_at": pa.timestamp("us"),
}
ANALYSIS_RUN_COLUMNS: dict[str, pa.DataType] = {
    "run": pa.string(),
    "method": pa.string(),
    "kind": pa.string(),
    "kl_estimator": pa.string(),
    "n_points": pa.int32(),
    "n_prompts": pa.int32(),
    "replicates": pa.int32(),
    "seed": pa.int64(),
    "peak_checkpoint": pa.string(),
    "peak_step": pa.int64(),
    "peak_kl": pa.float64(),
    "peak_sqrt_kl": pa.float64(),
    "gold_at_peak": pa.float64(),
    "gold_at_last": pa.float64(),
    "gold_norm_at_peak": pa.float64(),
    "gold_norm_at_last": pa.float64(),
    "last_checkpoint": pa.string(),
    "last_step": pa.int64(),
    **dict.fromkeys(interval_columns("gold_drop", "proxy_gain_after_peak"), pa.float64()),
    "overoptimized": pa.bool_(),
    "best_checkpoint": pa.string(),
    "best_probability": pa.float64(),
    **dict.fromkeys(interval_columns("proxy_slope_after_peak", "gold_slope_after_peak"), pa.float64()),
    "diverging": pa.bool_(),
    "early_warning": pa.bool_(),
    "early_warning_points": pa.int32(),
    **dict.fromkeys(interval_columns("gold_slope_recent"), pa.float64()),
    "gold_falling": pa.bool_(),
    "fit_form": pa.string(),
    **dict.fromkeys(interval_columns("fit_alpha", "fit_beta", "fit_d_star", "fit_kl_star", "fit_r_star"), pa.float64()),
    "fit_peak_resolved": pa.bool_(),
    "fit_note": pa.string(),
    "evidence": pa.string(),
    "notes": pa.string(),
    "analysed_at": pa.timestamp("us"),
}


def analysis_schema(columns: dict[str, pa.DataType]) -> pa.Schema:
    return pa.schema(list(columns.items()))


TABLES: dict[str, tuple[str, pa.Schema]] = {
    "evaluations": (
        REPLACE,
        pa.schema(
            [
                ("eval_id", pa.string()),
                ("started_at", pa.timestamp("us")),
                ("finished_at", pa.timestamp("us")),
                ("status", pa.string()),
                ("command", pa.string()),
                ("config", pa.string()),
                ("provenance", pa.string()),
                ("seed", pa.int64()),
                ("schema_version", pa.int32()),
            ]
        ),
    ),
    "suites": (
        IGNORE,
        pa.schema(
            [
                ("suite_fp", pa.string()),
                ("name", pa.string()),
                ("version", pa.string()),
                ("source", pa.string()),
                ("n_prompts", pa.int32()),
            ]
        ),
    ),
    "prompts": (
        IGNORE,
        pa.schema(
            [
                ("suite_fp", pa.string()),
                ("idx", pa.int32()),
                ("prompt_id", pa.string()),
                ("text", pa.string()),
                ("messages", pa.string()),
                ("category", pa.string()),
            ]
        ),
    ),
    "generation_configs": (IGNORE, pa.schema([("gen_key", pa.string()), ("config", pa.string())])),
    "checkpoints": (
        REPLACE,
        pa.schema(
            [
                ("run", pa.string()),
                ("checkpoint", pa.string()),
                ("step", pa.int64()),
                ("method", pa.string()),
                ("is_reference", pa.bool_()),
                ("path", pa.string()),
                ("kind", pa.string()),
                ("base_model", pa.string()),
                ("model_fp", pa.string()),
                ("ref_fp", pa.string()),
                ("suite_fp", pa.string()),
                ("gen_key", pa.string()),
                ("samples_per_prompt", pa.int32()),
                ("proxy_scorer", pa.string()),
                ("gold_scorer", pa.string()),
                ("eval_id", pa.string()),
                ("evaluated_at", pa.timestamp("us")),
            ]
        ),
    ),
    "samples": (
        IGNORE,
        pa.schema(
            [
                ("sample_id", pa.string()),
                ("model_fp", pa.string()),
                ("prompt_id", pa.string()),
                ("gen_key", pa.string()),
                ("sample_idx", pa.int32()),
                ("prompt_token_ids", LIST_INT),
                ("token_ids", LIST_INT),
                ("response", pa.string()),
                ("n_tokens", pa.int32()),
                ("ended_eos", pa.bool_()),
                ("prompt_truncated", pa.bool_()),
                ("eval_id", pa.string()),
            ]
        ),
    ),
    "kl": (
        IGNORE,
        pa.schema(
            [
                ("sample_id", pa.string()),
                ("ref_fp", pa.string()),
                ("logp_policy", pa.float64()),
                ("logp_ref", pa.float64()),
                ("k1", pa.float64()),
                ("k2", pa.float64()),
                ("k3", pa.float64()),
                ("kl_full", pa.float64()),
                ("n_tokens", pa.int32()),
            ]
        ),
    ),
    "scorers": (
        IGNORE,
        pa.schema(
            [
                ("scorer_id", pa.string()),
                ("name", pa.string()),
                ("kind", pa.string()),
                ("spec", pa.string()),
                ("higher_is_better", pa.bool_()),
            ]
        ),
    ),
    "scores": (
        IGNORE,
        pa.schema([("sample_id", pa.string()), ("scorer_id", pa.string()), ("value", pa.float64())]),
    ),
    "features": (
        REPLACE,
        pa.schema(
            [("sample_id", pa.string()), ("feature", pa.string()), ("version", pa.int32()), ("value", pa.float64())]
        ),
    ),
    "training_logs": (
        REPLACE,
        pa.schema([("run", pa.string()), ("step", pa.int64()), ("metric", pa.string()), ("value", pa.float64())]),
    ),
    "file_hashes": (
        REPLACE,
        pa.schema([("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()), ("sha256", pa.string())]),
    ),
    "bon_runs": (
        REPLACE,
        pa.schema(
            [
                ("run", pa.string()),
                ("pool_run", pa.string()),
                ("pool_checkpoint", pa.string()),
                ("pool_size", pa.int32()),
                ("ns", LIST_INT),
                ("path", pa.string()),
                ("model_fp", pa.string()),
                ("suite_fp", pa.string()),
                ("gen_key", pa.string()),
                ("proxy_scorer", pa.string()),
                ("gold_scorer", pa.string()),
                ("eval_id", pa.string()),
                ("evaluated_at", pa.timestamp("us")),
            ]
        ),
    ),
    "bon_values": (
        REPLACE,
        pa.schema(
            [
                ("run", pa.string()),
                ("n", pa.int32()),
                ("prompt_id", pa.string()),
                ("metric", pa.string()),
                ("value", pa.float64()),
            ]
        ),
    ),
    "analysis_points": (REPLACE, analysis_schema(ANALYSIS_POINT_COLUMNS)),
    "analysis_runs": (REPLACE, analysis_schema(ANALYSIS_RUN_COLUMNS)),
}
