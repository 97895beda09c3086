"""``--engine ray`` against the local runner, on a local Ray cluster with CPUs only."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from rlhf_eval import pipeline
from rlhf_eval.cli import app
from rlhf_eval.store import Store

PROMPTS = [
    "the cat sat on", "explain why the sky is blue", "list three good ideas", "a dog runs fast",
    "why is the mat blue", "the sky is", "good ideas on a mat", "explain the dog",
    "list why cats sit", "a blue cat", "three dogs run", "the mat is good",
]  # fmt: skip
GOLD = (
    "def score(prompts, responses):\n"
    "    return [len(set(r.split())) - 0.1 * len(r.split()) for r in responses]\n"
    "def length(prompts, responses):\n"
    "    return [float(len(r)) for r in responses]\n"
)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """One local cluster (2 CPUs, no GPU) for the module: the evaluator joins it instead of
    starting its own, so each test does not pay Ray's start."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ray-inputs")
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    (root / "gold.py").write_text(GOLD)
    return {"suite": root / "prompts.jsonl", "gold": root / "gold.py"}


def eval_args(db: Path, inputs: dict[str, Path], ref: Path, proxy: Path) -> list[str]:
    gold = inputs["gold"]
    return [
        "--ref", str(ref), "--suite", str(inputs["suite"]), "--proxy", str(proxy),
        "--gold", f"{gold}:score", "--gold", f"{gold}:length", "--db", str(db), "--samples", "2",
        "--max-new-tokens", "10", "--no-progress", "--no-analysis",
    ]  # fmt: skip


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr


def stored(db: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {
            name: con.execute(sql).fetchall()
            for name, sql in {
                "samples": "SELECT * EXCLUDE (eval_id) FROM samples ORDER BY sample_id",
                "kl": "SELECT * FROM kl ORDER BY ALL",
                "scores": "SELECT * FROM scores ORDER BY ALL",
                "features": "SELECT * FROM features ORDER BY ALL",
                "checkpoints": "SELECT * EXCLUDE (eval_id, evaluated_at) FROM checkpoints ORDER BY ALL",
                "summary": "SELECT * EXCLUDE (eval_id, evaluated_at) FROM checkpoint_summary ORDER BY ALL",
            }.items()
        }
    finally:
        con.close()


def assert_same_rows(mine: dict[str, list[tuple]], theirs: dict[str, list[tuple]]) -> None:
    """Same rows; floats to float32 rounding (the engines' processes may use other thread counts,
    which reorders fp32 sums), token ids, texts and keys exactly."""
    for name in theirs:
        assert len(mine[name]) == len(theirs[name]), name
        for a, b in zip(mine[name], theirs[name], strict=True):
            assert list(a) == [pytest.approx(y, rel=1e-5, abs=1e-6) if isinstance(y, float) else y for y in b], name


@pytest.fixture(scope="module")
def local_rows(
    tmp_path_factory: pytest.TempPathFactory, inputs: dict[str, Path], gpt2_ref: Path, trainer_run_dir: Path,
    lora_dir: Path, reward_model_dir: Path,
) -> dict[str, list[tuple]]:  # fmt: skip
    db = tmp_path_factory.mktemp("local") / "local.duckdb"
    code, err = run_cli("eval", str(trainer_run_dir), str(lora_dir), *eval_args(db, inputs, gpt2_ref, reward_model_dir))
    assert code == 0, err
    return stored(db)


def test_the_ray_pipeline_stores_the_rows_of_the_local_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_cluster: None, inputs: dict[str, Path], gpt2_ref: Path,
    trainer_run_dir: Path, lora_dir: Path, reward_model_dir: Path, local_rows: dict[str, list[tuple]],
) -> None:  # fmt: skip
    """A Trainer run (several checkpoints), a LoRA adapter, the reference, a reward model and an
    ensemble of two callables as gold: the same samples, KL, scores, features, checkpoints and
    aggregates as ``--engine local``. Parts of 5 samples make several work shards per model."""
    monkeypatch.setattr(pipeline, "UNIT_PART", 5)
    db = tmp_path / "ray.duckdb"
    args = eval_args(db, inputs, gpt2_ref, reward_model_dir)
    code, err = run_cli("eval", str(trainer_run_dir), str(lora_dir), *args, "--engine", "ray", "--json")
    assert code == 0, err
    rows = stored(db)
    n_models = len({r[1] for r in local_rows["samples"]})
    assert n_models >= 4 and len(local_rows["samples"]) == n_models * len(PROMPTS) * 2
    assert len(local_rows["scores"]) == len(local_rows["samples"]) * 4  # proxy, two golds, their ensemble
    assert_same_rows(rows, local_rows)
    assert not Store(db).pending_shards()  # every shard ingested

    code, err = run_cli("eval", str(trainer_run_dir), str(lora_dir), *args, "--engine", "ray")
    assert code == 0 and "nothing to compute" in err, err  # a rerun answers from the database


