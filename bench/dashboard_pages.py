"""How long does each dashboard page take on a large database? Every page rendered through
``streamlit.testing.v1.AppTest`` on a database of synthetic samples (one million by default),
cold (the page's cached reads cleared first) and warm (a rerun with the cache full).

    .venv/bin/python bench/dashboard_pages.py                      # build a 1M-sample database, time the pages
    .venv/bin/python bench/dashboard_pages.py --db big.duckdb      # reuse it (built there when missing)
    .venv/bin/python bench/dashboard_pages.py --json               # the table as JSON on stdout

The database is built with the store's own ingestion (Arrow IPC shards staged in ``<db>.staging/``
and ingested by ``Store.flush`` in one transaction), with every table the views read filled
consistently: RUNS runs of CHECKPOINTS checkpoints each sharing one reference policy, PROMPTS
prompts of one suite, SAMPLES samples per prompt, a proxy and a gold score, the four KL estimates
and every detector feature per sample, and trainer logs. Then ``analyze_database`` fills the
analysis tables, as ``rlhf-eval analyze`` does. No model runs; offline.

The issue's target is under 2 s per page at one million sample rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from rlhf_eval.store import Store

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboards" / "app.py"
WORDS = (
    "the a cat dog sky sun moon tree bird water light house road rain snow wind good great answer idea "
    "first second because so then also very big small red green blue warm cold explain list think help"
).split()
BOILERPLATE = ["", "", "", "", "As an AI language model, ", "I'm sorry, but ", "Sure! "]
REF_FP = "bench-ref"
SUITE_FP = "bench-suite"
GEN_KEY = "bench-gen"
EVAL_ID = "bench-eval"
PAGES = ["overview", "overoptimization", "symptoms", "samples", "compare"]


def response_pool(rng: np.random.Generator, size: int) -> pa.Array:
    """``size`` distinct-ish responses of 8..60 words, some with boilerplate or a loop."""
    out = []
    for i in range(size):
        words = rng.choice(WORDS, size=int(rng.integers(8, 60))).tolist()
        text = BOILERPLATE[i % len(BOILERPLATE)] + " ".join(words)
        if i % 9 == 0:
            text += " the cat sat on the cat sat on the cat sat on"
        out.append(text)
    return pa.array(out, pa.string())


def stage_table(store: Store, table: str, data: pa.Table) -> None:
    """One shard as ``Store.stage`` writes it, from Arrow columns in the table's schema."""
    from rlhf_eval.store import ipc_bytes
    from rlhf_eval.table_schemas import TABLES

    schema = TABLES[table][1]
    store.stage_bytes(table, ipc_bytes(data.select(schema.names).cast(schema)))


