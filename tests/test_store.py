"""The store: migrations, staged writes, idempotent ingestion, the writer lock, bad files."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhf_eval.errors import StoreError
from rlhf_eval.integrity import duplicated_keys
from rlhf_eval.query import checkpoint_summary, fetch_dicts, read_connection
from rlhf_eval.store import KEYS, LEDGER, SCHEMA_VERSION, UNINDEXED, Store
from rlhf_eval.table_schemas import TABLES


def score_rows(n: int, value: float = 1.0) -> list[dict]:
    return [{"sample_id": f"s{i}", "scorer_id": "rm", "value": value + i} for i in range(n)]


SAMPLE_ROW = {
    "sample_id": "s0",
    "model_fp": "m",
    "prompt_id": "p",
    "gen_key": "g",
    "sample_idx": 0,
    "prompt_token_ids": [5, 6, 7],
    "token_ids": [8, 9, 2],
    "response": "a response",
    "n_tokens": 3,
    "ended_eos": True,
    "prompt_truncated": False,
    "eval_id": "e",
}


def feature_rows(n: int, value: float = 1.0) -> list[dict]:
    return [{"sample_id": f"s{i}", "feature": "hedge", "version": 1, "value": value + i} for i in range(n)]


def primary_keys(store: Store) -> set[str]:
    """The tables that hold a primary key."""
    sql = "SELECT DISTINCT table_name FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'"
    return {row[0] for row in store.query(sql)}


def duplicates(store: Store) -> dict[str, int]:
    with read_connection(store.path) as con:
        return {table: keys for table, (keys, _) in duplicated_keys(con, list(KEYS)).items()}


def test_migrations_create_tables_and_views_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.duckdb")
    assert store.migrate() == SCHEMA_VERSION
    assert store.migrate() == SCHEMA_VERSION  # second run applies nothing
    versions = store.query("SELECT version FROM schema_migrations ORDER BY version")
    assert versions == [(1,), (2,), (3,), (4,), (5,)]
    views = {r[0] for r in store.query("SELECT view_name FROM duckdb_views() WHERE NOT internal")}
    assert {"checkpoint_summary", "checkpoint_samples", "overoptimization"} <= views
    assert primary_keys(store) == {t for t in TABLES if t not in UNINDEXED} | {"checkpoint_stats", "schema_migrations"}


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
    assert store.migrate() == SCHEMA_VERSION == 5
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
    (first.staging / "00000000000000000001-dead-scores.arrow.tmp").write_bytes(b"half a shard")
    second = Store(tmp_path / "db.duckdb")
    with second.writer():
        pass  # opening as writer migrates and flushes what was left
    assert second.query("SELECT count(*) FROM scores") == [(2,)]
    assert not list(second.staging.glob("*"))


def test_a_staged_shard_is_an_arrow_ipc_file_of_the_table_schema(tmp_path: Path) -> None:
    import pyarrow as pa

    store = Store(tmp_path / "db.duckdb")
    store.stage("samples", [SAMPLE_ROW], fresh=True)
    (shard,) = store.pending_shards()
    assert shard.suffix == ".arrow" and shard.name.endswith("-new-samples.arrow")
    with pa.OSFile(str(shard)) as source:
        data = pa.ipc.open_file(source).read_all()
    assert data.schema.equals(TABLES["samples"][1])
    assert data.to_pylist() == [SAMPLE_ROW]


def test_parquet_shards_left_by_an_earlier_version_land_in_staging_order(tmp_path: Path) -> None:
    """A run killed under a version that staged Parquet leaves ``.parquet`` shards: the next
    writer ingests them with its own, keeping each table's rule by the shards' time order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def left_parquet(store: Store, name: str, value: float) -> None:
        store.staging.mkdir(parents=True, exist_ok=True)
        row = {"run": "r", "step": 1, "metric": "loss", "value": value}
        pq.write_table(pa.Table.from_pylist([row], schema=TABLES["training_logs"][1]), store.staging / name)

    older = Store(tmp_path / "older.duckdb")  # an old Parquet shard, then a new one: the new one wins
    left_parquet(older, "00000000000000000001-dead0001-training_logs.parquet", 2.0)
    older.stage("training_logs", [{"run": "r", "step": 1, "metric": "loss", "value": 1.5}])
    older.stage("scores", score_rows(2))
    with older.writer():
        pass
    assert older.query("SELECT value FROM training_logs") == [(1.5,)]
    assert older.query("SELECT count(*) FROM scores") == [(2,)]
    assert not list(older.staging.iterdir())

    newer = Store(tmp_path / "newer.duckdb")  # the Parquet shard is the later one: it wins
    newer.stage("training_logs", [{"run": "r", "step": 1, "metric": "loss", "value": 1.5}])
    left_parquet(newer, "99999999999999999999-dead0002-training_logs.parquet", 2.0)
    with newer.writer():
        pass
    assert newer.query("SELECT value FROM training_logs") == [(2.0,)]


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


# -- keys without key indexes: the ledger, one row per key in a flush, the check -----------------


