"""End to end through the CLI on tiny offline checkpoints."""

from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from rlhf_eval.cli import app

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
]


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "prompts.jsonl"
    prompts = [" ".join(WORDS[i : i + 3 + i % 4]) for i in range(0, 12)]
    path.write_text("\n".join(json.dumps({"prompt": p}) for p in prompts) + "\n")
    return path


@pytest.fixture(scope="module")
def gold_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gold") / "gold.py"
    path.write_text(
        "def score(prompts, responses):\n"
        "    return [len(set(r.split())) - 0.1 * len(r.split()) for r in responses]\n"
        "def nan_for_long(prompts, responses):\n"
        "    return [float('nan') if len(r.split()) > 5 else 1.0 for r in responses]\n"
    )
    return path


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def base_args(db: Path, suite: Path, ref: Path, proxy: Path, gold: Path) -> list[str]:
    return [
        "--ref", str(ref), "--suite", str(suite), "--proxy", str(proxy), "--gold", f"{gold}:score",
        "--db", str(db), "--samples", "2", "--max-new-tokens", "12", "--no-progress",
    ]  # fmt: skip


def table_rows(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def independent_summary(db: Path) -> dict[tuple[str, str], dict[str, float]]:
    """Recompute per-checkpoint means from the raw tables, without the views."""
    checkpoints = table_rows(
        db,
        "SELECT run, checkpoint, model_fp, ref_fp, suite_fp, gen_key, samples_per_prompt, proxy_scorer, gold_scorer "
        "FROM checkpoints",
    )
    prompts = defaultdict(set)
    for suite_fp, prompt_id in table_rows(db, "SELECT suite_fp, prompt_id FROM prompts"):
        prompts[suite_fp].add(prompt_id)
    samples = table_rows(db, "SELECT sample_id, model_fp, gen_key, prompt_id, sample_idx, n_tokens FROM samples")
    kl = {(s, r): v for s, r, v in table_rows(db, "SELECT sample_id, ref_fp, kl_full FROM kl")}
    scores = {(s, c): v for s, c, v in table_rows(db, "SELECT sample_id, scorer_id, value FROM scores")}
    features = {(s, f): v for s, f, v in table_rows(db, "SELECT sample_id, feature, value FROM features")}
    out = {}
    for run, ckpt, model_fp, ref_fp, suite_fp, gen_key, n, proxy, gold in checkpoints:
        mine = [s for s in samples if s[1] == model_fp and s[2] == gen_key and s[3] in prompts[suite_fp] and s[4] < n]
        ids = [s[0] for s in mine]

        def mean(values: list[float]) -> float:
            return sum(values) / len(values)

        out[(run, ckpt)] = {
            "n_samples": len(ids),
            "kl": mean([kl[(i, ref_fp)] for i in ids]),
            "proxy_reward": mean([scores[(i, proxy)] for i in ids]),
            "gold_reward": mean([scores[(i, gold)] for i in ids]),
            "mean_length": mean([s[5] for s in mine]),
            "seq_rep_4": mean([features[(i, "seq_rep_4")] for i in ids]),
            "hedge_rate": mean([features[(i, "hedge")] for i in ids]),
        }
    return out


def test_two_checkpoints_and_reference_end_to_end(
    tmp_path: Path, suite_file: Path, gold_file: Path, gpt2_ref: Path, gpt2_variant_a: Path,
    gpt2_variant_b: Path, reward_model_dir: Path,
) -> None:  # fmt: skip
    db = tmp_path / "e2e.duckdb"
    args = base_args(db, suite_file, gpt2_ref, reward_model_dir, gold_file)
    code, out, err = run_cli("eval", str(gpt2_variant_a), str(gpt2_variant_b), "--run", "sweep", *args, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["run"], r["checkpoint"], r["step"]) for r in rows] == [
        ("sweep", "reference", 0),
        ("sweep", gpt2_variant_a.name, 1),
        ("sweep", gpt2_variant_b.name, 2),
    ]
    expected = independent_summary(db)
    for row in rows:
        want = expected[(row["run"], row["checkpoint"])]
        assert row["n_samples"] == want["n_samples"] == 24  # 12 prompts x 2 samples
        for key in ("kl", "proxy_reward", "gold_reward", "mean_length", "seq_rep_4", "hedge_rate"):
            assert row[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
        assert row["sqrt_kl"] == pytest.approx(math.sqrt(max(row["kl"], 0.0)))
    reference = rows[0]
    assert reference["kl"] == 0.0 and reference["method"] == "base"
    assert rows[1]["kl"] > 0 and rows[2]["kl"] > 0
    assert rows[1]["kl_ci_low"] <= rows[1]["kl"] <= rows[1]["kl_ci_high"]

    # the same command again: no model work, no new rows
    counts = table_rows(
        db, "SELECT (SELECT count(*) FROM samples), (SELECT count(*) FROM kl), (SELECT count(*) FROM scores)"
    )
    code, _, err = run_cli("eval", str(gpt2_variant_a), str(gpt2_variant_b), "--run", "sweep", *args)
    assert code == 0, err
    assert "generated 0 samples, 0 KL, 0 scores, 0 feature rows" in err
    assert (
        table_rows(
            db, "SELECT (SELECT count(*) FROM samples), (SELECT count(*) FROM kl), (SELECT count(*) FROM scores)"
        )
        == counts
    )

    # one more scorer: only that scorer runs
    code, _, err = run_cli(
        "eval", str(gpt2_variant_a), str(gpt2_variant_b), "--run", "sweep", *args, "--gold", f"{gold_file}:nan_for_long"
    )
    assert code == 0, err
    # 72 member scores of the new scorer + 72 ensemble aggregates, nothing else
    assert "generated 0 samples, 0 KL, 144 scores, 0 feature rows" in err


def test_adding_one_checkpoint_samples_only_it(
    tmp_path: Path, suite_file: Path, gold_file: Path, gpt2_ref: Path, gpt2_variant_a: Path,
    gpt2_variant_b: Path, reward_model_dir: Path,
) -> None:  # fmt: skip
    db = tmp_path / "add.duckdb"
    args = base_args(db, suite_file, gpt2_ref, reward_model_dir, gold_file)
    assert run_cli("eval", str(gpt2_variant_a), "--run", "r", *args)[0] == 0
    code, _, err = run_cli("eval", str(gpt2_variant_a), str(gpt2_variant_b), "--run", "r", *args)
    assert code == 0, err
    assert "generated 24 samples, 24 KL, 48 scores, 24 feature rows" in err


def test_trainer_run_dir_and_lora_adapter(
    tmp_path: Path, suite_file: Path, gold_file: Path, gpt2_ref: Path, trainer_run_dir: Path, lora_dir: Path,
    reward_model_dir: Path,
) -> None:  # fmt: skip
    db = tmp_path / "runs.duckdb"
    args = base_args(db, suite_file, gpt2_ref, reward_model_dir, gold_file)
    code, out, err = run_cli("eval", str(trainer_run_dir), str(lora_dir), *args, "--json")
    assert code == 0, err
    rows = json.loads(out)
    by_run = defaultdict(list)
    for row in rows:
        by_run[row["run"]].append((row["checkpoint"], row["step"], row["method"]))
    assert by_run[trainer_run_dir.name][:3] == [
        ("reference", 0, "base"),
        ("checkpoint-2", 2, "ppo"),
        ("checkpoint-4", 4, "ppo"),
    ]
    assert by_run[lora_dir.name][0] == ("reference", 0, "base")
    assert by_run[lora_dir.name][1][0] == lora_dir.name
    lora_row = next(r for r in rows if r["run"] == lora_dir.name and r["checkpoint"] == lora_dir.name)
    assert lora_row["kind"] == "adapter" and lora_row["kl"] > 0
    logged = table_rows(db, f"SELECT DISTINCT metric FROM training_logs WHERE run = '{trainer_run_dir.name}'")
    assert ("objective/kl",) in logged
    assert not list(lora_dir.parent.glob("*merged*"))


def test_value_head_checkpoint_loads_as_policy(
    tmp_path: Path, suite_file: Path, gold_file: Path, gpt2_ref: Path, vhead_dir: Path, gpt2_variant_a: Path,
    reward_model_dir: Path,
) -> None:  # fmt: skip
    db = tmp_path / "vhead.duckdb"
    args = base_args(db, suite_file, gpt2_ref, reward_model_dir, gold_file)
    code, out, err = run_cli("eval", str(vhead_dir), str(gpt2_variant_a), "--run", "v", *args, "--json")
    assert code == 0, err
    rows = {r["checkpoint"]: r for r in json.loads(out)}
    # same policy weights, with and without value-head tensors: same samples, same KL
    assert rows[vhead_dir.name]["kl"] == pytest.approx(rows[gpt2_variant_a.name]["kl"])


def test_nan_rewards_are_stored_as_null_and_counted(
    tmp_path: Path, suite_file: Path, gold_file: Path, gpt2_ref: Path, gpt2_variant_a: Path, reward_model_dir: Path
) -> None:
    db = tmp_path / "nan.duckdb"
    args = [
        "--ref", str(gpt2_ref), "--suite", str(suite_file), "--proxy", str(reward_model_dir),
        "--gold", f"{gold_file}:nan_for_long", "--db", str(db), "--max-new-tokens", "12", "--no-progress",
    ]  # fmt: skip
    code, out, err = run_cli("eval", str(gpt2_variant_a), *args, "--json")
    assert code == 0, err
    rows = json.loads(out)
    nulls = table_rows(db, "SELECT count(*) FROM scores WHERE value IS NULL")[0][0]
    assert nulls > 0 and f"{nulls} NaN/inf scores stored as NULL" in err
    assert sum(r["gold_null"] for r in rows) == nulls
    assert table_rows(db, "SELECT count(*) FROM scores")[0][0] == 2 * 2 * 12  # nothing dropped


def test_long_prompts_are_cut_and_counted(
    tmp_path: Path, gold_file: Path, gpt2_ref: Path, gpt2_variant_a: Path, reward_model_dir: Path
) -> None:
    suite = tmp_path / "long.jsonl"
    suite.write_text(json.dumps({"prompt": " ".join(["cat"] * 400)}) + "\n" + json.dumps({"prompt": "a cat"}) + "\n")
    db = tmp_path / "long.duckdb"
    args = base_args(db, suite, gpt2_ref, reward_model_dir, gold_file)
    code, _, err = run_cli("eval", str(gpt2_variant_a), *args)
    assert code == 0, err
    assert "1 of 2 prompts exceed the context minus max_new_tokens" in err
    assert table_rows(db, "SELECT count(*) FROM samples WHERE prompt_truncated")[0][0] == 2 * 2


def test_pickle_only_checkpoint_needs_allow_pickle(
    tmp_path: Path, suite_file: Path, gold_file: Path, gpt2_ref: Path, pickle_only_dir: Path, reward_model_dir: Path
) -> None:
    db = tmp_path / "pickle.duckdb"
    args = base_args(db, suite_file, gpt2_ref, reward_model_dir, gold_file)
    code, _, err = run_cli("eval", str(pickle_only_dir), *args)
    assert code == 2
    assert err.strip().count("\n") == 0
    assert f"{pickle_only_dir}: weights only as pickle (pytorch_model.bin)" in err and "--allow-pickle" in err
    assert not db.exists()
    code, _, err = run_cli("eval", str(pickle_only_dir), *args, "--allow-pickle", "--limit", "2")
    assert code == 0, err
    assert "can execute arbitrary code" in err


def snapshot(db: Path) -> dict[str, list[tuple]]:
    if not db.exists():
        return {}
    tables = ["samples", "kl", "scores", "features", "checkpoints", "evaluations"]
    return {t: sorted(map(repr, table_rows(db, f"SELECT * FROM {t}"))) for t in tables}  # type: ignore[misc]


@pytest.fixture(scope="module")
def filled_db(
    tmp_path_factory: pytest.TempPathFactory, suite_file: Path, gold_file: Path, gpt2_ref: Path,
    gpt2_variant_a: Path, reward_model_dir: Path,
) -> Path:  # fmt: skip
    db = tmp_path_factory.mktemp("filled") / "filled.duckdb"
    code, _, err = run_cli(
        "eval", str(gpt2_variant_a), *base_args(db, suite_file, gpt2_ref, reward_model_dir, gold_file)
    )
    assert code == 0, err
    return db


def corrupt_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return dst


def no_tokenizer_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "tokenizer.model"):
        (dst / name).unlink(missing_ok=True)
    return dst


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("missing_path", "path does not exist; check the checkpoint path"),
        ("no_model", "no model found"),
        ("truncated_safetensors", "truncated safetensors file"),
        ("missing_tokenizer", "no tokenizer found; save it next to the weights"),
        ("tokenizer_mismatch", "its tokenizer differs from the reference's"),
        ("rm_two_labels", "2 labels (negative, positive) and none was chosen"),
        ("empty_suite", "empty"),
        ("bad_samples", "--samples 0: must be at least 1"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_keeps_the_database(
    case: str, needle: str, tmp_path: Path, filled_db: Path, suite_file: Path, gold_file: Path, gpt2_ref: Path,
    gpt2_variant_a: Path, llama_ref: Path, reward_model_dir: Path, reward_model_two_labels_dir: Path,
) -> None:  # fmt: skip
    db = tmp_path / "copy.duckdb"
    shutil.copy(filled_db, db)
    before = snapshot(db)
    policy, suite, proxy, extra = str(gpt2_variant_a), str(suite_file), str(reward_model_dir), []
    if case == "missing_path":
        policy = str(tmp_path / "nowhere")
    elif case == "no_model":
        (tmp_path / "empty").mkdir()
        policy = str(tmp_path / "empty")
    elif case == "truncated_safetensors":
        policy = str(corrupt_copy(gpt2_variant_a, tmp_path / "broken"))
    elif case == "missing_tokenizer":
        policy = str(no_tokenizer_copy(gpt2_variant_a, tmp_path / "notok"))
    elif case == "tokenizer_mismatch":
        policy = str(llama_ref)
    elif case == "rm_two_labels":
        proxy = str(reward_model_two_labels_dir)
    elif case == "empty_suite":
        (tmp_path / "empty.jsonl").write_text("")
        suite = str(tmp_path / "empty.jsonl")
    elif case == "bad_samples":
        extra = ["--samples", "0"]
    args = ["--ref", str(gpt2_ref), "--suite", suite, "--proxy", proxy, "--gold", f"{gold_file}:score",
            "--db", str(db), "--max-new-tokens", "12", "--no-progress", *extra]  # fmt: skip
    code, _, err = run_cli("eval", policy, *args)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0]
    assert snapshot(db) == before


