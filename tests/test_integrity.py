"""``rlhf_eval.integrity``: a sound database passes; duplicates, orphans, damage and foreign files
are each named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from rlhf_eval.errors import StoreError, UserInputError
from rlhf_eval.integrity import check, every_value_query
from rlhf_eval.store import SCHEMA_VERSION, Store


def sample(sample_id: str, model_fp: str = "m") -> dict[str, object]:
    return {
        "sample_id": sample_id, "model_fp": model_fp, "prompt_id": "p", "gen_key": "g", "sample_idx": 0,
        "prompt_token_ids": [1, 2], "token_ids": [3, 4, 5], "response": "an answer", "n_tokens": 3,
        "ended_eos": True, "prompt_truncated": False, "eval_id": "e",
    }  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Two samples with their KL, scores and features, written through the store."""
    path = tmp_path / "sound.duckdb"
    with Store(path).writer() as store:
        store.stage("samples", [sample("s1"), sample("s2")])
        store.stage("kl", [{"sample_id": s, "ref_fp": "r", "k1": 0.1} for s in ("s1", "s2")])
        store.stage("scores", [{"sample_id": s, "scorer_id": c, "value": 1.0} for s in ("s1", "s2") for c in "ab"])
        store.stage("features", [{"sample_id": "s1", "feature": "f", "version": 1, "value": 0.5}])
    return path


def execute(path: Path, *statements: str) -> None:
    con = duckdb.connect(str(path))
    try:
        for sql in statements:
            con.execute(sql)
    finally:
        con.close()


def test_a_sound_database_has_no_problems_and_its_rows_are_counted(db: Path) -> None:
    report = check(db)
    assert report.ok and report.problems == []
    assert report.schema_version == SCHEMA_VERSION
    assert (report.rows["samples"], report.rows["kl"], report.rows["scores"], report.rows["features"]) == (2, 2, 4, 1)
    assert report.rows["schema_migrations"] == SCHEMA_VERSION


def test_rows_without_their_sample_are_orphans(db: Path) -> None:
    execute(db, "INSERT INTO kl (sample_id, ref_fp) VALUES ('gone', 'r')",
            "INSERT INTO scores VALUES ('gone', 'a', 1), ('gone', 'b', 2)")  # fmt: skip
    assert check(db).problems == ["kl: 1 rows without its sample", "scores: 2 rows without its sample"]


def test_a_checkpoint_without_samples_or_aggregates_is_named(db: Path) -> None:
    execute(db, "INSERT INTO checkpoints (run, checkpoint, model_fp, gen_key) VALUES ('r', 'c', 'nobody', 'g')")
    assert check(db).problems == [
        "checkpoints: 1 rows without its samples",
        "checkpoints: 1 rows without its checkpoint_stats row",
    ]


def test_a_key_stored_twice_is_found_in_a_table_without_its_index(db: Path) -> None:
    execute(
        db,
        "CREATE TABLE scores_copy AS SELECT * FROM scores",
        "DROP TABLE scores CASCADE",
        "ALTER TABLE scores_copy RENAME TO scores",
        "INSERT INTO scores VALUES ('s1', 'a', 9), ('s1', 'a', 8), ('s2', 'b', 7)",
    )
    assert check(db).problems == ["scores: 2 keys (sample_id, scorer_id) are stored more than once (5 rows)"]


def test_a_damaged_block_is_named_with_its_table(db: Path) -> None:
    from test_faults import damage

    damage(db, "samples")
    problems = check(db).problems
    assert problems and problems[0].startswith("samples: reading it failed (Corrupt database file")


def test_schema_version_gaps_and_newer_versions_are_named(db: Path) -> None:
    newer = SCHEMA_VERSION + 2
    execute(db, f"INSERT INTO schema_migrations VALUES ({newer}, 'future', now())")
    report = check(db)
    assert report.schema_version == newer
    assert report.problems == [
        f"schema_migrations has versions {[*range(1, SCHEMA_VERSION + 1), newer]}; expected 1..{newer} without gaps",
        f"schema version {newer} is newer than this rlhf-eval's ({SCHEMA_VERSION}); upgrade it",
    ]


def test_a_foreign_duckdb_file_is_not_an_rlhf_eval_database(tmp_path: Path) -> None:
    other = tmp_path / "other.duckdb"
    execute(other, "CREATE TABLE t AS SELECT 1 AS x")
    report = check(other)
    assert report.rows == {"t": 1}
    assert report.problems == ["schema_migrations is missing: this is not a database rlhf-eval wrote"]


def test_missing_and_non_duckdb_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"--db .*nothing\.duckdb: no such database file"):
        check(tmp_path / "nothing.duckdb")
    text = tmp_path / "notes.duckdb"
    text.write_text("not a database\n")
    with pytest.raises(StoreError, match=r"notes\.duckdb: cannot open the database"):
        check(text)
    assert text.read_text() == "not a database\n"


def test_the_query_reads_every_column(db: Path) -> None:
    con = duckdb.connect(str(db), read_only=True)
    try:
        sql = every_value_query(con, "scores")
        assert sql == 'SELECT count(*), bit_xor(hash("sample_id")), bit_xor(hash("scorer_id")), ' \
            'bit_xor(hash("value")) FROM "scores"'  # fmt: skip
        assert con.execute(sql).fetchone()[0] == 4  # type: ignore[index]
    finally:
        con.close()


def test_verify_command_exit_codes_and_json(db: Path, tmp_path: Path) -> None:
    def verify(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rlhf_eval", "verify", *args], capture_output=True, text=True,
                              timeout=120)  # fmt: skip

    sound = verify("--db", str(db), "--json")
    assert sound.returncode == 0, sound.stderr
    report = json.loads(sound.stdout)
    assert report["ok"] is True and report["rows"]["samples"] == 2
    execute(db, "INSERT INTO features VALUES ('gone', 'f', 1, 0.0)")
    broken = verify("--db", str(db))
    assert broken.returncode == 1
    assert "problem: features: 1 rows without its sample" in broken.stdout
    assert broken.stdout.strip().endswith("1 problems found")
    missing = verify("--db", str(tmp_path / "none.duckdb"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: --db {tmp_path / 'none.duckdb'}: no such database file; pass the file " \
        "an evaluation wrote"  # fmt: skip