def build(db: Path, rows: int, runs: int, prompts: int, samples: int, seed: int) -> dict[str, Any]:
    """Fill ``db`` with about ``rows`` sample rows; returns the shape actually built."""
    from rlhf_eval.analysis.runner import AnalysisOptions, analyze_database
    from rlhf_eval.detectors import REGISTRY
    from rlhf_eval.store import SCHEMA_VERSION, Store
    from rlhf_eval.table_schemas import TABLES

    per_model = prompts * samples
    checkpoints = max(2, round((rows / per_model - 1) / runs))
    rng = np.random.default_rng(seed)
    now = datetime(2026, 1, 1, 12, 0, 0)
    store = Store(db)
    started = time.perf_counter()
    pool = response_pool(rng, 4096)
    prompt_ids = pa.array([f"bench-p{i:05d}" for i in range(prompts)], pa.string())
    features = list(REGISTRY.values())
    with store.writer():
        store.staging.mkdir(parents=True, exist_ok=True)

        def stage(table: str, columns: dict[str, Any]) -> None:
            stage_table(store, table, pa.table(columns))

        texts = [f"question {i}: explain why the {WORDS[i % len(WORDS)]} is blue" for i in range(prompts)]
        stage("suites", {"suite_fp": [SUITE_FP], "name": ["bench"], "version": ["1"], "source": ["synthetic"],
                         "n_prompts": [prompts]})  # fmt: skip
        stage("prompts", {"suite_fp": [SUITE_FP] * prompts, "idx": list(range(prompts)), "prompt_id": prompt_ids,
                          "text": texts, "messages": [None] * prompts, "category": [None] * prompts})  # fmt: skip
        stage("scorers", {"scorer_id": ["bench-proxy", "bench-gold"], "name": ["proxy", "gold"],
                          "kind": ["callable", "callable"], "spec": ["{}", "{}"],
                          "higher_is_better": [True, True]})  # fmt: skip
        stage("evaluations", {"eval_id": [EVAL_ID], "started_at": [now], "finished_at": [now], "status": ["completed"],
                              "command": ["bench/dashboard_pages.py"], "config": ["{}"], "provenance": ["{}"],
                              "seed": [seed], "schema_version": [SCHEMA_VERSION]})  # fmt: skip
        checkpoint_rows: dict[str, list[Any]] = {name: [] for name in TABLES["checkpoints"][1].names}
        models = [(REF_FP, 0.0)]  # (model, optimization pressure)
        for r in range(runs):
            run = f"run{r}"
            method = ("ppo", "grpo", "dpo", "rloo")[r % 4]
            add_checkpoint(checkpoint_rows, run, "reference", 0, "base", REF_FP, samples, now)
            for c in range(1, checkpoints + 1):
                model = f"bench-{run}-{c}"
                add_checkpoint(checkpoint_rows, run, f"checkpoint-{c * 100}", c * 100, method, model, samples, now)
                models.append((model, (r + 1) * c / checkpoints))
        stage("checkpoints", checkpoint_rows)
        logs_steps = np.arange(1, checkpoints * 100 + 1, 10)
        for r in range(runs):
            for metric, values in (("objective/kl", logs_steps / 50.0), ("objective/scores", np.log1p(logs_steps))):
                stage("training_logs", {"run": [f"run{r}"] * len(logs_steps), "step": logs_steps,
                                        "metric": [metric] * len(logs_steps), "value": values})  # fmt: skip
        prompt_of = np.repeat(np.arange(prompts), samples)
        sample_idx = np.tile(np.arange(samples, dtype=np.int32), prompts)
        prompt_effect = rng.normal(0, 0.5, prompts)[prompt_of]
        for model, pressure in models:
            ids = pc.binary_join_element_wise(
                pa.array([model] * per_model), pc.take(prompt_ids, pa.array(prompt_of)),
                pc.cast(pa.array(sample_idx), pa.string()), "/",
            )  # fmt: skip
            picks = rng.integers(0, len(pool), per_model)
            response = pc.take(pool, pa.array(picks))
            n_tokens = pc.utf8_length(response).to_numpy() // 5
            stage("samples", {"sample_id": ids, "model_fp": [model] * per_model,
                              "prompt_id": pc.take(prompt_ids, pa.array(prompt_of)), "gen_key": [GEN_KEY] * per_model,
                              "sample_idx": sample_idx, "prompt_token_ids": pa.nulls(per_model, pa.list_(pa.int32())),
                              "token_ids": pa.nulls(per_model, pa.list_(pa.int32())), "response": response,
                              "n_tokens": n_tokens.astype(np.int32), "ended_eos": picks % 7 != 0,
                              "prompt_truncated": np.zeros(per_model, bool),
                              "eval_id": [EVAL_ID] * per_model})  # fmt: skip
            kl = 0.0 if model == REF_FP else pressure * (1 + 0.3 * rng.random(per_model))
            kl = np.broadcast_to(kl, (per_model,)).astype(float)
            stage("kl", {"sample_id": ids, "ref_fp": [REF_FP] * per_model, "logp_policy": -np.full(per_model, 20.0),
                         "logp_ref": -20.0 - kl, "k1": kl * 1.1, "k2": kl * 0.9, "k3": kl * 1.05, "kl_full": kl,
                         "n_tokens": n_tokens.astype(np.int32)})  # fmt: skip
            proxy = prompt_effect + pressure + rng.normal(0, 1, per_model)
            gold = prompt_effect + pressure - 0.35 * pressure**2 + rng.normal(0, 1, per_model)
            stage("scores", {"sample_id": pa.concat_arrays([ids, ids]),
                             "scorer_id": ["bench-proxy"] * per_model + ["bench-gold"] * per_model,
                             "value": np.concatenate([proxy, gold])})  # fmt: skip
            k = len(features)
            stage("features", {"sample_id": pc.take(ids, pa.array(np.repeat(np.arange(per_model), k))),
                               "feature": [f.name for f in features] * per_model,
                               "version": [f.version for f in features] * per_model,
                               "value": rng.random(per_model * k)})  # fmt: skip
        staged = time.perf_counter() - started
        store.flush()
    ingested = time.perf_counter() - started - staged
    reports, skipped = analyze_database(db, None, AnalysisOptions(), skip_unknown=True)
    analysed = time.perf_counter() - started - staged - ingested
    return {
        "runs": runs,
        "checkpoints_per_run": checkpoints,
        "prompts": prompts,
        "samples_per_prompt": samples,
        "sample_rows": len(models) * per_model,
        "feature_rows": len(models) * per_model * len(features),
        "seconds_generate": round(staged, 1),
        "seconds_ingest": round(ingested, 1),
        "seconds_analyze": round(analysed, 1),
        "analysed_runs": len(reports),
    }


