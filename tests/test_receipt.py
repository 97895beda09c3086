"""Receipts: the answer of a cached rerun replayed from ``<db>.receipts.json`` only while nothing
it depends on has changed (``rlhf_eval/receipt.py``)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from rlhf_eval import receipt, store
from rlhf_eval.cli import app

ANSWER = receipt.Answer(("line one", "line two"), "table\n", "[]\n")
OLD_NS = 1_600_000_000_123_456_789  # 2020, with sub-millisecond digits: a fine-grained time


def make_tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.json").write_text('{"a": 1}')
    (root / "sub" / "b.safetensors").write_bytes(b"0123456789")
    return root


def test_listing_sees_each_kind_of_change(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "model")
    before = receipt.listing([str(root)])
    assert before is not None and set(before) == {
        str(root), str(root / "sub"), str(root / "a.json"), str(root / "sub" / "b.safetensors")
    }  # fmt: skip
    assert len(before[str(root / "a.json")]) == 5 and len(before[str(root)]) == 2

    weights = root / "sub" / "b.safetensors"
    st = weights.stat()
    weights.write_bytes(b"9876543210")  # same size, and the old mtime put back: ctime still moves
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    after_rewrite = receipt.listing([str(root)])
    assert after_rewrite is not None and after_rewrite[str(weights)] != before[str(weights)]

    (root / "checkpoint-2").mkdir()  # an empty folder is a change too (discovery would see it)
    with_folder = receipt.listing([str(root)])
    assert with_folder is not None and set(with_folder) - set(after_rewrite) == {str(root / "checkpoint-2")}

    (root / "a.json").rename(root / "c.json")
    renamed = receipt.listing([str(root)])
    assert renamed is not None and str(root / "c.json") in renamed and str(root / "a.json") not in renamed

    gone = receipt.listing([str(tmp_path / "missing")])
    assert gone == {str(tmp_path / "missing"): []}


def test_listing_follows_links_once_and_gives_up_on_huge_trees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree(tmp_path / "model")
    (root / "sub" / "loop").symlink_to(root)  # a cycle
    found = receipt.listing([str(root)])
    assert found is not None and str(root / "sub" / "loop") in found and len(found) == 5

    monkeypatch.setattr(receipt, "MAX_ENTRIES", 3)
    assert receipt.listing([str(root)]) is None


def test_database_identity_needs_every_commit_in_the_file(tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    assert receipt.database_identity(db) is None
    duckdb.connect(str(db)).close()
    identity = receipt.database_identity(db)
    assert identity is not None and identity == tuple(receipt.file_identity(db.stat()))

    wal = tmp_path / "x.duckdb.wal"
    wal.write_bytes(b"")
    assert receipt.database_identity(db) is None
    wal.unlink()
    staging = tmp_path / "x.duckdb.staging"
    staging.mkdir()
    (staging / "shard.arrow.tmp").write_bytes(b"")  # half-written by another writer: not a commit
    assert receipt.database_identity(db) == identity
    for suffix in store.SHARD_SUFFIXES:  # a finished shard, or one an earlier version left as Parquet
        (staging / f"0-samples{suffix}").write_bytes(b"")
        assert receipt.database_identity(db) is None
        (staging / f"0-samples{suffix}").unlink()
    assert receipt.SHARD_SUFFIXES == store.SHARD_SUFFIXES


def stamp_with_times(mtime_ns: int, ctime_ns: int) -> receipt.Stamp:
    return receipt.Stamp((1, 2, 3, OLD_NS, OLD_NS), {"/m/a": [1, 5, 10, mtime_ns, ctime_ns], "/m": [1, 4]}, {})


def test_a_stamp_is_trusted_only_once_older_than_the_timestamp_tick() -> None:
    now = OLD_NS + 10 * 10**9
    assert receipt.settled(stamp_with_times(OLD_NS, OLD_NS), now)
    assert not receipt.settled(stamp_with_times(OLD_NS, now - 10_000_000), now)  # ctime 10 ms ago
    assert receipt.settled(stamp_with_times(OLD_NS, now - 60_000_000), now)
    whole_seconds = (now // 10**9 - 1) * 10**9  # a coarse file system: 1 s ago is too recent
    assert not receipt.settled(stamp_with_times(whole_seconds, OLD_NS), now)
    assert receipt.settled(stamp_with_times(whole_seconds - 2 * 10**9, OLD_NS), now)


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, list[str]]:
    db = tmp_path / "w.duckdb"
    duckdb.connect(str(db)).close()
    root = make_tree(tmp_path / "model")
    return db, [str(root)]


LATER = time.time_ns() + 3600 * 10**9  # "now" an hour ahead: every stamp is settled


def test_an_answer_checked_between_equal_stamps_is_recorded_and_found(world: tuple[Path, list[str]]) -> None:
    db, roots = world
    assert receipt.verify_and_record(db, "k", roots, lambda: (ANSWER, roots), now_ns=lambda: LATER)
    assert receipt.find(db, "k") == ANSWER
    assert receipt.find(db, "another command") is None


def test_no_receipt_from_a_check_that_fails_moves_or_reads_elsewhere(world: tuple[Path, list[str]]) -> None:
    db, roots = world
    weights = Path(roots[0]) / "sub" / "b.safetensors"

    def rewritten_during_check() -> tuple[receipt.Answer, list[str]]:
        weights.write_bytes(b"a new save")
        return ANSWER, roots

    assert not receipt.verify_and_record(db, "k", roots, lambda: None, now_ns=lambda: LATER)
    assert not receipt.verify_and_record(db, "k", roots, rewritten_during_check, now_ns=lambda: LATER)
    assert not receipt.verify_and_record(db, "k", roots, lambda: (ANSWER, [*roots, "/elsewhere"]), now_ns=lambda: LATER)
    assert not receipt.verify_and_record(db, "k", None, lambda: (ANSWER, roots), now_ns=lambda: LATER)
    assert not receipt.verify_and_record(db, "k", roots, lambda: (ANSWER, roots))  # just written: not settled
    assert not receipt.receipts_path(db).exists()


def test_fault_injection_runs_neither_record_nor_replay(
    world: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, roots = world
    assert receipt.verify_and_record(db, "k", roots, lambda: (ANSWER, roots), now_ns=lambda: LATER)
    monkeypatch.setenv("RLHF_EVAL_KILL_AT", "flush:1")
    assert receipt.find(db, "k") is None
    assert not receipt.verify_and_record(db, "j", roots, lambda: (ANSWER, roots), now_ns=lambda: LATER)


def test_any_change_after_recording_is_a_miss(
    world: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, roots = world
    code = make_tree(tmp_path / "package")
    monkeypatch.setattr(receipt, "PACKAGE_DIR", code)

    def record() -> None:
        assert receipt.verify_and_record(db, "k", roots, lambda: (ANSWER, roots), now_ns=lambda: LATER)
        assert receipt.find(db, "k") == ANSWER

    record()
    st = db.stat()
    os.utime(db, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert receipt.find(db, "k") is None

    record()
    (code / "new_detector.py").write_text("VERSION = 2\n")
    assert receipt.find(db, "k") is None

    record()
    (code / "__pycache__").mkdir()  # bytecode Python writes as it imports is not a change
    (code / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"")
    assert receipt.find(db, "k") == ANSWER

    (Path(roots[0]) / "checkpoint-9").mkdir()
    assert receipt.find(db, "k") is None

    library = tmp_path / "site" / "fake_engine.py"  # a library the answer goes through, upgraded
    library.parent.mkdir()
    library.write_text("VERSION = 1\n")
    monkeypatch.syspath_prepend(str(library.parent))
    monkeypatch.setattr(receipt, "DEPENDENCIES", ("fake_engine", "no_such_module_here"))
    record()
    assert str(library) in receipt.code_listing()
    library.write_text("VERSION = 2\n")
    assert receipt.find(db, "k") is None

    record()
    receipt.receipts_path(db).write_text("{not json")
    assert receipt.find(db, "k") is None
    receipt.receipts_path(db).write_text(json.dumps({"format": receipt.FORMAT, "receipts": {"k": [1], "j": 2}}))
    assert receipt.find(db, "k") is None
    record()  # entries of another shape are dropped, not a failure of the command that writes
    assert set(receipt.read_receipts(db)) == {"k"}
    record()
    data = json.loads(receipt.receipts_path(db).read_text())
    receipt.receipts_path(db).write_text(json.dumps({**data, "format": receipt.FORMAT + 1}))
    assert receipt.find(db, "k") is None


def test_only_the_most_recent_receipts_are_kept(world: tuple[Path, list[str]]) -> None:
    db, roots = world
    keys = [f"k{i}" for i in range(receipt.MAX_RECEIPTS + 2)]
    for key in keys:
        assert receipt.verify_and_record(db, key, roots, lambda: (ANSWER, roots), now_ns=lambda: LATER)
    assert list(receipt.read_receipts(db)) == keys[2:]
    assert receipt.find(db, keys[0]) is None and receipt.find(db, keys[-1]) == ANSWER


# -- through the command ------------------------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path: Path, gpt2_variant_a: Path, gpt2_variant_b: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(gpt2_variant_a, run / "checkpoint-1")
    shutil.copytree(gpt2_variant_b, run / "checkpoint-2")
    return run


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["the cat sat", "a dog runs", "why is sky"]))
    return path


def eval_args(run: Path, db: Path, suite: Path, ref: Path, rm: Path, *more: str) -> list[str]:
    return [
        "eval", str(run), "--ref", str(ref), "--suite", str(suite), "--proxy", str(rm), "--gold", str(rm),
        "--db", str(db), "--samples", "2", "--max-new-tokens", "6", "--no-progress", *more,
    ]  # fmt: skip


def invoke(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, args)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def command(args: list[str]) -> tuple[str, str, set[str]]:
    """The command in a process of its own: stdout, stderr without the import lines, and the
    top-level modules it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "rlhf_eval", *args], capture_output=True, text=True, check=True
    )
    lines = done.stderr.splitlines()
    imported = {line.split("|")[-1].strip().split(".")[0] for line in lines if line.startswith("import time:")}
    return done.stdout, "\n".join(line for line in lines if not line.startswith("import time:")), imported