def test_llama_lora_policy_on_chat_messages_uses_the_template(
    tmp_path: Path, gold_file: Path, llama_ref: Path, reward_model_dir: Path
) -> None:
    from rlhf_eval.tiny import build_lora_adapter

    adapter = build_lora_adapter(llama_ref, tmp_path / "llama-lora")
    suite = tmp_path / "chat.jsonl"
    chats = [
        [{"role": "user", "content": "explain why the sky is blue"}],
        [{"role": "user", "content": "list three good ideas"}],
    ]
    suite.write_text("\n".join(json.dumps({"messages": m}) for m in chats) + "\n")
    db = tmp_path / "chat.duckdb"
    args = base_args(db, suite, llama_ref, reward_model_dir, gold_file)
    code, out, err = run_cli("eval", str(adapter), *args, "--json")
    assert code == 0, err
    rows = {r["checkpoint"]: r for r in json.loads(out)}
    assert rows["llama-lora"]["kind"] == "adapter" and rows["llama-lora"]["kl"] > 0
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(llama_ref))
    prompts = {tokenizer.decode(ids) for (ids,) in table_rows(db, "SELECT DISTINCT prompt_token_ids FROM samples")}
    assert prompts == {
        "user : explain why the sky is blue assistant :",
        "user : list three good ideas assistant :",
    }