def add_checkpoint(
    rows: dict[str, list[Any]], run: str, checkpoint: str, step: int, method: str, model: str, samples: int,
    now: datetime,
) -> None:  # fmt: skip
    values = {"run": run, "checkpoint": checkpoint, "step": step, "method": method, "is_reference": step == 0,
              "path": f"/models/{model}", "kind": "model", "base_model": None, "model_fp": model, "ref_fp": REF_FP,
              "suite_fp": SUITE_FP, "gen_key": GEN_KEY, "samples_per_prompt": samples, "proxy_scorer": "bench-proxy",
              "gold_scorer": "bench-gold", "eval_id": EVAL_ID, "evaluated_at": now}  # fmt: skip
    for key, value in values.items():
        rows[key].append(value)


def sample_count(db: Path) -> int:
    from rlhf_eval.query import fetch_dicts

    try:
        return int(fetch_dicts(db, "SELECT count(*) AS n FROM samples")[0]["n"])
    except Exception:
        return 0


def time_pages(db: Path, repeats: int) -> list[dict[str, Any]]:
    """Cold and warm seconds of every page through AppTest (one session; the cache cleared for cold)."""
    import streamlit as st
    from streamlit.logger import set_log_level
    from streamlit.testing.v1 import AppTest

    set_log_level("error")  # AppTest's bare-mode notices
    logging.getLogger("streamlit.runtime.caching.cache_data_api").disabled = True  # "No runtime found" per clear

    os.environ["RLHF_EVAL_DB"] = str(db)
    results = []
    at = AppTest.from_file(str(APP), default_timeout=600)
    at.run()  # the first run imports the pages' modules; not counted
    for page in PAGES:
        cold, warm = [], []
        for _ in range(repeats):
            st.cache_data.clear()
            started = time.perf_counter()
            at.switch_page(f"pages/{page}.py").run()
            cold.append(time.perf_counter() - started)
            errors = [e.value for e in at.exception]
            started = time.perf_counter()
            at.run()
            warm.append(time.perf_counter() - started)
        results.append(
            {
                "page": page,
                "cold_s": round(statistics.median(cold), 3),
                "warm_s": round(statistics.median(warm), 3),
                "charts": len(at.get("vega_lite_chart")),
                "tables": len(at.dataframe),
                "errors": errors,
            }
        )
    return results


