"""checkpoint_stats: the writer's per-checkpoint aggregates behind checkpoint_summary, checked
against means and intervals computed here in plain Python from the rows that were stored."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import duckdb
import pytest

from rlhf_eval.query import checkpoint_summary
from rlhf_eval.store import SCHEMA_VERSION, Store, migrations

PROMPTS = ["p0", "p1", "p2"]


def checkpoint_row(run: str, checkpoint: str, model_fp: str, gold: str = "gold", samples: int = 2) -> dict[str, Any]:
    return {
        "run": run, "checkpoint": checkpoint, "step": 0 if checkpoint == "reference" else 1, "method": "ppo",
        "is_reference": checkpoint == "reference", "path": "/x", "kind": "model", "base_model": None,
        "model_fp": model_fp, "ref_fp": "ref", "suite_fp": "suite", "gen_key": "g", "samples_per_prompt": samples,
        "proxy_scorer": "proxy", "gold_scorer": gold, "eval_id": "e", "evaluated_at": None,
    }  # fmt: skip


def sample_rows(model_fp: str, per_prompt: int) -> list[dict[str, Any]]:
    return [
        {
            "sample_id": f"{model_fp}-{p}-{i}",
            "model_fp": model_fp,
            "prompt_id": p,
            "gen_key": "g",
            "sample_idx": i,
            "prompt_token_ids": [1],
            "token_ids": [2] * (3 + i + j),
            "response": "x",
            "n_tokens": 3 + i + j,
            "ended_eos": i == 0,
            "prompt_truncated": False,
            "eval_id": "e",
        }  # fmt: skip
        for j, p in enumerate(PROMPTS)
        for i in range(per_prompt)
    ]


def stage_prompts(store: Store) -> None:
    store.stage("prompts", [{"suite_fp": "suite", "idx": i, "prompt_id": p, "text": p} for i, p in enumerate(PROMPTS)])


def seed_rows(store: Store, model_fp: str, per_prompt: int = 3) -> list[dict[str, Any]]:
    samples = sample_rows(model_fp, per_prompt)
    store.stage("samples", samples)
    store.stage(
        "kl",
        [{"sample_id": s["sample_id"], "ref_fp": "ref", "logp_policy": 0.0, "logp_ref": 0.0, "k1": 0.1,
          "k2": 0.2, "k3": 0.3, "kl_full": 0.5 * s["n_tokens"], "n_tokens": s["n_tokens"]} for s in samples],
    )  # fmt: skip
    store.stage(
        "scores", [{"sample_id": s["sample_id"], "scorer_id": "proxy", "value": s["n_tokens"] / 2} for s in samples]
    )
    store.stage(
        "scores",
        # one gold score missing (NULL): left out of the mean, counted in gold_null
        [{"sample_id": s["sample_id"], "scorer_id": "gold", "value": None if k == 0 else float(k % 4)}
         for k, s in enumerate(samples)],
    )  # fmt: skip
    store.stage(
        "features",
        [{"sample_id": s["sample_id"], "feature": "seq_rep_4", "version": 1, "value": s["sample_idx"] / 10}
         for s in samples],
    )  # fmt: skip
    return samples


def expected(samples: list[dict[str, Any]], limit: int, gold: dict[str, float | None]) -> dict[str, float]:
    """Means over the samples with sample_idx < limit, and the 95% normal half-width over per-prompt means."""
    used = [s for s in samples if s["sample_idx"] < limit]
    golds = [gold[s["sample_id"]] for s in used]
    per_prompt = [
        statistics.fmean(v for s in used if s["prompt_id"] == p and (v := gold[s["sample_id"]]) is not None)
        for p in PROMPTS
    ]
    return {
        "n_samples": len(used),
        "mean_length": statistics.fmean(s["n_tokens"] for s in used),
        "kl": statistics.fmean(0.5 * s["n_tokens"] for s in used),
        "gold_reward": statistics.fmean(g for g in golds if g is not None),
        "gold_null": sum(g is None for g in golds),
        "seq_rep_4": statistics.fmean(s["sample_idx"] / 10 for s in used),
        "gold_half": 1.959964 * statistics.stdev(per_prompt) / math.sqrt(len(per_prompt)),
    }


KEY = [("ppo", "checkpoint-1")]


def test_summary_matches_the_rows_and_follows_every_refresh(tmp_path: Path) -> None:
    db = tmp_path / "db.duckdb"
    store = Store(db)
    with store.writer():
        stage_prompts(store)
        store.stage("checkpoints", [checkpoint_row("ppo", "checkpoint-1", "m1")])
        samples = seed_rows(store, "m1")
        store.stage_refresh(KEY)
    gold = {s["sample_id"]: (None if k == 0 else float(k % 4)) for k, s in enumerate(samples)}
    (row,) = checkpoint_summary(db)
    want = expected(samples, 2, gold)  # samples_per_prompt = 2: the third sample of each prompt is left out
    for name, value in want.items():
        if name != "gold_half":
            assert row[name] == pytest.approx(value), name
    assert row["gold_reward_ci_high"] - row["gold_reward"] == pytest.approx(want["gold_half"])

    # the checkpoint is re-evaluated with 3 samples per prompt: its row changes, its aggregates follow
    with store.writer():
        store.stage("checkpoints", [checkpoint_row("ppo", "checkpoint-1", "m1", samples=3)])
    assert checkpoint_summary(db) == []  # its row changed, its aggregates were not refreshed: left out
    with store.writer():
        store.stage_refresh(KEY)
    (row,) = checkpoint_summary(db)
    assert row["n_samples"] == 9 and row["gold_reward"] == pytest.approx(expected(samples, 3, gold)["gold_reward"])

    # a new gold scorer scored later: only the scores are flushed, the aggregates follow them
    with store.writer():
        store.stage("checkpoints", [checkpoint_row("ppo", "checkpoint-1", "m1", gold="gold2", samples=3)])
        store.stage("scores", [{"sample_id": s["sample_id"], "scorer_id": "gold2", "value": 7.0} for s in samples])
        store.stage_refresh(KEY)
    (row,) = checkpoint_summary(db)
    assert row["gold_reward"] == 7.0 and row["gold_null"] == 0 and row["gold_scorer"] == "gold2"


def test_aggregates_for_other_keys_are_never_shown(tmp_path: Path) -> None:
    db = tmp_path / "db.duckdb"
    store = Store(db)
    with store.writer():
        stage_prompts(store)
        store.stage("checkpoints", [checkpoint_row("ppo", "checkpoint-1", "m1")])
        seed_rows(store, "m1")
        store.stage_refresh(KEY)
    assert len(checkpoint_summary(db)) == 1
    con = duckdb.connect(str(db))
    con.execute("UPDATE checkpoints SET gold_scorer = 'other'")  # a row changed behind the writer's back
    con.close()
    assert checkpoint_summary(db) == []


def test_a_version_2_database_gets_its_aggregates_on_upgrade(tmp_path: Path) -> None:
    db = tmp_path / "db.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)")
    for migration in migrations()[:2]:
        con.execute(migration.sql)
        con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [migration.version, migration.name])
    con.close()
    old = Store(db)
    stage_prompts(old)
    old.stage("checkpoints", [checkpoint_row("ppo", "reference", "m0")])
    samples = seed_rows(old, "m0")
    # ingest the shards as a version-2 writer would (no aggregates), then read through the old view
    con = duckdb.connect(str(db))
    from rlhf_eval.store import read_shard

    for shard in old.pending_shards():
        table = shard.stem.rsplit("-", 1)[-1]
        con.register("shard", read_shard(shard))
        con.execute(f"INSERT OR REPLACE INTO {table} BY NAME SELECT * FROM shard")
        con.unregister("shard")
        shard.unlink()
    before = con.execute("SELECT * EXCLUDE (evaluated_at) FROM checkpoint_summary").fetchall()
    con.close()
    assert Store(db).migrate() == SCHEMA_VERSION
    con = duckdb.connect(str(db), read_only=True)
    after = con.execute("SELECT * EXCLUDE (evaluated_at) FROM checkpoint_summary").fetchall()
    assert con.execute("SELECT count(*) FROM checkpoint_stats").fetchone() == (1,)
    con.close()
    assert len(after) == len(before) == 1
    for x, y in zip(after[0], before[0], strict=True):
        assert x == y or (isinstance(x, float) and x == pytest.approx(y))
    assert len(samples) == 9


def test_rows_flushed_without_a_request_leave_the_aggregates_alone(tmp_path: Path) -> None:
    """Flushes in the middle of a checkpoint's evaluation do not pay for a refresh: the
    aggregates change only when the writer says the checkpoint's rows are complete."""
    db = tmp_path / "db.duckdb"
    store = Store(db)
    with store.writer():
        stage_prompts(store)
        store.stage("checkpoints", [checkpoint_row("ppo", "checkpoint-1", "m1", samples=3)])
        samples = seed_rows(store, "m1")
        store.flush()
        assert checkpoint_summary(db) == []
        store.stage_refresh(KEY)
    (row,) = checkpoint_summary(db)
    assert row["n_samples"] == len(samples) == 9
    with store.writer():  # a replaced feature value, no request: the stored aggregate stays
        store.stage("features", [{"sample_id": s["sample_id"], "feature": "seq_rep_4", "version": 2, "value": 1.0}
                                 for s in samples])  # fmt: skip
    assert checkpoint_summary(db)[0]["seq_rep_4"] == pytest.approx(row["seq_rep_4"]) != 1.0
    with store.writer():
        store.stage_refresh(KEY)
    assert checkpoint_summary(db)[0]["seq_rep_4"] == 1.0