def test_real_trl_dpo_lora_and_grpo_runs(
    tmp_path: Path, suite_file: Path, gold_file: Path, gpt2_ref: Path, trl_dpo_lora_run: Path, trl_grpo_run: Path,
    reward_model_dir: Path,
) -> None:  # fmt: skip
    db = tmp_path / "trl.duckdb"
    args = base_args(db, suite_file, gpt2_ref, reward_model_dir, gold_file)
    code, out, err = run_cli("eval", str(trl_dpo_lora_run), str(trl_grpo_run), *args, "--json")
    assert code == 0, err
    rows = json.loads(out)
    seen = {(r["run"], r["checkpoint"], r["step"], r["method"], r["kind"]) for r in rows}
    # the final save at each run's root equals checkpoint-4 and is evaluated once
    assert seen == {
        ("dpo-lora", "reference", 0, "base", "model"),
        ("dpo-lora", "checkpoint-2", 2, "dpo", "adapter"),
        ("dpo-lora", "checkpoint-4", 4, "dpo", "adapter"),
        ("grpo", "reference", 0, "base", "model"),
        ("grpo", "checkpoint-2", 2, "grpo", "model"),
        ("grpo", "checkpoint-4", 4, "grpo", "model"),
    }
    assert all(r["n_samples"] == 24 for r in rows)
    assert all(r["kl"] > 0 for r in rows if r["run"] == "grpo" and r["step"] > 0)
    metrics = dict(table_rows(db, "SELECT run, list(DISTINCT metric) FROM training_logs GROUP BY run"))
    assert {"rewards/chosen", "rewards/margins"} <= set(metrics["dpo-lora"])
    assert {"kl", "reward", "completions/mean_length"} <= set(metrics["grpo"])