def settle() -> None:
    time.sleep(0.1)  # past the timestamp tick, so the receipt's stamp is trusted


def test_a_rerun_prints_what_the_database_answers_without_opening_it(
    tmp_path: Path, run_dir: Path, prompts_file: Path, gpt2_ref: Path, reward_model_dir: Path
) -> None:
    db = tmp_path / "r.duckdb"
    args = eval_args(run_dir, db, prompts_file, gpt2_ref, reward_model_dir)
    code, _, err = invoke(args)
    assert code == 0, err
    assert "generated" in err and receipt.receipts_path(db).is_file()  # the first run left a receipt

    for more in ([], ["--json"]):
        replayed_out, replayed_err, imported = command([*args, *more])
        assert "duckdb" not in imported and "torch" not in imported
        receipt.receipts_path(db).unlink()  # the same command answered from the database
        code, cached_out, cached_err = invoke([*args, *more])
        assert code == 0 and "nothing to compute" in cached_err
        assert (replayed_out, replayed_err.strip()) == (cached_out, cached_err.strip())
        assert receipt.receipts_path(db).is_file()  # ... which also leaves the receipt
    rows = json.loads(command([*args, "--json"])[0])
    assert {r["checkpoint"] for r in rows} == {"reference", "checkpoint-1", "checkpoint-2"}


