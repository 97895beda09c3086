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
    import pyarrow.parquet as pq

    for shard in sorted(old.staging.glob("*.parquet")):
        table = shard.stem.rsplit("-", 1)[-1]
        con.register("shard", pq.read_table(shard))
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
    assert row["n_samples"] == 6 and not list(killed.staging.glob("*.parquet"))


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