def test_changed_sampling_is_announced_and_keyed_separately(
    tmp_path: Path, suite_file: Path, gold_file: Path, gpt2_ref: Path, gpt2_variant_a: Path, reward_model_dir: Path
) -> None:
    db = tmp_path / "temp.duckdb"
    args = base_args(db, suite_file, gpt2_ref, reward_model_dir, gold_file)
    assert run_cli("eval", str(gpt2_variant_a), *args)[0] == 0
    code, out, err = run_cli("eval", str(gpt2_variant_a), *args, "--temperature", "0.7", "--top-k", "5", "--json")
    assert code == 0, err
    assert "KL is measured for this processed distribution" in err
    # new samples under a new generation key; the reference's KL is no longer 0 (processed vs raw)
    assert "generated 48 samples" in err
    reference = next(r for r in json.loads(out) if r["checkpoint"] == "reference")
    assert reference["kl"] > 0
    assert table_rows(db, "SELECT count(DISTINCT gen_key) FROM samples")[0][0] == 2


def test_adapter_base_from_flag_when_the_config_points_elsewhere(
    tmp_path: Path, suite_file: Path, gold_file: Path, gpt2_ref: Path, lora_dir: Path, reward_model_dir: Path
) -> None:
    moved = tmp_path / "moved-adapter"
    shutil.copytree(lora_dir, moved)
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (moved / "adapter_config.json").write_text(json.dumps(config))
    db = tmp_path / "base.duckdb"
    args = base_args(db, suite_file, gpt2_ref, reward_model_dir, gold_file)
    code, _, err = run_cli("eval", str(moved), *args, "--limit", "2")
    assert code == 2 and "adapter_config.json: base model" in err and "pass the base model with --base" in err
    code, out, err = run_cli("eval", str(moved), *args, "--limit", "2", "--base", str(gpt2_ref), "--json")
    assert code == 0, err
    assert {r["kind"] for r in json.loads(out)} == {"model", "adapter"}


