"""A small database for the dashboard's tests, staged row by row through the store (no model runs).

Runs: ``ppo`` (suite ``alpha``: proxy keeps rising while gold peaks at step 20 and falls), ``dpo``
(suite ``beta``: both rise), and the best-of-n family ``bon`` whose pool is run ``bon-pool``.
Every run shares the reference policy ``m-ref``. The analysis is stored by ``analyze_database``.
"""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from rlhf_eval.analysis.runner import AnalysisOptions, analyze_database
from rlhf_eval.store import Store

N_PROMPTS = 12
SAMPLES = 2
STEPS = (10, 20, 30)
WORDS = "the cat sat on a mat dog runs fast sky is blue sun moon star tree bird sings".split()
PHRASES = ["As an AI language model, ", "I'm sorry, but ", "", "", ""]


def response(rng: random.Random, loop: bool) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(4, 9))]
    text = rng.choice(PHRASES) + " ".join(words)
    if loop:
        text += " the cat sat on the cat sat on the cat sat on"
    return text


def build_database(db: Path) -> None:
    rng = random.Random(7)
    now = datetime(2026, 1, 2, 3, 4, 5)
    prompts = [(f"p{i:02d}", f"question {i} about the <sky> & {WORDS[i]}") for i in range(N_PROMPTS)]
    rows: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("suites", "prompts", "checkpoints", "samples", "kl", "scores", "features", "training_logs")
    }
    for suite in ("alpha", "beta"):
        rows["suites"].append(
            {"suite_fp": f"fp-{suite}", "name": suite, "version": "1", "source": "test", "n_prompts": N_PROMPTS}
        )
        for idx, (pid, text) in enumerate(prompts):
            rows["prompts"].append(
                {
                    "suite_fp": f"fp-{suite}",
                    "idx": idx,
                    "prompt_id": pid,
                    "text": text,
                    "messages": None,
                    "category": None,
                }
            )

    def add_samples(model: str, gen_key: str, n: int, step: int, gold_shape: str) -> None:
        for pid, _ in prompts:
            for k in range(n):
                sid = f"{model}-{gen_key}-{pid}-{k}"
                kl = 0.0 if model == "m-ref" else step / 10 * (1 + 0.3 * rng.random())
                proxy = rng.gauss(0, 1) + step / 10
                bump = {"peak": step / 10 - (step / 20) ** 2 * 2 if step else 0.0, "rise": step / 20}[gold_shape]
                gold = rng.gauss(0, 1) + bump
                text = response(rng, loop=step >= 30 and k == 0)
                rows["samples"].append(
                    {"sample_id": sid, "model_fp": model, "prompt_id": pid, "gen_key": gen_key, "sample_idx": k,
                     "prompt_token_ids": [1, 2], "token_ids": [3, 4], "response": text,
                     "n_tokens": len(text.split()), "ended_eos": True, "prompt_truncated": False, "eval_id": "e1"}
                )  # fmt: skip
                rows["kl"].append(
                    {"sample_id": sid, "ref_fp": "m-ref", "logp_policy": -1.0, "logp_ref": -1.0 - kl,
                     "k1": kl * 1.1, "k2": kl * 0.9, "k3": kl * 1.05, "kl_full": kl, "n_tokens": 4}
                )  # fmt: skip
                rows["scores"] += [
                    {"sample_id": sid, "scorer_id": "proxy", "value": proxy},
                    {"sample_id": sid, "scorer_id": "gold", "value": gold},
                ]
                values = {
                    "seq_rep_4": 0.5 if "cat sat on the cat" in text else 0.0,
                    "hedge": float("As an AI" in text),
                    "apology": float("sorry" in text),
                    "tail_loop": 0.0,
                    "distinct_2": 0.9,
                }
                rows["features"] += [
                    {"sample_id": sid, "feature": f, "version": 1, "value": v} for f, v in values.items()
                ]

    def add_checkpoint(run: str, checkpoint: str, step: int, method: str, model: str, suite: str, n: int) -> None:
        rows["checkpoints"].append(
            {"run": run, "checkpoint": checkpoint, "step": step, "method": method, "is_reference": step == 0,
             "path": f"/models/{model}", "kind": "model", "base_model": None, "model_fp": model, "ref_fp": "m-ref",
             "suite_fp": f"fp-{suite}", "gen_key": "g" if n == SAMPLES else "g-pool", "samples_per_prompt": n,
             "proxy_scorer": "proxy", "gold_scorer": "gold", "eval_id": "e1", "evaluated_at": now}
        )  # fmt: skip

    add_samples("m-ref", "g", SAMPLES, 0, "peak")
    for run, method, suite, shape in (("ppo", "ppo", "alpha", "peak"), ("dpo", "dpo", "beta", "rise")):
        add_checkpoint(run, "reference", 0, "base", "m-ref", suite, SAMPLES)
        for step in STEPS:
            model = f"m-{run}-{step}"
            add_samples(model, "g", SAMPLES, step, shape)
            add_checkpoint(run, f"checkpoint-{step}", step, method, model, suite, SAMPLES)
    add_samples("m-ref", "g-pool", 8, 0, "peak")
    add_checkpoint("bon-pool", "reference", 0, "base", "m-ref", "alpha", 8)
    rows["training_logs"] = [
        {"run": "ppo", "step": s, "metric": m, "value": v}
        for s in range(1, 31)
        for m, v in (("objective/kl", s / 3), ("objective/scores", s / 10))
    ]
    store = Store(db)
    with store.writer():
        for table, table_rows in rows.items():
            store.stage(table, table_rows)
        store.stage_refresh([(c["run"], c["checkpoint"]) for c in rows["checkpoints"]])
        store.stage(
            "bon_runs",
            [{"run": "bon", "pool_run": "bon-pool", "pool_checkpoint": "reference", "pool_size": 8, "ns": [1, 2, 4, 8],
              "path": "/models/m-ref", "model_fp": "m-ref", "suite_fp": "fp-alpha", "gen_key": "g-pool",
              "proxy_scorer": "proxy", "gold_scorer": "gold", "eval_id": "e1", "evaluated_at": now}],
        )  # fmt: skip
    analyze_database(db, None, AnalysisOptions(replicates=200), skip_unknown=True)


@pytest.fixture(scope="session")
def dashboard_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("dashboard") / "dash.duckdb"
    build_database(db)
    return db