def test_a_killed_ray_evaluation_resumes_per_work_shard(
    tmp_path: Path, inputs: dict[str, Path], gpt2_ref: Path, trainer_run_dir: Path, lora_dir: Path,
    reward_model_dir: Path, local_rows: dict[str, list[tuple]],
) -> None:  # fmt: skip
    """SIGKILL right after the first work shard lands in staging (the Ray cluster the run started
    dies with it); the same command ingests it, computes only the rest and ends with the local
    runner's rows, no key twice."""
    db = tmp_path / "killed.duckdb"
    command = [
        sys.executable, "-m", "rlhf_eval", "eval", str(trainer_run_dir), str(lora_dir),
        *eval_args(db, inputs, gpt2_ref, reward_model_dir), "--engine", "ray",
    ]  # fmt: skip
    env = {**os.environ, "RLHF_EVAL_KILL_AT": "ray.shard"}
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == -9, first.stderr[-2000:]
    assert list((tmp_path / "killed.duckdb.staging").glob("*-new-samples.arrow"))  # the landed shard is kept

    env.pop("RLHF_EVAL_KILL_AT")
    second = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    generated = int(re.search(r"generated (\d+) samples", second.stderr).group(1))  # type: ignore[union-attr]
    assert 0 < generated < len(local_rows["samples"])  # the first run's shard was not computed again
    assert_same_rows(stored(db), local_rows)
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) - count(DISTINCT sample_id) FROM samples").fetchone() == (0,)
    finally:
        con.close()


def test_missing_engines_and_backends_fail_with_the_install_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inputs: dict[str, Path], gpt2_ref: Path, reward_model_dir: Path,
) -> None:  # fmt: skip
    db = tmp_path / "none.duckdb"
    args = eval_args(db, inputs, gpt2_ref, reward_model_dir)
    code, err = run_cli("eval", str(gpt2_ref), *args, "--backend", "vllm")
    assert code == 2 and "--backend vllm" in err and "rlhf-eval[vllm]" in err and "--backend transformers" in err
    code, err = run_cli("eval", str(gpt2_ref), *args, "--address", "auto")
    assert code == 2 and "only used with --engine ray" in err
    code, err = run_cli("eval", str(gpt2_ref), *args, "--engine", "spark")
    assert code == 2 and "--engine spark: use one of local, ray" in err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code, err = run_cli("eval", str(gpt2_ref), *args, "--engine", "ray")
    assert code == 2 and "Ray is not installed; pip install 'rlhf-eval[ray]'" in err
    assert not db.exists()  # refused before anything was opened


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({"CPU": 2.0}, {"num_cpus": 0.5, "sizes": (1, 1)}),
        ({"CPU": 16.0}, {"num_cpus": 1, "sizes": (1, 1)}),
        ({"CPU": 16.0, "GPU": 1.0}, {"num_gpus": 1 / 3, "sizes": (1, 1)}),
        ({"CPU": 64.0, "GPU": 8.0}, {"num_gpus": 1, "sizes": (1, 8)}),
    ],
)
def test_model_stages_are_sized_per_gpu(
    monkeypatch: pytest.MonkeyPatch, resources: dict[str, float], expected: dict[str, object]
) -> None:
    """A GPU per actor and up to one actor per GPU; three stages share a GPU on a one-GPU machine."""
    import ray

    from rlhf_eval.ray_engine import stage_resources

    monkeypatch.setattr(ray, "cluster_resources", lambda: resources)
    got = stage_resources()
    pool = got.pop("compute")
    assert (pool.min_size, pool.max_size) == expected.pop("sizes")
    assert got == expected