def test_a_rerun_reads_no_weight_file_again(
    tmp_path: Path, suite_file: Path, gold_file: Path, gpt2_ref: Path, gpt2_variant_a: Path, reward_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import rlhf_eval.fingerprint as fingerprint

    hashed: list[str] = []
    real = fingerprint.sha256_file

    def counting(path: Path, chunk_size: int = 1 << 22) -> str:
        hashed.append(path.name)
        return real(path, chunk_size)

    monkeypatch.setattr(fingerprint, "sha256_file", counting)
    db = tmp_path / "hash.duckdb"
    args = [*base_args(db, suite_file, gpt2_ref, reward_model_dir, gold_file), "--limit", "2"]
    assert run_cli("eval", str(gpt2_variant_a), *args)[0] == 0
    assert "model.safetensors" in hashed  # policy, reference and reward model were hashed once
    hashed.clear()
    assert run_cli("eval", str(gpt2_variant_a), *args)[0] == 0
    assert hashed == []  # (size, mtime) unchanged: digests come from file_hashes


def test_a_model_evaluated_in_parts_stores_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suite_file: Path, gold_file: Path, gpt2_ref: Path,
    gpt2_variant_a: Path, reward_model_dir: Path,
) -> None:  # fmt: skip
    """Memory stays bounded because a model's samples go through the stages one part at a time;
    the parts change what is held at once, not a single stored value (ensemble members
    included: their standardization spans every part)."""
    from rlhf_eval import pipeline

    def rows_of(db: Path) -> dict[str, list[tuple]]:
        return {
            "samples": table_rows(db, "SELECT * EXCLUDE (eval_id) FROM samples ORDER BY sample_id"),
            "kl": table_rows(db, "SELECT * FROM kl ORDER BY ALL"),
            "scores": table_rows(db, "SELECT * FROM scores ORDER BY ALL"),
            "features": table_rows(db, "SELECT * FROM features ORDER BY ALL"),
            "summary": table_rows(db, "SELECT * EXCLUDE (eval_id, evaluated_at) FROM checkpoint_summary ORDER BY ALL"),
        }

    def evaluate(db: Path) -> dict[str, list[tuple]]:
        args = base_args(db, suite_file, gpt2_ref, reward_model_dir, gold_file)
        code, _, err = run_cli("eval", str(gpt2_variant_a), "--run", "r", *args, "--gold", f"{gold_file}:nan_for_long")
        assert code == 0, err
        return rows_of(db)

    whole = evaluate(tmp_path / "whole.duckdb")
    monkeypatch.setattr(pipeline, "UNIT_PART", 5)  # 12 prompts x 2 samples: parts of 5, 5, 5, 5, 4
    parted = evaluate(tmp_path / "parts.duckdb")
    assert len(whole["samples"]) == 48 and len(whole["scores"]) == 48 * 4  # proxy, two golds, their ensemble
    # the same tokens and texts; KL and reward-model values to float32 rounding (a batch's
    # composition and padding change the order of fp32 sums), never more
    assert parted["samples"] == whole["samples"] and parted["features"] == whole["features"]
    for name in ("kl", "scores", "summary"):
        assert len(parted[name]) == len(whole[name])
        for mine, theirs in zip(parted[name], whole[name], strict=True):
            assert list(mine) == [
                pytest.approx(y, rel=1e-5, abs=1e-6) if isinstance(y, float) else y for y in theirs
            ], name