def page_queries(db: Path) -> dict[str, list[tuple[str, Callable[[], Any]]]]:
    """The query-layer calls (``rlhf_eval.dashboard_data``) each page makes with its default widgets."""
    from rlhf_eval import dashboard_data as data

    runs = [r["run"] for r in data.family_runs(db)]
    sample_run = data.sample_runs(db)[0]
    checkpoints = data.run_checkpoints(db, sample_run)
    checkpoint = next((c for c in checkpoints if not c["is_reference"]), checkpoints[0])["checkpoint"]
    labels = data.point_labels(db)
    first = labels[0].split("/")[0]
    a, b = f"{first}/reference", [label for label in labels if label.startswith(first + "/")][-1]
    logged = [run for run in runs if data.training_metric_names(db, run)]
    symptoms = ["mean_length", "gold_reward_debiased", "seq_rep_4", "hedge_rate"]
    overoptimization: list[tuple[str, Callable[[], Any]]] = [
        ("family_runs", lambda: data.family_runs(db)),
        ("run_analyses", lambda: data.run_analyses(db, runs)),
        ("analysis_points", lambda: data.analysis_points(db, runs)),
        ("training_metric_names", lambda: [data.training_metric_names(db, run) for run in runs]),
    ]
    if logged:
        overoptimization.append(("training_series", lambda: data.training_series(db, logged[0], ["objective/kl"])))
    return {
        "overview": [("filter_options", lambda: data.filter_options(db)), ("overview", lambda: data.overview(db))],
        "overoptimization": overoptimization,
        "symptoms": [
            ("family_runs", lambda: data.family_runs(db)),
            ("symptom_points", lambda: data.symptom_points(db, runs, symptoms)),
        ],
        "samples": [
            ("sample_runs", lambda: data.sample_runs(db)),
            ("run_checkpoints", lambda: data.run_checkpoints(db, sample_run)),
            ("count_samples", lambda: data.count_samples(db, sample_run, checkpoint)),
            ("sample_page", lambda: data.sample_page(db, sample_run, checkpoint)),
        ],
        "compare": [
            ("point_labels", lambda: data.point_labels(db)),
            ("compare_points", lambda: data.compare_points(db, a, b)),
        ],
    }


def time_queries(db: Path) -> dict[str, dict[str, float]]:
    """Seconds of every query-layer call of each page, uncached (no Streamlit)."""
    out: dict[str, dict[str, float]] = {}
    for page, calls in page_queries(db).items():
        out[page] = {}
        for name, call in calls:
            started = time.perf_counter()
            call()
            out[page][name] = round(time.perf_counter() - started, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="database to reuse, built there when missing (default: a temp file)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="sample rows to build")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=8, help="samples per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="timings per page (the median is shown)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--no-queries", dest="queries", action="store_false", help="skip timing the query-layer calls one by one"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "bench.duckdb"
        shape: dict[str, Any]
        existing = sample_count(db) if db.exists() else 0
        if existing:
            shape = {"sample_rows": existing, "reused": str(db)}
            print(f"reusing {db}: {existing} sample rows", file=sys.stderr)
        else:
            print(f"building {db} with about {args.rows} sample rows ...", file=sys.stderr)
            shape = build(db, args.rows, args.runs, args.prompts, args.samples, args.seed)
            print(f"built: {json.dumps(shape)}", file=sys.stderr)
        results = time_pages(db, args.repeats)
        queries = time_queries(db) if args.queries else {}
    for row in results:
        calls = queries.get(row["page"], {})
        row["queries_s"] = round(sum(calls.values()), 3) if calls else None
        row["query_seconds"] = calls
    if args.json:
        print(json.dumps({"database": shape, "pages": results}, indent=2))
        return
    print(f"{shape['sample_rows']} sample rows; seconds per page (AppTest, median of {args.repeats})")
    print(f"{'page':<18}{'cold':>8}{'warm':>8}{'queries':>9}  {'slowest query':<28}{'charts':>7}{'tables':>7}  errors")
    for row in results:
        calls = row["query_seconds"]
        slowest = max(calls, key=calls.get) if calls else None
        slow = f"{slowest} {calls[slowest]:.2f}" if slowest else "-"
        total = f"{row['queries_s']:>9.2f}" if row["queries_s"] is not None else f"{'-':>9}"
        errors = "; ".join(str(e)[:60] for e in row["errors"]) or "-"
        print(
            f"{row['page']:<18}{row['cold_s']:>8.2f}{row['warm_s']:>8.2f}{total}  {slow:<28}"
            f"{row['charts']:>7}{row['tables']:>7}  {errors}"
        )


if __name__ == "__main__":
    main()
