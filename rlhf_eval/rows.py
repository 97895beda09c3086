"""Rows of the store's tables, built from the pipeline's records.

Pure functions: each takes typed records and returns the dicts ``Store.stage`` writes, with
exactly the columns of ``table_schemas.TABLES``. Keeping them here keeps the runner about running.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rlhf_eval.discover import RunSpec
from rlhf_eval.records import Suite
from rlhf_eval.rewards import EnsembleMode, Scorer
from rlhf_eval.sampling import SamplingParams
from rlhf_eval.units import ModelUnit

if TYPE_CHECKING:  # records of the stages that need torch; rows are built without it
    from rlhf_eval.generate import GeneratedSample
    from rlhf_eval.kl import KLEstimate

Row = dict[str, Any]


def suite_rows(suite: Suite) -> tuple[list[Row], list[Row]]:
    """The ``suites`` row and the ``prompts`` rows of a suite."""
    head = {
        "suite_fp": suite.fingerprint,
        "name": suite.name,
        "version": suite.version,
        "source": suite.source,
        "n_prompts": len(suite.prompts),
    }
    prompts = [
        {
            "suite_fp": suite.fingerprint,
            "idx": p.index,
            "prompt_id": p.prompt_id,
            "text": p.display_text,
            "messages": json.dumps(p.messages_list) if p.messages is not None else None,
            "category": p.category,
        }
        for p in suite.prompts
    ]
    return [head], prompts


def generation_config_row(
    gen_key: str, params: SamplingParams, seed: int, sampler: str, backend: str = "transformers"
) -> Row:
    config = {**params.__dict__, "seed": seed, "sampler": sampler, "backend": backend}
    return {"gen_key": gen_key, "config": json.dumps(config)}


def scorer_row(scorer: Scorer) -> Row:
    return {
        "scorer_id": scorer.scorer_id,
        "name": scorer.name,
        "kind": scorer.kind,
        "spec": json.dumps(scorer.spec, default=str),
        "higher_is_better": scorer.higher_is_better,
    }


def ensemble_row(scorer_id: str, role: str, mode: EnsembleMode, members: Sequence[str]) -> Row:
    spec = {"mode": mode.mode, "lambda": mode.lam, "members": list(members), "normalized_on": "reference samples"}
    return {
        "scorer_id": scorer_id,
        "name": f"{role} ensemble ({mode.mode})",
        "kind": "ensemble",
        "higher_is_better": True,
        "spec": json.dumps(spec),
    }


def checkpoint_rows(units: Iterable[ModelUnit], common: Row) -> list[Row]:
    """One row per checkpoint; ``common`` holds the columns every checkpoint of an evaluation
    shares (ref_fp, suite_fp, gen_key, samples_per_prompt, scorers, eval_id, evaluated_at)."""
    return [
        {
            "run": c.run,
            "checkpoint": c.checkpoint,
            "step": c.step,
            "method": c.method,
            "is_reference": c.is_reference,
            "path": str(c.path),
            "kind": c.kind,
            "base_model": str(c.base) if c.base else None,
            "model_fp": unit.fingerprint,
            **common,
        }
        for unit in units
        for c in unit.checkpoints
    ]


def training_log_rows(runs: Iterable[RunSpec]) -> list[Row]:
    return [
        {"run": run.name, "step": log.step, "metric": log.metric, "value": log.value}
        for run in runs
        for log in run.training_logs
    ]


def evaluation_row(
    eval_id: str,
    *,
    started: datetime,
    finished: datetime | None,
    status: str,
    command: str,
    config: Row,
    provenance: Row,
    seed: int,
    schema_version: int,
) -> Row:
    return {
        "eval_id": eval_id,
        "started_at": started,
        "finished_at": finished,
        "status": status,
        "command": command,
        "config": json.dumps(config, default=str),
        "provenance": json.dumps(provenance, default=str),
        "seed": seed,
        "schema_version": schema_version,
    }


def kl_row(estimate: KLEstimate, ref_fp: str) -> Row:
    return {
        "sample_id": estimate.sample_id,
        "ref_fp": ref_fp,
        "logp_policy": estimate.logp_policy,
        "logp_ref": estimate.logp_ref,
        "k1": estimate.k1,
        "k2": estimate.k2,
        "k3": estimate.k3,
        "kl_full": estimate.full,
        "n_tokens": estimate.n_tokens,
    }


def zero_kl_row(sample_id: str, ref_fp: str, n_tokens: int) -> Row:
    """KL of the reference from itself under raw sampling: exactly 0, no forward needed."""
    return {
        "sample_id": sample_id,
        "ref_fp": ref_fp,
        "logp_policy": None,
        "logp_ref": None,
        "k1": 0.0,
        "k2": 0.0,
        "k3": 0.0,
        "kl_full": 0.0,
        "n_tokens": n_tokens,
    }


def sample_row(sample: GeneratedSample, model_fp: str, gen_key: str, eval_id: str) -> Row:
    request = sample.request
    return {
        "sample_id": request.sample_id,
        "model_fp": model_fp,
        "prompt_id": request.encoded.prompt.prompt_id,
        "gen_key": gen_key,
        "sample_idx": request.sample_idx,
        "prompt_token_ids": list(request.encoded.token_ids),
        "token_ids": list(sample.token_ids),
        "response": sample.text,
        "n_tokens": sample.n_tokens,
        "ended_eos": sample.ended_eos,
        "prompt_truncated": request.encoded.truncated,
        "eval_id": eval_id,
    }