def test_a_complete_rerun_loads_nothing_and_leaves_the_file_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suite_file: Path, gold_file: Path, gpt2_ref: Path,
    gpt2_variant_a: Path, reward_model_dir: Path,
) -> None:  # fmt: skip
    """When the database already holds every row an evaluation asks for, a rerun answers from
    it read-only: no tokenizer or model is loaded, the file is not touched, the analysis is
    kept; any missing row (here one sample's features) sends it back through the evaluator,
    which computes only that."""
    import hashlib

    from rlhf_eval import pipeline
    from rlhf_eval.cli import jsonable
    from rlhf_eval.pipeline import SUMMARY_SQL
    from rlhf_eval.query import fetch_dicts

    db = tmp_path / "cached.duckdb"
    args = [
        "eval",
        str(gpt2_variant_a),
        "--run",
        "r",
        *base_args(db, suite_file, gpt2_ref, reward_model_dir, gold_file),
    ]
    code, first, err = run_cli(*args, "--json")
    assert code == 0, err

    def fingerprint() -> tuple[str, int]:
        return hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a cached rerun loaded a tokenizer or a model")

    before = fingerprint()
    unfinished = db.with_name(db.name + ".staging") / "0-another-writer-samples.arrow.tmp"
    unfinished.parent.mkdir(exist_ok=True)
    unfinished.write_bytes(b"a shard another process is writing")
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "load_tokenizer", refuse)
        patch.setattr(pipeline, "load_causal_lm", refuse)
        code, again, err = run_cli(*args, "--json")
    assert code == 0, err
    assert "nothing to compute" in err and "generated 0 samples, 0 KL, 0 scores, 0 feature rows" in err
    assert fingerprint() == before and unfinished.exists()  # read-only: not even another writer's files
    stored = fetch_dicts(db, SUMMARY_SQL, [["r"]])  # the first run's rows, with its analysis since
    assert (
        json.loads(again) == json.loads(json.dumps(jsonable(stored), default=str))
        and len(stored) == len(json.loads(first)) == 2
    )

    con = duckdb.connect(str(db))
    (victim,) = con.execute("SELECT sample_id FROM samples ORDER BY sample_id LIMIT 1").fetchone()
    con.execute("DELETE FROM features WHERE sample_id = ?", [victim])
    con.close()
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert "nothing to compute" not in err and "generated 0 samples, 0 KL, 0 scores, 1 feature rows" in err


def stored_keys_are_unique(db: Path) -> bool:
    from rlhf_eval.integrity import duplicated_keys
    from rlhf_eval.store import KEYS

    con = duckdb.connect(str(db), read_only=True)
    try:
        return duplicated_keys(con, list(KEYS)) == {}
    finally:
        con.close()


