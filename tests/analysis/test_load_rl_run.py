"""An RL run read from the database for the analysis (``load_run``), against per-prompt means,
reference arrays, length shares and Kendall taus computed here from the rows that were stored.
The rows hold what the per-prompt sums must get right: two checkpoints of the same weights, NULL
scores, samples without KL or features, samples past ``samples_per_prompt``, rows of another
reference and scorer, and another run over the same samples."""

from __future__ import annotations

import math
import random
import statistics
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from rlhf_eval.analysis.agreement import kendall_tau
from rlhf_eval.analysis.length import bucket_edges, bucket_of
from rlhf_eval.analysis.load import SAMPLE_VALUES, load_run
from rlhf_eval.store import Store

PROMPTS = [f"p{i}" for i in range(6)]
FEATURES = [name for name in SAMPLE_VALUES if name not in ("proxy_reward", "gold_reward", "n_tokens", "ended_eos")]
#: (run, checkpoint, step, model_fp, samples_per_prompt)
CHECKPOINTS = [
    ("r", "reference", 0, "m0", 4),
    ("r", "checkpoint-1", 1, "m1", 4),
    ("r", "checkpoint-2", 2, "m1", 3),  # the same weights as checkpoint-1, fewer samples
    ("other", "reference", 0, "m0", 4),
    ("other", "checkpoint-9", 9, "m1", 5),  # another run over the same samples
]


def build(db: Path) -> dict[str, Any]:
    rng = random.Random(11)
    samples, kl, scores, features = [], [], [], []
    for model in ("m0", "m1"):
        for p in PROMPTS:
            for i in range(5):
                sid = f"{model}-{p}-{i}"
                samples.append({"sample_id": sid, "model_fp": model, "prompt_id": p, "gen_key": "g", "sample_idx": i,
                                "prompt_token_ids": [1], "token_ids": [2], "response": "x",
                                "n_tokens": rng.randint(1, 40), "ended_eos": rng.random() < 0.6,
                                "prompt_truncated": False, "eval_id": "e"})  # fmt: skip
                if rng.random() < 0.85:
                    kl.append({"sample_id": sid, "ref_fp": "ref", "logp_policy": 0.0, "logp_ref": 0.0,
                               "k1": rng.gauss(1, 1), "k2": rng.gauss(1, 1), "k3": rng.gauss(1, 1),
                               "kl_full": rng.gauss(2, 1), "n_tokens": 1})  # fmt: skip
                kl.append({"sample_id": sid, "ref_fp": "elsewhere", "logp_policy": 0.0, "logp_ref": 0.0,
                           "k1": 50.0, "k2": 50.0, "k3": 50.0, "kl_full": 50.0, "n_tokens": 1})  # fmt: skip
                for scorer in ("proxy", "gold", "unused"):
                    if rng.random() < 0.85 and (p, i) != ("p1", 2):  # some samples have no score row at all
                        value = None if rng.random() < 0.1 else round(rng.gauss(0, 1), 1)  # ties for tau-b
                        scores.append({"sample_id": sid, "scorer_id": scorer, "value": value})
                for name in FEATURES:
                    if rng.random() < 0.9:
                        features.append({"sample_id": sid, "feature": name, "version": 1, "value": rng.random()})
    store = Store(db)
    with store.writer():
        store.stage("prompts", [{"suite_fp": "suite", "idx": i, "prompt_id": p, "text": p}
                                for i, p in enumerate(PROMPTS)])  # fmt: skip
        store.stage("checkpoints", [
            {"run": run, "checkpoint": ckpt, "step": step, "method": "base" if step == 0 else "ppo",
             "is_reference": step == 0, "path": "/x", "kind": "model", "base_model": None, "model_fp": model,
             "ref_fp": "ref", "suite_fp": "suite", "gen_key": "g", "samples_per_prompt": per_prompt,
             "proxy_scorer": "proxy", "gold_scorer": "gold", "eval_id": "e", "evaluated_at": None}
            for run, ckpt, step, model, per_prompt in CHECKPOINTS
        ])  # fmt: skip
        for table, rows in (("samples", samples), ("kl", kl), ("scores", scores), ("features", features)):
            store.stage(table, rows)
    return {
        "samples": samples,
        "kl": {r["sample_id"]: r for r in kl if r["ref_fp"] == "ref"},
        "score": {(r["sample_id"], r["scorer_id"]): r["value"] for r in scores},
        "feature": {(r["sample_id"], r["feature"]): r["value"] for r in features},
    }


