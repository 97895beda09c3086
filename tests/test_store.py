"""The store: migrations, staged writes, idempotent ingestion, the writer lock, bad files."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhf_eval.errors import StoreError
from rlhf_eval.query import checkpoint_summary, fetch_dicts, read_connection
from rlhf_eval.store import SCHEMA_VERSION, TABLES, Store


def score_rows(n: int, value: float = 1.0) -> list[dict]:
    return [{"sample_id": f"s{i}", "scorer_id": "rm", "value": value + i} for i in range(n)]


def test_migrations_create_tables_and_views_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.duckdb")
    assert store.migrate() == SCHEMA_VERSION
    assert store.migrate() == SCHEMA_VERSION  # second run applies nothing
    versions = store.query("SELECT version FROM schema_migrations ORDER BY version")
    assert versions == [(1,), (2,), (3,)]
    views = {r[0] for r in store.query("SELECT view_name FROM duckdb_views() WHERE NOT internal")}
    assert {"checkpoint_summary", "checkpoint_samples", "overoptimization"} <= views


def test_a_version_1_database_upgrades_in_place_keeping_its_rows(tmp_path: Path) -> None:
    from rlhf_eval.store import migrations

    path = tmp_path / "old.duckdb"
    first = migrations()[0]
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)")
    con.execute(first.sql)
    con.execute("INSERT INTO schema_migrations VALUES (1, ?, now())", [first.name])
    con.execute("INSERT INTO scores VALUES ('s0', 'rm', 1.5)")
    con.close()
    store = Store(path)
    assert store.migrate() == SCHEMA_VERSION == 3
    assert store.query("SELECT * FROM scores") == [("s0", "rm", 1.5)]
    assert store.query("SELECT count(*) FROM overoptimization") == [(0,)]


def test_staged_rows_are_invisible_until_flush_and_ingested_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.duckdb")
    store.migrate()
    store.stage("scores", score_rows(3))
    assert store.query("SELECT count(*) FROM scores") == [(0,)]
    assert store.flush() == 1
    # the same content again (a shard replayed after a crash) adds nothing and changes nothing
    store.stage("scores", score_rows(3, value=100.0))
    store.flush()
    assert store.query("SELECT sample_id, value FROM scores ORDER BY sample_id") == [
        ("s0", 1.0),
        ("s1", 2.0),
        ("s2", 3.0),
    ]
    assert not list(store.staging.glob("*"))


def test_descriptive_tables_keep_the_latest_row(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.duckdb")
    store.migrate()
    store.stage("training_logs", [{"run": "r", "step": 1, "metric": "loss", "value": 2.0}])
    store.stage("training_logs", [{"run": "r", "step": 1, "metric": "loss", "value": 1.5}])
    store.flush()
    assert store.query("SELECT value FROM training_logs") == [(1.5,)]


def test_shards_left_by_a_killed_writer_are_ingested_by_the_next(tmp_path: Path) -> None:
    first = Store(tmp_path / "db.duckdb")
    first.migrate()
    first.stage("scores", score_rows(2))
    (first.staging / "00000000000000000001-dead-scores.parquet.tmp").write_bytes(b"half a shard")
    second = Store(tmp_path / "db.duckdb")
    with second.writer():
        pass  # opening as writer migrates and flushes what was left
    assert second.query("SELECT count(*) FROM scores") == [(2,)]
    assert not list(second.staging.glob("*"))


def test_a_second_writer_fails_with_a_clear_message(tmp_path: Path) -> None:
    db = tmp_path / "db.duckdb"
    with (
        Store(db).writer(),
        pytest.raises(StoreError, match=r"another evaluation \(pid \d+\) is writing to this database"),
        Store(db).writer(),
    ):
        pass
    with Store(db).writer():  # released afterwards
        pass


def test_a_corrupted_database_is_reported_and_left_untouched(tmp_path: Path) -> None:
    db = tmp_path / "db.duckdb"
    db.write_bytes(b"this is not a database" * 100)
    before = db.read_bytes()
    with pytest.raises(StoreError, match=r"db\.duckdb: cannot open the database .*move it aside"), Store(db).writer():
        pass
    with pytest.raises(StoreError, match="cannot open the database"):
        checkpoint_summary(db)
    assert db.read_bytes() == before


def test_readers_open_read_only(tmp_path: Path) -> None:
    db = tmp_path / "db.duckdb"
    Store(db).migrate()
    with read_connection(db) as con, pytest.raises(duckdb.Error, match="read-only"):
        con.execute("CREATE TABLE x (a INTEGER)")
    assert fetch_dicts(db, "SELECT count(*) AS n FROM samples WHERE sample_id = ?", ["x' OR 1=1 --"]) == [{"n": 0}]


def test_missing_database_says_how_to_fill_it(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no database yet; fill it with `rlhf-eval eval"):
        checkpoint_summary(tmp_path / "none.duckdb")


def test_evaluations_left_running_are_marked_interrupted(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.duckdb")
    store.migrate()
    store.stage("evaluations", [{"eval_id": "e1", "status": "running"}, {"eval_id": "e2", "status": "completed"}])
    store.flush()
    with Store(tmp_path / "db.duckdb").writer():
        pass
    assert store.query("SELECT eval_id, status FROM evaluations ORDER BY eval_id") == [
        ("e1", "interrupted"),
        ("e2", "completed"),
    ]


# -- fuzzing: any rows go in and come back out as the table keeps them ---------------------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=8)
FLOATS = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=True, width=64))
SCORE_ROWS = st.lists(st.fixed_dictionaries({"sample_id": TEXT, "scorer_id": TEXT, "value": FLOATS}), max_size=12)
LOG_ROWS = st.lists(
    st.fixed_dictionaries({"run": TEXT, "step": st.integers(-(2**62), 2**62), "metric": TEXT, "value": FLOATS}),
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(SCORE_ROWS, SCORE_ROWS, LOG_ROWS, LOG_ROWS)
def test_any_rows_round_trip_as_their_table_keeps_them(
    tmp_path: Path, first: list[dict], second: list[dict], logs: list[dict], later_logs: list[dict]
) -> None:
    """Content-addressed rows (scores) keep the first write of a key, descriptive rows (training
    logs) the last, across shards and flushes, with any text, any finite or infinite float and
    NULL; nothing else is added or lost."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
        store = Store(Path(folder) / "db.duckdb")
        with store.writer():
            store.stage("scores", first)
            store.stage("training_logs", logs)
        with store.writer():
            store.stage("scores", second)
            store.stage("training_logs", later_logs)
        kept_scores: dict[tuple, float | None] = {}
        for row in first + second:
            kept_scores.setdefault((row["sample_id"], row["scorer_id"]), row["value"])
        kept_logs = {(r["run"], r["step"], r["metric"]): r["value"] for r in logs + later_logs}
        scores = {(a, b): v for a, b, v in store.query("SELECT sample_id, scorer_id, value FROM scores")}
        stored_logs = {(a, b, c): v for a, b, c, v in store.query("SELECT run, step, metric, value FROM training_logs")}
    assert scores == kept_scores and stored_logs == kept_logs