def test_a_detector_s_new_version_replaces_its_stored_features(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suite_file: Path, gold_file: Path, gpt2_ref: Path,
    gpt2_variant_a: Path, reward_model_dir: Path,
) -> None:  # fmt: skip
    """Features are the evaluator's only rows staged for keys already stored: every sample's
    features are recomputed, each key stored once, the changed detector's rows at its new version."""
    import dataclasses

    from rlhf_eval.detectors import REGISTRY

    db = tmp_path / "features.duckdb"
    args = base_args(db, suite_file, gpt2_ref, reward_model_dir, gold_file)
    assert run_cli("eval", str(gpt2_variant_a), "--run", "r", *args)[0] == 0
    before = table_rows(db, "SELECT * FROM features ORDER BY ALL")
    hedge = REGISTRY["hedge"]
    monkeypatch.setitem(REGISTRY, "hedge", dataclasses.replace(hedge, version=hedge.version + 1))
    code, _, err = run_cli("eval", str(gpt2_variant_a), "--run", "r", *args)
    assert code == 0, err
    assert "generated 0 samples, 0 KL, 0 scores, 48 feature rows" in err  # reference and policy, 24 each
    after = table_rows(db, "SELECT * FROM features ORDER BY ALL")
    assert len(after) == len(before) == 48 * len(REGISTRY)
    bumped = [(s, f, v + (f == "hedge"), x) for s, f, v, x in before]
    assert after == bumped
    assert stored_keys_are_unique(db)


def test_one_ensemble_as_proxy_and_gold_stores_its_scores_once(
    tmp_path: Path, suite_file: Path, gold_file: Path, gpt2_ref: Path, gpt2_variant_a: Path, reward_model_dir: Path
) -> None:
    db = tmp_path / "same-ensemble.duckdb"
    args = base_args(db, suite_file, gpt2_ref, reward_model_dir, gold_file)
    args[args.index("--gold") + 1] = str(reward_model_dir)
    args += ["--proxy", f"{gold_file}:score", "--gold", f"{gold_file}:score"]  # both [rm, gold.py:score]
    code, _, err = run_cli("eval", str(gpt2_variant_a), "--run", "r", *args)
    assert code == 0, err
    proxy, gold = table_rows(db, "SELECT DISTINCT proxy_scorer, gold_scorer FROM checkpoints")[0]
    assert proxy == gold and proxy.startswith("ens-")
    # 48 samples (reference and policy) x (2 members + the ensemble)
    assert table_rows(db, "SELECT count(*) FROM scores") == [(48 * 3,)]
    assert stored_keys_are_unique(db)


def test_finished_checkpoints_of_a_resumed_run_do_not_each_open_the_file_to_flush(
    tmp_path: Path, suite_file: Path, gold_file: Path, gpt2_ref: Path, gpt2_variant_a: Path,
    gpt2_variant_b: Path, reward_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import rlhf_eval.faults as faults

    db = tmp_path / "resume.duckdb"
    args = base_args(db, suite_file, gpt2_ref, reward_model_dir, gold_file)
    assert run_cli("eval", str(gpt2_variant_a), "--run", "r", *args)[0] == 0
    sites: list[str] = []
    monkeypatch.setattr(faults, "reach", sites.append)
    code, _, err = run_cli("eval", str(gpt2_variant_a), str(gpt2_variant_b), "--run", "r", *args)
    assert code == 0, err
    completes = [i for i, site in enumerate(sites) if site == "unit.complete"]
    flushed_at_once = [i for i in completes if sites[i + 1 : i + 2] == ["flush.inserted"]]
    assert len(completes) == 3  # the reference, a (both finished before) and b (new)
    # b's rows land as soon as it is done; the finished ones' rows wait for a later flush (unless
    # 5 s passed since the last one: on a very slow machine one of them may flush too)
    assert completes[-1] in flushed_at_once and len(flushed_at_once) < len(completes)
    eval_ids = table_rows(db, "SELECT DISTINCT c.eval_id FROM checkpoints c")
    last = table_rows(db, "SELECT eval_id FROM evaluations ORDER BY started_at DESC LIMIT 1")
    assert eval_ids == last  # every checkpoint row was still written by the second evaluation
    assert stored_keys_are_unique(db)