def stored(store: Store, table: str) -> list[tuple]:
    return store.query(f"SELECT * FROM {table} ORDER BY ALL")


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh", "checked"])
def test_a_shard_ingested_twice_changes_nothing(tmp_path: Path, fresh: bool) -> None:
    """A writer killed after COMMIT and before deleting its shards leaves them on disk: the next
    flush finds them in the ledger and deletes them unread (fresh rows are not checked against
    the stored keys, so for them the ledger alone keeps the rows single)."""
    store = Store(tmp_path / "db.duckdb")
    store.migrate()
    store.stage("scores", score_rows(3), fresh=fresh)
    store.stage("features", feature_rows(2), fresh=fresh)
    left = {shard.name: shard.read_bytes() for shard in store.pending_shards()}
    assert store.flush() == 2
    before = {table: stored(store, table) for table in ("scores", "features")}
    for name, data in left.items():
        (store.staging / name).write_bytes(data)
    assert store.flush() == 2
    assert {table: stored(store, table) for table in ("scores", "features")} == before
    assert len(before["scores"]) == 3 and len(before["features"]) == 2
    assert not list(store.staging.glob("*"))
    assert duplicates(store) == {}
    # the ledger keeps the names of shards still on disk only: the next flush forgets these
    store.stage("scores", score_rows(4)[3:], fresh=fresh)  # a new key, s3
    store.flush()
    assert len(store.query(f"SELECT name FROM {LEDGER}")) == 1
    assert len(stored(store, "scores")) == 4


def test_a_key_in_two_shards_of_one_flush_keeps_the_first_or_the_last(tmp_path: Path) -> None:
    """One INSERT per table and flush keeps what one INSERT per shard kept: content-addressed
    tables the first row staged for a key, descriptive tables the last, indexed or not."""
    store = Store(tmp_path / "db.duckdb")
    store.migrate()
    store.stage("scores", score_rows(2, value=1.0))
    store.stage("scores", score_rows(3, value=10.0))
    store.stage("features", feature_rows(2, value=1.0))
    store.stage("features", feature_rows(3, value=10.0))
    store.stage("prompts", [{"suite_fp": "s", "idx": 0, "prompt_id": "first"}])
    store.stage("prompts", [{"suite_fp": "s", "idx": 0, "prompt_id": "second"}])
    store.stage("training_logs", [{"run": "r", "step": 1, "metric": "loss", "value": 1.0}])
    store.stage("training_logs", [{"run": "r", "step": 1, "metric": "loss", "value": 2.0}])
    assert store.flush() == 8
    # scores s0, s1 first staged at 1.0 + i, s2 only in the second shard (10.0 + 2)
    assert store.query("SELECT sample_id, value FROM scores ORDER BY ALL") == [("s0", 1.0), ("s1", 2.0), ("s2", 12.0)]
    assert store.query("SELECT sample_id, value FROM features ORDER BY ALL") == [
        ("s0", 10.0),
        ("s1", 11.0),
        ("s2", 12.0),
    ]
    assert store.query("SELECT prompt_id FROM prompts") == [("first",)]
    assert store.query("SELECT value FROM training_logs") == [(2.0,)]
    assert duplicates(store) == {}