TOKENS = st.lists(st.integers(-(2**31), 2**31 - 1), max_size=6)
SAMPLE_ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "sample_id": TEXT, "model_fp": TEXT, "prompt_id": TEXT, "gen_key": TEXT,
            "sample_idx": st.integers(-(2**31), 2**31 - 1), "prompt_token_ids": TOKENS, "token_ids": TOKENS,
            "response": st.one_of(st.none(), st.text(st.characters(codec="utf-8"), max_size=40)),
            "n_tokens": st.integers(0, 2**31 - 1), "ended_eos": st.one_of(st.none(), st.booleans()),
            "prompt_truncated": st.booleans(), "eval_id": TEXT,
        }
    ),
    max_size=10,
)  # fmt: skip
FEATURE_ROWS = st.lists(
    st.fixed_dictionaries({"sample_id": TEXT, "feature": TEXT, "version": st.integers(0, 2**31 - 1), "value": FLOATS}),
    max_size=12,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(SAMPLE_ROWS, SAMPLE_ROWS, FEATURE_ROWS, FEATURE_ROWS)
def test_any_samples_and_features_round_trip_as_their_tables_keep_them(
    tmp_path: Path, first: list[dict], second: list[dict], features: list[dict], later: list[dict]
) -> None:
    """Samples (token-id lists, any text, NULLs) keep the first write of a sample id, features
    (recomputed when a detector's version changes) the last of a (sample, feature) key, across
    shards and flushes; every column comes back as written."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
        store = Store(Path(folder) / "db.duckdb")
        with store.writer():
            store.stage("samples", first[: len(first) // 2])
            store.stage("samples", first[len(first) // 2 :])
            store.stage("features", features)
        with store.writer():
            store.stage("samples", second)
            store.stage("features", later)
        columns = TABLES["samples"][1].names
        stored = {row[0]: row for row in store.query(f"SELECT {', '.join(columns)} FROM samples")}
        stored_features = {
            (a, b): (v, x) for a, b, v, x in store.query("SELECT sample_id, feature, version, value FROM features")
        }
    kept: dict[str, tuple] = {}
    for row in first + second:
        kept.setdefault(row["sample_id"], tuple(row[c] for c in columns))
    assert stored == kept
    assert stored_features == {(r["sample_id"], r["feature"]): (r["version"], r["value"]) for r in features + later}