def test_a_request_staged_before_a_kill_is_applied_by_the_next_writer(tmp_path: Path) -> None:
    db = tmp_path / "db.duckdb"
    killed = Store(db)
    killed.migrate()
    stage_prompts(killed)
    killed.stage("checkpoints", [checkpoint_row("ppo", "checkpoint-1", "m1")])
    seed_rows(killed, "m1")
    killed.stage_refresh(KEY)  # the process dies here: rows and request staged, nothing flushed
    assert checkpoint_summary(db) == []
    with Store(db).writer():
        pass
    (row,) = checkpoint_summary(db)
    assert row["n_samples"] == 6 and not killed.pending_shards()


def test_refresh_all_aggregates_in_bounded_statements(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Upgrading a large database aggregates a bounded number of samples per statement; the
    result is the same as one statement over everything."""
    from rlhf_eval import stats

    db = tmp_path / "db.duckdb"
    store = Store(db)
    with store.writer():
        stage_prompts(store)
        store.stage("suites", [{"suite_fp": "suite", "name": "s", "version": "1", "source": "x", "n_prompts": 3}])
        keys = [("ppo", "reference"), ("ppo", "checkpoint-1"), ("dpo", "checkpoint-1")]
        store.stage("checkpoints", [checkpoint_row(run, ckpt, f"m-{run}-{ckpt}") for run, ckpt in keys])
        for run, ckpt in keys:
            seed_rows(store, f"m-{run}-{ckpt}")
        store.stage_refresh(keys)
    con = duckdb.connect(str(db))
    one = con.execute("SELECT * EXCLUDE (refreshed_at) FROM checkpoint_stats ORDER BY ALL").fetchall()
    statements: list[list[tuple[str, str]]] = []
    real = stats.refresh_checkpoints
    monkeypatch.setattr(stats, "REFRESH_BATCH_SAMPLES", 12)  # each checkpoint: 2 samples x 3 prompts
    monkeypatch.setattr(stats, "refresh_checkpoints", lambda c, k: (statements.append(k), real(c, k)))
    stats.refresh_all(con)
    batched = con.execute("SELECT * EXCLUDE (refreshed_at) FROM checkpoint_stats ORDER BY ALL").fetchall()
    con.close()
    assert [len(k) for k in statements] == [2, 1]
    assert batched == one and len(one) == 3


def test_every_aggregate_matches_plain_python_on_random_rows(tmp_path: Path) -> None:
    """Every column of the aggregates against means computed here sample by sample, on rows with
    what the per-prompt sums must get right: two checkpoints of the same weights (their samples
    are the same rows), a run whose proxy is also its gold scorer, a run on another suite that
    numbers the same prompts otherwise, samples past ``samples_per_prompt``, samples without KL,
    scores or features, NULL scores, and rows of another reference or scorer that must not count."""
    import random

    from rlhf_eval.stats import FEATURE_COLUMNS, KL_COLUMNS

    rng = random.Random(7)
    prompts = [f"p{i}" for i in range(5)]
    checkpoints = [  # (run, checkpoint, model_fp, proxy, gold, samples_per_prompt, suite)
        ("a", "reference", "m0", "proxy", "gold", 3, "suite"),
        ("a", "checkpoint-1", "m1", "proxy", "gold", 3, "suite"),
        ("a", "checkpoint-2", "m1", "proxy", "gold", 2, "suite"),  # the same weights as checkpoint-1
        ("b", "checkpoint-1", "m2", "proxy", "proxy", 4, "suite"),  # one scorer in both roles
        ("c", "checkpoint-1", "m3", "proxy", "gold", 2, "suite2"),  # prompts p1..p4 as 0..3, p0 not in it
    ]
    suite_prompts = {"suite": prompts, "suite2": prompts[:0:-1]}
    samples, kl, scores, features = [], [], [], []
    for model in ("m0", "m1", "m2", "m3"):
        for p in prompts[: 4 if model == "m2" else 5]:
            for i in range(5):
                sid = f"{model}-{p}-{i}"
                samples.append({"sample_id": sid, "model_fp": model, "prompt_id": p, "gen_key": "g", "sample_idx": i,
                                "prompt_token_ids": [1], "token_ids": [2], "response": "x",
                                "n_tokens": rng.randint(1, 50), "ended_eos": rng.random() < 0.5,
                                "prompt_truncated": False, "eval_id": "e"})  # fmt: skip
                if rng.random() < 0.9:
                    kl.append({"sample_id": sid, "ref_fp": "ref", "logp_policy": 0.0, "logp_ref": 0.0,
                               **{c: rng.gauss(1, 1) for c in KL_COLUMNS}, "n_tokens": 1})  # fmt: skip
                kl.append({"sample_id": sid, "ref_fp": "other", "logp_policy": 0.0, "logp_ref": 0.0,
                           **{c: 100.0 for c in KL_COLUMNS}, "n_tokens": 1})  # fmt: skip
                for scorer in ("proxy", "gold", "unused"):
                    if rng.random() < 0.9:
                        value = None if rng.random() < 0.15 else rng.gauss(0, 2)
                        scores.append({"sample_id": sid, "scorer_id": scorer, "value": value})
                for name in FEATURE_COLUMNS:
                    if rng.random() < 0.8:
                        features.append({"sample_id": sid, "feature": name, "version": 1, "value": rng.random()})
    db = tmp_path / "db.duckdb"
    store = Store(db)
    with store.writer():
        store.stage("prompts", [{"suite_fp": suite, "idx": i, "prompt_id": p, "text": p}
                                for suite, listed in suite_prompts.items() for i, p in enumerate(listed)])  # fmt: skip
        rows = []
        for run, ckpt, model, proxy, gold, per_prompt, suite in checkpoints:
            row = checkpoint_row(run, ckpt, model, gold=gold, samples=per_prompt)
            rows.append({**row, "proxy_scorer": proxy, "suite_fp": suite})
        store.stage("checkpoints", rows)
        for table, staged in (("samples", samples), ("kl", kl), ("scores", scores), ("features", features)):
            store.stage(table, staged)
        store.stage_refresh([(run, ckpt) for run, ckpt, *_ in checkpoints])
    con = duckdb.connect(str(db), read_only=True)
    cursor = con.execute("SELECT * FROM checkpoint_stats ORDER BY run, checkpoint")
    names = [d[0] for d in cursor.description]
    stored = {(r[0], r[1]): dict(zip(names, r, strict=True)) for r in cursor.fetchall()}
    con.close()

    def mean(values: list[float]) -> float | None:
        return statistics.fmean(values) if values else None

    def half(groups: dict[str, list[float]]) -> float | None:
        means = [statistics.fmean(v) for v in groups.values() if v]
        return 1.959964 * statistics.stdev(means) / math.sqrt(len(means)) if len(means) > 1 else None

    kl_of = {r["sample_id"]: r for r in kl if r["ref_fp"] == "ref"}
    score_of = {(r["sample_id"], r["scorer_id"]): r["value"] for r in scores}
    feature_of = {(r["sample_id"], r["feature"]): r["value"] for r in features}
    assert len(stored) == len(checkpoints)
    for run, ckpt, model, proxy, gold, per_prompt, suite in checkpoints:
        used = [s for s in samples if s["model_fp"] == model and s["sample_idx"] < per_prompt
                and s["prompt_id"] in suite_prompts[suite]]  # fmt: skip
        ids = [s["sample_id"] for s in used]
        by_prompt = {p: [s["sample_id"] for s in used if s["prompt_id"] == p] for p in {s["prompt_id"] for s in used}}
        proxies = [v for i in ids if (v := score_of.get((i, proxy))) is not None]
        golds = [v for i in ids if (v := score_of.get((i, gold))) is not None]
        want: dict[str, Any] = {
            "n_prompts": len(by_prompt),
            "n_samples": len(used),
            "kl": mean([kl_of[i]["kl_full"] for i in ids if i in kl_of]),
            **{column: mean([kl_of[i][c] for i in ids if i in kl_of]) for c, column in KL_COLUMNS.items()},
            "proxy_reward": mean(proxies),
            "gold_reward": mean(golds),
            "proxy_null": len(ids) - len(proxies),
            "gold_null": len(ids) - len(golds),
            "mean_length": mean([s["n_tokens"] for s in used]),
            "eos_rate": mean([float(s["ended_eos"]) for s in used]),
            **{column: mean([v for i in ids if (v := feature_of.get((i, name))) is not None])
               for name, column in FEATURE_COLUMNS.items()},
            "kl_half": half({p: [kl_of[i]["kl_full"] for i in g if i in kl_of] for p, g in by_prompt.items()}),
            "proxy_half": half({p: [v for i in g if (v := score_of.get((i, proxy))) is not None]
                                for p, g in by_prompt.items()}),
            "gold_half": half({p: [v for i in g if (v := score_of.get((i, gold))) is not None]
                               for p, g in by_prompt.items()}),
        }  # fmt: skip
        got = stored[(run, ckpt)]
        assert got["model_fp"] == model and got["samples_per_prompt"] == per_prompt
        for name, value in want.items():
            if value is None:
                assert got[name] is None, name
            else:
                assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-12), (run, ckpt, name)
