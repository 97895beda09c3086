"""``RlhfEvalCallback`` inside a real ``transformers.Trainer`` run (CPU, fp32): every saved
checkpoint lands in the database; with ``stop_on_alert``, an alert stops training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import pytest
from transformers import TrainerControl

from rlhf_eval import tiny
from rlhf_eval.callback import RlhfEvalCallback
from rlhf_eval.errors import UserInputError

TRAINER_TEXTS = ["the bird sings today", "one two three", "the tree is green and the sun is red"]
PROMPTS = ["the cat sat", "sat on a mat dog", "a mat dog runs", "explain why sky is", "why sky is blue", "list three"]


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("callback-work")
    (root / "prompts.jsonl").write_text("\n".join(json.dumps({"prompt": p}) for p in PROMPTS) + "\n")
    (root / "gold.py").write_text(
        f"TRAINED = set({' '.join(TRAINER_TEXTS)!r}.split())\n\n\n"
        "def score(prompts, responses):\n"
        "    # minus the share of words from the training texts: gold falls as training goes on\n"
        "    return [-sum(w in TRAINED for w in r.split()) / max(1, len(r.split())) for r in responses]\n"
    )
    return root


def callback(workload: Path, ref: Path, rm: Path, db: Path, **options: object) -> RlhfEvalCallback:
    return RlhfEvalCallback(
        ref=str(ref), suite=str(workload / "prompts.jsonl"), proxy=str(rm), gold=f"{workload / 'gold.py'}:score",
        db=str(db), samples=2, max_new_tokens=8, **options,
    )  # fmt: skip


def train(out: Path, base: Path, callbacks: list[RlhfEvalCallback], *, max_steps: int, save_steps: int) -> Any:
    """A real ``transformers.Trainer`` fine-tuning the tiny policy, as a training script would."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    model, tokenizer = tiny.training.load_causal_lm_and_tokenizer(base)
    rows = [{"input_ids": ids} for ids in tiny.training.encode_with_eos(tokenizer, TRAINER_TEXTS)]
    args = TrainingArguments(
        output_dir=str(out), max_steps=max_steps, save_steps=save_steps, save_strategy="steps", logging_steps=1,
        per_device_train_batch_size=4, learning_rate=1e-2, lr_scheduler_type="constant", seed=7, data_seed=7,
        use_cpu=True, bf16=False, fp16=False, report_to=[], disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=rows,  # type: ignore[arg-type]
        data_collator=tiny.training.causal_lm_collator(int(tokenizer.pad_token_id)),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)
    with tiny.training.one_thread(), tiny.training.quiet_transformers():
        trainer.train()
    return trainer


def stored(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_every_saved_checkpoint_is_evaluated_during_training(
    tmp_path: Path, workload: Path, gpt2_ref: Path, reward_model_dir: Path
) -> None:
    db, out = tmp_path / "cb.duckdb", tmp_path / "grpo-like-run"
    evaluator = callback(workload, gpt2_ref, reward_model_dir, db)
    trainer = train(out, gpt2_ref, [evaluator], max_steps=6, save_steps=2)
    assert trainer.state.global_step == 6  # no stop without stop_on_alert
    assert [(u.run, len(u.summary)) for u in evaluator.updates] == [("grpo-like-run", n) for n in (2, 3, 4)]
    assert stored(db, "SELECT checkpoint, step FROM checkpoints ORDER BY step") == [
        ("reference", 0), ("checkpoint-2", 2), ("checkpoint-4", 4), ("checkpoint-6", 6)
    ]  # fmt: skip
    assert stored(db, "SELECT count(*) FROM samples") == [(4 * len(PROMPTS) * 2,)]
    assert stored(db, "SELECT run, n_points FROM overoptimization") == [("grpo-like-run", 4)]
    assert evaluator.alerts and evaluator.alerts[0].best_checkpoint == "reference"  # gold falls from the start
    assert len({a.signal for a in evaluator.alerts}) == len(evaluator.alerts)  # each signal once


def test_stop_on_alert_stops_training_and_other_ranks_do_nothing(
    tmp_path: Path, workload: Path, gpt2_ref: Path, reward_model_dir: Path, trainer_run_dir: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trainer_run_dir / "checkpoint-2", run / "checkpoint-2")
    args = SimpleNamespace(output_dir=str(run))
    db = tmp_path / "stop.duckdb"
    other_rank = callback(workload, gpt2_ref, reward_model_dir, db, stop_on_alert=True)
    control = other_rank.on_save(args, SimpleNamespace(is_world_process_zero=False, global_step=2), TrainerControl())
    assert not control.should_training_stop and not db.exists()
    main = callback(workload, gpt2_ref, reward_model_dir, db, stop_on_alert=True)
    control = main.on_save(args, SimpleNamespace(is_world_process_zero=True, global_step=2), TrainerControl())
    assert main.alerts and control.should_training_stop
    assert stored(db, "SELECT checkpoint FROM checkpoints ORDER BY step") == [("reference",), ("checkpoint-2",)]
    missing = main.on_save(args, SimpleNamespace(is_world_process_zero=True, global_step=9), TrainerControl())
    assert not missing.should_training_stop and len(main.updates) == 1  # checkpoint-9 was never written


def test_bad_options_fail_before_training_and_eval_errors_do_not_stop_it(
    tmp_path: Path, workload: Path, gpt2_ref: Path, reward_model_dir: Path, trainer_run_dir: Path
) -> None:
    args, state = SimpleNamespace(output_dir=str(tmp_path / "run")), SimpleNamespace(is_world_process_zero=True)
    bad_suite = RlhfEvalCallback(ref=str(gpt2_ref), suite=str(tmp_path / "nope.yaml"), proxy="p", gold="g")
    with pytest.raises(UserInputError, match="nope.yaml"):
        bad_suite.on_train_begin(args, state, TrainerControl())
    shutil.copytree(trainer_run_dir / "checkpoint-2", tmp_path / "run" / "checkpoint-2")
    bad_proxy = callback(workload, gpt2_ref, tmp_path / "no-such-rm", tmp_path / "e.duckdb")
    control = bad_proxy.on_save(args, SimpleNamespace(is_world_process_zero=True, global_step=2), TrainerControl())
    assert not control.should_training_stop and bad_proxy.updates == []
    assert len(bad_proxy.errors) == 1 and bad_proxy.errors[0].startswith("checkpoint-2: ")


def test_unknown_options_are_one_line_errors() -> None:
    with pytest.raises(UserInputError, match="max_new_token=.*Did you mean 'max_new_tokens'"):
        RlhfEvalCallback(ref="r", suite="s", proxy="p", gold="g", max_new_token=8)
    with pytest.raises(UserInputError, match=r"gold=\.\.\.\): give at least one"):
        RlhfEvalCallback(ref="r", suite="s", proxy="p", gold=[])