def used(rows: dict[str, Any], model: str, per_prompt: int) -> list[dict[str, Any]]:
    """The checkpoint's samples in the analysis's order (prompt, then sample index)."""
    chosen = [s for s in rows["samples"] if s["model_fp"] == model and s["sample_idx"] < per_prompt]
    return sorted(chosen, key=lambda s: (s["prompt_id"], s["sample_idx"]))


def value_of(rows: dict[str, Any], sample: dict[str, Any], name: str, kl_estimator: str) -> float | None:
    sid = sample["sample_id"]
    if name == "kl":
        found = rows["kl"].get(sid)
        column = kl_estimator if kl_estimator == "kl_full" else kl_estimator.removeprefix("kl_")
        return None if found is None else found[column]
    if name == "log_length":
        return math.log(1 + sample["n_tokens"])
    if name in ("n_tokens", "ended_eos"):
        return float(sample[name])
    if name in ("proxy_reward", "gold_reward"):
        return rows["score"].get((sid, name.removesuffix("_reward")))
    return rows["feature"].get((sid, name))


def nan_array(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


@pytest.mark.parametrize(("kl_estimator", "only"), [("kl_full", None), ("kl_k2", ["checkpoint-2"])])
def test_an_rl_run_is_read_as_the_stored_rows_say(tmp_path: Path, kl_estimator: str, only: list[str] | None) -> None:
    db = tmp_path / "db.duckdb"
    rows = build(db)
    con = duckdb.connect(str(db), read_only=True)
    try:
        data = load_run(con, "r", kl_estimator, length_buckets=3, checkpoints=only)
    finally:
        con.close()
    points = [c for c in CHECKPOINTS if c[0] == "r" and (only is None or c[1] in only or c[2] == 0)]
    curve = data.curve
    assert curve.labels == tuple(c[1] for c in points) and curve.steps == tuple(c[2] for c in points)
    assert curve.prompt_ids == tuple(PROMPTS) and curve.method == "ppo" and curve.kl_estimator == kl_estimator
    matrices = {"kl": curve.kl, "log_length": curve.metrics["log_length"],
                **{name: curve.metrics[name] for name in SAMPLE_VALUES}}  # fmt: skip
    for k, (_, checkpoint, _, model, per_prompt) in enumerate(points):
        chosen = used(rows, model, per_prompt)
        for j, prompt in enumerate(PROMPTS):
            of_prompt = [s for s in chosen if s["prompt_id"] == prompt]
            for name, matrix in matrices.items():
                values = [v for s in of_prompt if (v := value_of(rows, s, name, kl_estimator)) is not None]
                want = statistics.fmean(values) if values else math.nan
                expected = pytest.approx(want, rel=1e-12, abs=1e-12, nan_ok=True)
                assert matrix[k, j] == expected, (checkpoint, prompt, name)

    reference = used(rows, "m0", 4)
    gold = nan_array([value_of(rows, s, "gold_reward", kl_estimator) for s in reference])
    lengths = np.array([s["n_tokens"] for s in reference], dtype=float)
    np.testing.assert_array_equal(data.reference_gold, gold)
    np.testing.assert_array_equal(data.reference_lengths, lengths)
    assert data.length_edges == bucket_edges(lengths, 3)
    proxy = nan_array([value_of(rows, s, "proxy_reward", kl_estimator) for s in reference])
    assert curve.reference_sd["gold"] == pytest.approx(np.nanstd(gold, ddof=1))
    assert curve.reference_sd["proxy"] == pytest.approx(np.nanstd(proxy, ddof=1))

    assert set(data.taus) == set(curve.labels)
    for k, (_, checkpoint, _, model, per_prompt) in enumerate(points):
        chosen = used(rows, model, per_prompt)
        x = nan_array([value_of(rows, s, "proxy_reward", kl_estimator) for s in chosen])
        y = nan_array([value_of(rows, s, "gold_reward", kl_estimator) for s in chosen])
        assert data.taus[checkpoint] == pytest.approx(kendall_tau(x, y), rel=1e-12), checkpoint
        buckets = bucket_of([s["n_tokens"] for s in chosen], data.length_edges)
        for j, prompt in enumerate(PROMPTS):
            in_prompt = np.array([s["prompt_id"] == prompt for s in chosen])
            for b in range(len(data.length_edges) + 1):
                share = curve.metrics[f"length_bucket_{b}"][k, j]
                assert share == pytest.approx(float(np.mean(buckets[in_prompt] == b))), (checkpoint, prompt, b)
    assert data.disagreement == {}
