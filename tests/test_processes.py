"""Real processes: a reader during a write, and SIGKILL at random points then resume."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from rlhf_eval.store import duplicate_keys

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "dog",
    "runs",
    "fast",
    "explain",
    "why",
    "sky",
    "is",
    "blue",
    "list",
    "three",
    "good",
    "ideas",
    "please",
]

READER = r"""
import json, sys, time
from pathlib import Path
from rlhf_eval.query import checkpoint_summary
db, done_flag = Path(sys.argv[1]), Path(sys.argv[2])
reads, errors, counts = 0, [], []
while not db.exists():
    time.sleep(0.01)
while True:
    finished = done_flag.exists()
    try:
        rows = checkpoint_summary(db)
        reads += 1
        counts.append(sum(r["n_samples"] for r in rows))
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    if finished:
        break
    time.sleep(0.02)
print(json.dumps({"reads": reads, "errors": errors, "counts": counts}))
"""


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory, gpt2_variant_a: Path, gpt2_variant_b: Path) -> Path:
    root = tmp_path_factory.mktemp("work")
    suite = root / "prompts.jsonl"
    prompts = [f"{' '.join(WORDS[i % 9 : i % 9 + 4])} {WORDS[i]}" for i in range(16)]
    suite.write_text("\n".join(json.dumps({"prompt": p}) for p in prompts) + "\n")
    (root / "gold.py").write_text("def score(prompts, responses):\n    return [float(len(r)) for r in responses]\n")
    return root


def eval_command(db: Path, workload: Path, ref: Path, policies: list[Path], rm: Path) -> list[str]:
    return [
        sys.executable, "-m", "rlhf_eval", "eval", *map(str, policies), "--run", "r",
        "--ref", str(ref), "--suite", str(workload / "prompts.jsonl"), "--proxy", str(rm),
        "--gold", f"{workload / 'gold.py'}:score", "--db", str(db), "--samples", "3",
        "--max-new-tokens", "24", "--no-progress",
    ]  # fmt: skip


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_reader_works_while_the_evaluator_writes(
    tmp_path: Path, workload: Path, gpt2_ref: Path, gpt2_variant_a: Path, gpt2_variant_b: Path, reward_model_dir: Path
) -> None:
    db, flag = tmp_path / "live.duckdb", tmp_path / "writer-done"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(db), str(flag)], stdout=subprocess.PIPE, text=True, env=env()
    )
    writer = subprocess.run(
        eval_command(db, workload, gpt2_ref, [gpt2_variant_a, gpt2_variant_b], reward_model_dir),
        capture_output=True, text=True, env=env(), timeout=300,
    )  # fmt: skip
    flag.touch()
    out, _ = reader.communicate(timeout=120)
    assert writer.returncode == 0, writer.stderr
    report = json.loads(out)
    assert report["errors"] == []
    assert report["reads"] >= 5
    final = 3 * 16 * 3  # 3 checkpoints x 16 prompts x 3 samples
    assert report["counts"][-1] == final
    assert any(0 < c < final for c in report["counts"]), "the reader saw checkpoints land while the writer ran"


def dump(db: Path) -> dict[str, list[tuple]]:
    """Every stored row by key and value, without per-invocation ids and times."""
    queries = {
        "samples": "SELECT * EXCLUDE (eval_id) FROM samples ORDER BY sample_id",
        "kl": "SELECT * FROM kl ORDER BY sample_id, ref_fp",
        "scores": "SELECT * FROM scores ORDER BY sample_id, scorer_id",
        "features": "SELECT * FROM features ORDER BY sample_id, feature",
        "checkpoints": "SELECT * EXCLUDE (eval_id, evaluated_at) FROM checkpoints ORDER BY run, checkpoint",
        "prompts": "SELECT * FROM prompts ORDER BY suite_fp, idx",
        "summary": "SELECT * EXCLUDE (eval_id, evaluated_at) FROM checkpoint_summary ORDER BY run, step",
    }
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {name: con.execute(sql).fetchall() for name, sql in queries.items()}
    finally:
        con.close()


def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_rows(
    tmp_path: Path, workload: Path, gpt2_ref: Path, gpt2_variant_a: Path, gpt2_variant_b: Path, reward_model_dir: Path
) -> None:
    policies = [gpt2_variant_a, gpt2_variant_b]
    clean = tmp_path / "clean.duckdb"
    started = time.monotonic()
    subprocess.run(eval_command(clean, workload, gpt2_ref, policies, reward_model_dir), check=True, env=env(),
                   capture_output=True, timeout=300)  # fmt: skip
    duration = time.monotonic() - started
    killed = tmp_path / "killed.duckdb"
    rng = random.Random(1234)
    kills = 0
    # the first attempt has all the work ahead of it and is killed before it can finish; the
    # resumed ones have less left (a complete database answers a rerun in under a second)
    fractions = [rng.uniform(0.3, 0.6)] + [rng.uniform(0.35, 0.9) for _ in range(3)]
    for fraction in fractions:
        proc = subprocess.Popen(eval_command(killed, workload, gpt2_ref, policies, reward_model_dir), env=env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        # anywhere from start-up to the last flush: generation, KL, scoring, features or a flush
        time.sleep(fraction * duration)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    assert kills >= 1  # later attempts have less left to do and may finish first
    final = subprocess.run(eval_command(killed, workload, gpt2_ref, policies, reward_model_dir), env=env(),
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert final.returncode == 0, final.stderr
    for db in (killed, clean):  # every key once, in every table (the store keeps no key index for most)
        con = duckdb.connect(str(db), read_only=True)
        try:
            assert duplicate_keys(con) == {}, db.name
        finally:
            con.close()
    resumed, uninterrupted = dump(killed), dump(clean)
    summary_resumed, summary_clean = resumed.pop("summary"), uninterrupted.pop("summary")
    assert resumed == uninterrupted  # every stored row, key and value, exactly
    # the view's means may differ in the last bit: floating-point sums depend on row order
    for got_row, want_row in zip(summary_resumed, summary_clean, strict=True):
        for got, want in zip(got_row, want_row, strict=True):
            assert got == (pytest.approx(want, rel=1e-12) if isinstance(want, float) else want)
