"""Discovery of checkpoints and runs, and method inference, on synthetic directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rlhf_eval.discover import TrainingLog, discover, method_from_card, method_from_logs
from rlhf_eval.errors import UserInputError


def fake_model(path: Path, *, weights: str = "safetensors") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    if weights == "safetensors":
        save_file({"w": torch.zeros(2)}, str(path / "model.safetensors"))
    else:
        (path / "pytorch_model.bin").write_bytes(b"pickle")
    return path


def trainer_state(path: Path, step: int, logs: list[dict]) -> None:
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": logs}))


def test_trainer_run_dir_gives_steps_logs_and_method(tmp_path: Path) -> None:
    run = tmp_path / "my-ppo"
    for step in (10, 20, 5):
        fake_model(run / f"checkpoint-{step}")
        trainer_state(
            run / f"checkpoint-{step}", step, [{"step": s, "objective/kl": s / 10} for s in range(5, step + 1, 5)]
        )
    (run / "checkpoint-30").mkdir()  # half-written: no weights yet -> not a checkpoint
    (runs,) = discover([str(run)])
    assert runs.name == "my-ppo" and runs.method == "ppo"
    assert [(c.checkpoint, c.step) for c in runs.checkpoints] == [
        ("checkpoint-5", 5),
        ("checkpoint-10", 10),
        ("checkpoint-20", 20),
    ]
    assert TrainingLog(20, "objective/kl", 2.0) in runs.training_logs
    assert len({(log.step, log.metric) for log in runs.training_logs}) == len(runs.training_logs)


def test_final_model_at_run_root_uses_global_step(tmp_path: Path) -> None:
    run = tmp_path / "dpo-run"
    fake_model(run / "checkpoint-4")
    fake_model(run)
    trainer_state(run, 6, [{"step": 6, "rewards/chosen": 0.1, "rewards/margins": 0.2}])
    (spec,) = discover([str(run)])
    assert spec.method == "dpo"
    assert [(c.checkpoint, c.step) for c in spec.checkpoints] == [("checkpoint-4", 4), ("final", 6)]


def test_folder_of_runs_and_plain_models(tmp_path: Path) -> None:
    fake_model(tmp_path / "runs" / "a" / "checkpoint-1")
    fake_model(tmp_path / "runs" / "b" / "step-300")
    found = discover([str(tmp_path / "runs")])
    assert [(r.name, [c.step for c in r.checkpoints]) for r in found] == [("a", [1]), ("b", [300])]


def test_grouping_plain_dirs_into_one_run(tmp_path: Path) -> None:
    first = fake_model(tmp_path / "m1")
    second = fake_model(tmp_path / "m2")
    (spec,) = discover([str(first), str(second)], run="sweep", method="dpo")
    assert spec.name == "sweep" and [c.step for c in spec.checkpoints] == [1, 2]
    assert {c.method for c in spec.checkpoints} == {"dpo"}


def test_same_run_names_are_disambiguated(tmp_path: Path) -> None:
    fake_model(tmp_path / "x" / "ppo" / "checkpoint-1")
    fake_model(tmp_path / "y" / "ppo" / "checkpoint-1")
    names = [r.name for r in discover([str(tmp_path / "x"), str(tmp_path / "y")])]
    assert names == ["x/ppo", "y/ppo"]


@pytest.mark.parametrize(
    ("card", "method"),
    [
        ("---\ntags:\n- trl\n- grpo\n---\n# model", "grpo"),
        ("---\ntags: [trl, online-dpo]\n---\n", "online_dpo"),
        ("This model was trained with [RLOO](https://...).", "rloo"),
        ("no tags here", None),
    ],
)
def test_method_from_model_card(tmp_path: Path, card: str, method: str | None) -> None:
    (tmp_path / "README.md").write_text(card)
    assert method_from_card(tmp_path) == method


@pytest.mark.parametrize(
    ("metrics", "method"),
    [
        ({"objective/kl", "val/ratio"}, "ppo"),
        ({"objective/kl", "rewards/chosen"}, "online_dpo"),
        ({"rewards/chosen", "rewards/margins", "loss"}, "dpo"),
        ({"kl", "reward", "completions/mean_length"}, "grpo"),
        ({"loss", "mean_token_accuracy"}, "sft"),
        ({"loss"}, None),
    ],
)
def test_method_from_logged_metrics(metrics: set[str], method: str | None) -> None:
    assert method_from_logs([TrainingLog(1, m, 0.0) for m in metrics]) == method


def test_bad_paths_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="path does not exist"):
        discover([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="no model found"):
        discover([str(tmp_path / "empty")])
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text("{}")
    with pytest.raises(UserInputError, match="config.json but no weights"):
        discover([str(tmp_path / "cfg")])
    bad_state = fake_model(tmp_path / "bad" / "checkpoint-1")
    (bad_state / "trainer_state.json").write_text("{not json")
    with pytest.raises(UserInputError, match=r"trainer_state.json: invalid JSON at line 1"):
        discover([str(tmp_path / "bad")])


def test_symlink_loops_terminate(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "loop").symlink_to(root)
    fake_model(root / "sub" / "model")
    assert [r.name for r in discover([str(root)])] == ["model"]