def test_a_key_staged_again_in_a_later_flush_is_checked_against_the_stored_one(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.duckdb")
    store.migrate()
    bon = [{"run": "b", "n": 2, "prompt_id": "p", "metric": "gold_reward", "value": 1.0}]
    store.stage("scores", score_rows(2, value=1.0), fresh=True)
    store.stage("features", feature_rows(2, value=1.0), fresh=True)
    store.stage("bon_values", bon)
    store.flush()
    store.stage("scores", score_rows(3, value=10.0))
    store.stage("features", feature_rows(1, value=10.0))  # a stored sample's features, recomputed
    store.stage("features", [{**row, "sample_id": "t"} for row in feature_rows(1, value=5.0)], fresh=True)
    store.stage("bon_values", [{**bon[0], "value": 2.0}])
    store.flush()
    assert store.query("SELECT sample_id, value FROM scores ORDER BY ALL") == [("s0", 1.0), ("s1", 2.0), ("s2", 12.0)]
    assert store.query("SELECT sample_id, value FROM features ORDER BY ALL") == [
        ("s0", 10.0),
        ("s1", 2.0),
        ("t", 5.0),
    ]
    assert store.query("SELECT value FROM bon_values") == [(2.0,)]
    assert duplicates(store) == {}


def test_duplicate_keys_are_reported_per_table(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.duckdb")
    store.migrate()
    store.query("INSERT INTO scores VALUES ('a', 'r', 1.0), ('a', 'r', 2.0), ('b', 'r', 1.0)")
    store.query("INSERT INTO features VALUES ('a', 'f', 1, 1.0), ('a', 'f', 1, 1.0), ('a', 'g', 1, 1.0)")
    assert duplicates(store) == {"scores": 1, "features": 1}


def v3_rows() -> dict[str, list[dict]]:
    """A checkpoint of 2 prompts x 2 samples with every per-sample row, and a best-of-n value."""
    ids = [f"m0-{p}-{i}" for p in ("p0", "p1") for i in range(2)]
    common = {"model_fp": "m0", "gen_key": "g", "prompt_token_ids": [1], "eval_id": "e", "prompt_truncated": False}
    return {
        "prompts": [{"suite_fp": "suite", "idx": i, "prompt_id": p, "text": p} for i, p in enumerate(("p0", "p1"))],
        "checkpoints": [
            {
                "run": "ppo",
                "checkpoint": "reference",
                "step": 0,
                "method": "ppo",
                "is_reference": True,
                "model_fp": "m0",
                "ref_fp": "ref",
                "suite_fp": "suite",
                "gen_key": "g",
                "samples_per_prompt": 2,
                "proxy_scorer": "proxy",
                "gold_scorer": "gold",
                "eval_id": "e",
            }
        ],  # fmt: skip
        "samples": [
            {
                **common,
                "sample_id": s,
                "prompt_id": s[3:5],
                "sample_idx": int(s[-1]),
                "token_ids": [2] * (k + 1),
                "response": "x" * k,
                "n_tokens": k + 1,
                "ended_eos": k % 2 == 0,
            }
            for k, s in enumerate(ids)
        ],  # fmt: skip
        "kl": [{"sample_id": s, "ref_fp": "ref", "k1": 0.1 * k, "kl_full": 0.2 * k} for k, s in enumerate(ids)],
        "scores": [
            {"sample_id": s, "scorer_id": scorer, "value": k + len(scorer)}
            for k, s in enumerate(ids)
            for scorer in ("proxy", "gold")
        ],
        "features": [
            {"sample_id": s, "feature": f, "version": 1, "value": k / 4}
            for k, s in enumerate(ids)
            for f in ("seq_rep_4", "hedge")
        ],
        "bon_values": [{"run": "b", "n": 1, "prompt_id": "p0", "metric": "gold_reward", "value": 0.5}],
        "training_logs": [{"run": "ppo", "step": 1, "metric": "loss", "value": 1.0}],
    }


def test_a_version_3_database_upgrades_in_place_keeping_its_rows(tmp_path: Path) -> None:
    """Migration 0004 copies the per-sample tables and bon_values without their primary keys:
    every row stays as it was, the views read them unchanged, and a shard left by a version-3
    writer is ingested after the upgrade as the table keeps its rows."""
    from rlhf_eval import stats
    from rlhf_eval.store import migrations, read_shard

    path = tmp_path / "v3.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)")
    for migration in migrations()[:3]:
        con.execute(migration.sql)
        con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [migration.version, migration.name])
    old = Store(path)  # writes shards only; they are ingested below as a version-3 writer did
    for table, rows in v3_rows().items():
        old.stage(table, rows)
    for shard in old.pending_shards():
        table = shard.stem.rsplit("-", 1)[-1]
        con.register("shard", read_shard(shard))
        con.execute(f"INSERT OR {TABLES[table][0]} INTO {table} BY NAME SELECT * FROM shard")
        con.unregister("shard")
        shard.unlink()
    stats.refresh_all(con)
    views = ("SELECT * FROM checkpoint_summary", "SELECT * FROM checkpoint_samples", "FROM run_samples('ppo')")
    before = {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES}
    before_views = [con.execute(f"{sql} ORDER BY ALL").fetchall() for sql in views]
    con.close()
    # an interrupted version-3 writer's shard: a stored key with another value, and a new key
    old.stage(
        "scores",
        [
            {"sample_id": "m0-p0-0", "scorer_id": "proxy", "value": 99.0},
            {"sample_id": "n", "scorer_id": "x", "value": 1},
        ],
    )
    assert [s.name.count("-") for s in old.pending_shards()] == [2]  # named as version 3 named them
    store = Store(path)
    with store.writer():
        pass
    after = {t: store.query(f"SELECT * FROM {t} ORDER BY ALL") for t in TABLES}
    assert after.pop("scores") == sorted([*before.pop("scores"), ("n", "x", 1.0)])
    assert after == before
    assert sum(len(rows) for rows in before.values()) >= 20
    assert [store.query(f"{sql} ORDER BY ALL") for sql in views] == before_views
    assert len(before_views[0]) == 1 and len(before_views[1]) == 4
    assert not primary_keys(store) & UNINDEXED
    not_null = store.query(
        "SELECT table_name, constraint_column_names[1] FROM duckdb_constraints() WHERE constraint_type = 'NOT NULL'"
    )
    assert {("samples", "sample_id"), ("kl", "ref_fp"), ("features", "feature"), ("bon_values", "metric")} <= {
        tuple(row) for row in not_null
    }
    assert duplicates(store) == {}
    with pytest.raises(StoreError, match="NOT NULL"):
        store.stage("scores", [{"sample_id": None, "scorer_id": "r", "value": 1.0}])
        store.flush()


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