def test_a_rerun_after_a_change_computes_what_is_missing(
    tmp_path: Path, run_dir: Path, prompts_file: Path, gpt2_ref: Path, reward_model_dir: Path, gpt2_variant_a: Path
) -> None:
    db = tmp_path / "c.duckdb"
    args = eval_args(run_dir, db, prompts_file, gpt2_ref, reward_model_dir, "--no-analysis")
    assert invoke(args)[0] == 0
    settle()

    con = duckdb.connect(str(db))  # another process removes one stored value
    (victim,) = con.execute("SELECT sample_id FROM kl WHERE k1 <> 0 ORDER BY sample_id LIMIT 1").fetchone()
    con.execute("DELETE FROM kl WHERE sample_id = ?", [victim])
    con.close()
    code, _, err = invoke(args)
    assert code == 0 and "generated 0 samples, 1 KL, 0 scores, 0 feature rows" in err, err
    settle()

    shutil.copytree(gpt2_variant_a, run_dir / "checkpoint-3")  # a new checkpoint (checkpoint-1's weights)
    code, out, err = invoke(args)
    assert code == 0 and "evaluated 4 checkpoints" in err and "checkpoint-3" in out, err
    settle()

    weights = run_dir / "checkpoint-3" / "model.safetensors"
    os.utime(weights, ns=(time.time_ns(), time.time_ns()))  # touched, same bytes: hashed again, not replayed
    code, _, err = invoke(args)
    assert code == 0 and "generated 0 samples, 0 KL, 0 scores, 0 feature rows" in err, err
    settle()
    replayed_out, replayed_err, imported = command(args)
    assert "duckdb" not in imported and "nothing to compute" in replayed_err


def test_no_receipt_for_python_scorers_or_other_engines(
    tmp_path: Path, run_dir: Path, prompts_file: Path, gpt2_ref: Path, reward_model_dir: Path
) -> None:
    gold = tmp_path / "gold.py"
    gold.write_text("def score(prompts, responses):\n    return [float(len(r)) for r in responses]\n")
    db = tmp_path / "p.duckdb"
    args = eval_args(run_dir, db, prompts_file, gpt2_ref, reward_model_dir, "--no-analysis")
    args[args.index("--gold") + 1] = f"{gold}:score"
    for _ in range(2):
        code, _, err = invoke(args)
        assert code == 0, err
    assert "nothing to compute" in err and not receipt.receipts_path(db).exists()


def test_input_roots_name_every_local_input_and_refuse_hub_ids(
    tmp_path: Path, lora_dir: Path, gpt2_ref: Path, reward_model_dir: Path, prompts_file: Path
) -> None:
    from rlhf_eval.pipeline import EvalConfig, Evaluation

    base = tmp_path / "base"  # the adapter's own base folder, not the reference
    shutil.copytree(gpt2_ref, base)
    adapter = tmp_path / "adapter"
    shutil.copytree(lora_dir, adapter)
    config_file = adapter / "adapter_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "base_model_name_or_path": str(base)}))
    config = EvalConfig(
        paths=(str(adapter),),
        ref=str(gpt2_ref),
        suite=str(prompts_file),
        proxy=(str(reward_model_dir),),
        gold=(f"{reward_model_dir}@label=LABEL_0",),
        db=str(tmp_path / "x.duckdb"),
    )
    expected = sorted({str(p.resolve()) for p in (adapter, base, gpt2_ref, prompts_file, reward_model_dir)})
    assert Evaluation(config).input_roots() == expected

    assert Evaluation(dataclasses.replace(config, gold=("some-org/some-reward-model",))).input_roots() is None
    assert Evaluation(dataclasses.replace(config, gold=("json:loads",))).input_roots() is None  # a Python scorer
